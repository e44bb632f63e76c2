"""Settings, result and errors of ``vidplan eval-bag`` (:mod:`vidplan_core.eval.bag_eval`), and the
constants its parts share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EMPTY_BIN",
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "MODEL_READ_ERRORS",
    "PSNR_MSE_FLOOR",
    "SCHEMA",
    "STORAGE_MAGIC",
    "EvalBagConfig",
    "EvalBagError",
    "EvalBagResult",
]

SCHEMA = "vidplan-eval-bag/1"
EXIT_OK, EXIT_BAD_INPUT, EXIT_PARTIAL = 0, 2, 3
STORAGE_MAGIC = {".mcap": b"\x89MCAP0\r\n", ".db3": b"SQLite format 3\x00"}  # first bytes of each storage format
MODEL_READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, KeyError, UnicodeDecodeError)
EMPTY_BIN = "a null entry is an empty confidence bin (its count is 0)"
PSNR_MSE_FLOOR = 1e-10  # identical images would give +inf dB; floor the MSE so PSNR stays finite (≤ 100 dB)


class EvalBagError(ValueError):
    """The recording or the model cannot be evaluated; lists every problem (naming bag, topic and what is wrong)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("cannot evaluate:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class EvalBagConfig:
    """Settings of one evaluation.

    Attributes:
        flow_steps: K of the flow-map sampler (1, 2, 4, ...).
        max_steps: evaluate at most this many windows, spread evenly over the episode (0 = all).
        device: torch device ("cpu", "cuda", "cuda:1", or "auto").
        seed: seed of the flow map's initial noise (window i uses seed + i).
        gamma: discount per model-rate frame of the Monte-Carlo value; None = the bundle's (``bundle.json``
            ``value_gamma``) or 0.97 (the converter's default).
        success: success label to use instead of (or in the absence of) the recorded one; None = recorded.
        shadow: run the planner in shadow mode (needs joint states and a buildable planning backend).
        shadow_every: plan at every n-th evaluated window (planning is the expensive part).
        shadow_max: plan at most this many times (0 = no limit).
        examples: number of windows drawn as prediction strips (recorded / predicted / uncertainty).
        salvage: evaluate what can be read from a truncated/corrupt bag (else it is an error).
        progress: show a progress bar (tqdm, on stderr).
        element_samples: latent elements per window kept for the element-level entropy–error correlation.
        uq_samples: also write those elements' UQ logits and true error bins to ``uq_samples.npz`` in the output
            directory (``vidplan calibrate-uq`` fits the head's temperature on them).
        planner: the shadow planner's :class:`~vidplan_core.planning.session.SessionConfig` (or its dict / YAML
            path); None = its defaults.
        teacher_steps: 0 = predict with the flow map (K = ``flow_steps``); N > 0 = with the EDM teacher, Euler
            sampler with N noise levels and the same initial noise (the teacher-vs-flow-map comparison).
        teacher_dir: the teacher's directory (a saved WorldModel); None = ``<model_dir>/world_model``.
        controllability: also predict every window with shuffled and mirrored actions and another noise draw
            (3 more rollouts, 2 more decodes per window); False = the section is null.
        episode: for a LeRobot dataset (DROID) as input: the episode index to evaluate.
        mapping: for a LeRobot dataset: its mapping (a shipped name such as ``droid``, or a YAML path).
    """

    flow_steps: int = 1
    max_steps: int = 0
    device: str = "cpu"
    seed: int = 0
    gamma: float | None = None
    success: bool | None = None
    shadow: bool = True
    shadow_every: int = 1
    shadow_max: int = 0
    examples: int = 2
    salvage: bool = True
    progress: bool = True
    element_samples: int = 2048
    uq_samples: bool = False
    planner: Any = None
    teacher_steps: int = 0
    teacher_dir: str | None = None
    controllability: bool = True
    episode: int = 0
    mapping: str = "droid"


@dataclass
class EvalBagResult:
    """What :func:`eval_bag` wrote: the metrics dict, paths, and the exit code (0 complete, 3 partial)."""

    metrics: dict[str, Any]
    out_dir: Path
    metrics_path: Path
    report_path: Path
    plots: dict[str, Path]
    exit_code: int
