"""Controllability (vidplan_core.eval.controllability) with constructed predictors: a predictor that ignores its
actions gives ratio exactly 1.0 and no action effect; one whose prediction follows the actions gives ratios > 1;
the action variants (shuffled = another window's displacements from this window's pose, mirrored = position
displacement negated) and the null + reason without a second window. eval-bag's use of it is tested in
test_eval_bag.py."""

from __future__ import annotations

import numpy as np
import pytest

from vidplan_core.eval import controllability as C

T, H, LAT = 2, 4, (2, 3, 4)  # history, horizon, latent (C, h, w)


def _episode(n: int = 24, seed: int = 0) -> np.ndarray:
    """(n, 7) actions: a wandering EE (m), Euler near (π, 0, 0) (wraps at ±π), a gripper that closes midway."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, 7))
    a[:, :3] = np.array([0.5, 0.0, 0.3]) + np.cumsum(rng.normal(0, 0.02, (n, 3)), axis=0)
    a[:, 3] = np.pi - 0.05 + np.cumsum(rng.normal(0, 0.03, n))  # crosses +π: stored wrapped, as recorded
    a[:, 3] = (a[:, 3] + np.pi) % (2 * np.pi) - np.pi
    a[:, 4:6] = np.cumsum(rng.normal(0, 0.02, (n, 2)), axis=0)
    a[:, 6] = (np.arange(n) > n // 2).astype(float)
    return a


def _latents_from_actions(actions: np.ndarray) -> np.ndarray:
    """A fixed map future actions (H, 7) → latents (H, C, h, w): the "world" the action-aware predictor knows."""
    w = np.random.default_rng(42).normal(size=(7, int(np.prod(LAT))))
    w[:3] *= 20.0  # cm of EE motion move the picture (the arm is in view)
    return np.tanh(actions @ w).reshape(len(actions), *LAT)


def _run(predict, actions: np.ndarray, starts: list[int], decode=None, true_fn=None, shuffle: bool = True):
    acc = C.ControllabilityAccumulator(H)
    currents = [s + T - 1 for s in starts]
    shuffled = C.shuffled_chunks(actions, currents, H) if shuffle else None
    if shuffled is None:
        acc.shuffle_reason = f"only {len(starts)} window"
    rng = np.random.default_rng(7)
    for wi, s in enumerate(starts):
        win = actions[s:s + T + H]
        true_lat = (true_fn or _latents_from_actions)(win[T:])
        imgs = rng.uniform(size=(H, 3, 3, 4, 4)) if decode else None
        acc.add(C.evaluate_window(predict, win, T, true_lat, C.other_noise(s, (H, *LAT))[0],
                                  C.other_noise(s + 1000, (H, *LAT))[0],
                                  shuffled_future=None if shuffled is None else shuffled[wi],
                                  decode=decode, target_images=imgs))
    return acc.summary()


def test_action_blind_predictor_has_ratio_exactly_one():
    actions = _episode()

    def blind(a, z):  # ignores a: depends only on the noise (as a model with its action conditioning zeroed)
        return 0.3 * z + 0.1

    def decode(lat):
        return np.broadcast_to(np.tanh(lat.mean(axis=(1, 2, 3)))[:, None, None, None, None] * 0.5 + 0.5,
                               (H, 3, 3, 4, 4))

    sec, nulls = _run(blind, actions, [0, 3, 6, 9, 12], decode=decode)
    assert sec["windows"] == 5 and not nulls
    for v in ("shuffled", "mirrored"):
        assert sec["ratio"][v]["per_step"] == [1.0] * H and sec["ratio"][v]["mean"] == 1.0
        assert sec["pixel_mse_ratio"][v]["mean"] == 1.0
        assert sec["error"][v] == sec["error"]["true"]
    d = sec["latent_difference"]
    assert d["action_mirrored"]["window"] == 0.0 and d["action_shuffled"]["window"] == 0.0
    assert d["noise"]["window"] > 0 and d["action_vs_noise"] == {"mirrored": 0.0, "shuffled": 0.0}
    assert len(sec["error"]["true"]["psnr_db"]["per_step"]) == H


def test_action_aware_predictor_has_ratio_above_one():
    actions = _episode()

    def aware(a, z):  # the prediction follows the future actions, plus a little noise
        return _latents_from_actions(a[T:]) + 0.05 * z

    sec, nulls = _run(aware, actions, [0, 3, 6, 9, 12])
    assert not any(k.startswith("controllability.ratio") for k in nulls)
    for v in ("shuffled", "mirrored"):
        r = sec["ratio"][v]
        assert r["mean"] > 1.5 and all(x > 1.0 for x in r["per_step"]), (v, r)
    d = sec["latent_difference"]
    assert d["action_vs_noise"]["mirrored"] > 1.0 and d["action_vs_noise"]["shuffled"] > 1.0
    # latent errors only (no decoder): the pixel ratios are null with the reason
    assert sec["pixel_mse_ratio"]["mirrored"] is None
    assert "no decoded images" in nulls["controllability.pixel_mse_ratio.mirrored"]


def test_one_window_gives_null_shuffle_with_reason():
    actions = _episode(12)
    sec, nulls = _run(lambda a, z: _latents_from_actions(a[T:]) + 0.05 * z, actions, [2])
    assert C.partner_windows(1) is None and C.shuffled_chunks(actions, [3], H) is None
    assert sec["error"]["shuffled"] is None and sec["ratio"]["shuffled"] is None
    assert sec["latent_difference"]["action_shuffled"] is None
    assert sec["latent_difference"]["action_vs_noise"]["shuffled"] is None
    for key in ("error.shuffled", "ratio.shuffled", "latent_difference.action_shuffled",
                "latent_difference.action_vs_noise.shuffled"):
        assert "only 1 window" in nulls[f"controllability.{key}"]
    assert sec["ratio"]["mirrored"]["mean"] > 1.0  # mirroring needs no other window


def test_zero_true_error_gives_null_ratio_with_reason():
    actions = _episode()
    sec, nulls = _run(lambda a, z: _latents_from_actions(a[T:]), actions, [0, 4])  # perfect and noise-free
    assert np.isnan(sec["ratio"]["mirrored"]["mean"])  # finite_or_null turns it into null with this reason
    assert "is 0" in nulls["controllability.ratio.mirrored.mean"]
    assert sec["latent_difference"]["action_vs_noise"]["mirrored"] is None
    assert "noise effect 0" in nulls["controllability.latent_difference.action_vs_noise.mirrored"]


def test_partner_windows_is_a_fixed_derangement():
    for n in range(2, 12):
        p = C.partner_windows(n)
        assert sorted(p.tolist()) == list(range(n)) and all(p != np.arange(n))
        np.testing.assert_array_equal(p, C.partner_windows(n))
    assert C.partner_windows(0) is None


def test_action_variants_keep_the_arm_where_it_is():
    actions = _episode()
    cur, fut = actions[5], actions[6:6 + H]
    m = C.mirrored_chunk(cur, fut)
    np.testing.assert_allclose(m[:, :3] - cur[:3], -(fut[:, :3] - cur[:3]))
    np.testing.assert_array_equal(m[:, 3:], fut[:, 3:])
    other_cur, other_fut = actions[14], actions[15:15 + H]
    r = C.relative_chunk(cur, other_cur, other_fut)
    np.testing.assert_allclose(r[:, :3] - cur[:3], other_fut[:, :3] - other_cur[:3], atol=1e-12)
    # orientation displacement across the ±π wrap: small, not ~2π
    dang = r[:, 3:6] - cur[3:6]
    assert np.abs(dang).max() < 0.5
    np.testing.assert_allclose(np.cos(dang), np.cos(other_fut[:, 3:6] - other_cur[3:6]), atol=1e-12)
    np.testing.assert_array_equal(r[:, 6], other_fut[:, 6])  # gripper commands of the other window
    # shuffled_chunks: window i gets window (i + n//2) % n's displacements from its own current pose
    currents = [1, 4, 7, 10]
    chunks = C.shuffled_chunks(actions, currents, H)
    assert len(chunks) == 4
    np.testing.assert_allclose(chunks[0], C.relative_chunk(actions[1], actions[7], actions[8:8 + H]))
    np.testing.assert_allclose(chunks[3], C.relative_chunk(actions[10], actions[4], actions[5:5 + H]))


def test_frame_errors_shapes_and_psnr():
    p = np.zeros((H, *LAT))
    t = np.full((H, *LAT), 0.5)
    e = C.frame_errors(p, t, np.zeros((H, 3, 3, 4, 4)), np.full((H, 3, 3, 4, 4), 0.1))
    np.testing.assert_allclose(e["latent_mse"], 0.25)
    np.testing.assert_allclose(e["pixel_mse"], 0.01)
    np.testing.assert_allclose(e["psnr_db"], 20.0)
    with pytest.raises(ValueError, match="latents"):
        C.frame_errors(p, t[:1])


def test_model_card_section_from_metrics():
    """scripts/model_card.py's Controllability section: pooled over episodes, n/a where not computed."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "scripts" / "model_card.py"
    spec = importlib.util.spec_from_file_location("model_card", path)
    mc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mc)
    actions = _episode()
    blind, _ = _run(lambda a, z: 0.3 * z + 0.1, actions, [0, 4, 8])
    aware, _ = _run(lambda a, z: _latents_from_actions(a[T:]) + 0.05 * z, actions, [0, 4, 8])
    one, _ = _run(lambda a, z: _latents_from_actions(a[T:]) + 0.05 * z, actions, [3])
    lines = mc.controllability_section({"blind": [blind, blind], "aware": [aware], "one window": [one],
                                        "old metrics": [None]})
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in lines
            if ln.startswith("| ") and not ln.startswith("| predictor")}
    assert rows["blind"][:4] == [" / ".join(["1.00"] * H), "1.000", " / ".join(["1.00"] * H), "1.000"]
    assert rows["blind"][4] == "0.00" and rows["blind"][6] == "0.000"
    assert float(rows["aware"][1]) > 1.5 and float(rows["aware"][3]) > 1.0 and float(rows["aware"][6]) > 1.0
    assert rows["one window"][0].startswith("n/a") and float(rows["one window"][3]) > 1.0
    assert rows["old metrics"][0].startswith("n/a")
