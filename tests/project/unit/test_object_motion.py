"""bench/object_motion.py's statistics: per branch point, a reading's rank correlation with the true object motion,
whether its first choice moves the object (nearly) as far as the best candidate, and its error; over branch points,
only those whose candidates move the object differently count, and a paired difference against another run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def om():
    spec = importlib.util.spec_from_file_location("object_motion", ROOT / "bench" / "object_motion.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ARGS = SimpleNamespace(min_spread_m=0.01, tol_m=0.01)


def _probe(step: int, true: list[float], imagined: list[float], read_true: list[float] | None = None) -> dict:
    return {"seed": 0, "clutter": 0, "step": step, "true": true, "read_imagined": imagined,
            "read_true": read_true if read_true is not None else true}


def test_probe_metrics_rank_pick_and_error(om):
    true = np.array([0.0, 0.10, 0.02, -0.01])
    same = om.probe_metrics(true, true.copy(), 0.01)
    assert same == {"spearman": pytest.approx(1.0), "top1": True, "mae_m": 0.0}
    # ranks reversed: the reading's first choice is the candidate that moves the object the wrong way
    rev = om.probe_metrics(true, -true, 0.01)
    assert rev["spearman"] == pytest.approx(-1.0) and not rev["top1"] and rev["mae_m"] > 0.03
    # a reading that is the same for every candidate (a world model that ignores its actions) ranks nothing
    flat = om.probe_metrics(true, np.zeros(4), 0.01)
    assert flat["spearman"] == 0.0


def test_summary_counts_only_branch_points_where_the_candidates_differ(om):
    probes = [_probe(0, [0.0, 0.10, 0.02], [0.0, 0.08, 0.01]),  # the reading ranks them right
              _probe(1, [0.0, 0.10, 0.02], [0.05, 0.0, 0.0]),  # wrong first choice
              _probe(2, [0.0, 0.002, 0.001], [0.0, 0.05, 0.0])]  # true spread 2 mm < 1 cm: left out
    s = om.summarize(probes, ARGS)
    assert s["probes"] == 3 and s["probes_used"] == 2
    assert s["read_imagined"]["top1_rate"] == 0.5 and s["read_true"]["top1_rate"] == 1.0
    assert s["read_true"]["spearman_mean"] == 1.0 and s["read_imagined"]["spearman_mean"] < 1.0
    assert s["top1_random"] == pytest.approx(1 / 3, abs=1e-3)  # one candidate in three is within 1 cm of the best


def test_paired_difference_uses_the_same_branch_points(om):
    base = [_probe(0, [0.0, 0.10, 0.02], [0.02, 0.0, 0.01]), _probe(1, [0.0, 0.10, 0.02], [0.0, 0.0, 0.01])]
    better = [_probe(0, [0.0, 0.10, 0.02], [0.0, 0.09, 0.02]), _probe(1, [0.0, 0.10, 0.02], [0.0, 0.09, 0.02]),
              _probe(5, [0.0, 0.10, 0.02], [0.0, 0.09, 0.02])]  # step 5 is not in the baseline: not paired
    d = om.paired_difference(better, base, ARGS)
    assert d["pairs"] == 2 and d["spearman_difference"] > 1.0 and d["ci95"][0] > 0
    assert om.paired_difference(better, [], ARGS) == {"pairs": 0}
