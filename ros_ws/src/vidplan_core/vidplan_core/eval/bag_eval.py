"""``vidplan eval-bag``: evaluate a model bundle on a recorded episode (rosbag2), without ROS.

For every step of the recording that has ``num_history`` frames behind it and ``num_future`` frames ahead (at the
world model's rate, 5 Hz by default) the flow map rolls out the *recorded* actions from the recorded history, and
the prediction is compared with what the cameras actually saw:

- prediction: PSNR [dB] and SSIM per horizon step per view (views unstacked: left, right, wrist), latent MSE per
  horizon step, and the autoencoder's own reconstruction PSNR of the same frames as the ceiling;
- UQ head: ECE (15 confidence bins) of its 30-bin distribution of |predicted − true latent| per latent element,
  the reliability diagram, Pearson and Spearman correlation (with p-values) of the normalised entropy with the
  actual error, per latent element (seeded subsample) and per predicted frame;
- reward head: bin accuracy, ECE and MAE of its 20-bin value distribution against the Monte-Carlo value
  V(τ) = γ^(F−τ)·success of the episode's success label, on predicted and on recorded (encoded) latents;
- shadow-mode planner (when the bag has joint states and a planning backend can be built from the bundle): the
  chunk it would have sent vs the recorded one, position [m] / rotation [rad] / gripper error per step;
- controllability (:mod:`vidplan_core.eval.controllability`): the same windows, with the same noise, predicted with
  another window's actions (shuffled) and with mirrored actions; error ratios vs the true actions per horizon step
  (≈ 1.0: the model ignores its actions) and the action effect vs the noise effect on the predicted latents;
- latency per stage (encode, rollout, decode, heads, planner).

Outputs in ``out``: ``metrics.json`` (every number finite; a ``null`` always has its reason in ``null_reasons``),
PNG plots under ``plots/`` and one self-contained ``report.html`` (plots embedded, linked to the PNG files).

The bag is read through :mod:`vidplan_core.data.bags` and converted to model-rate frames by
:func:`vidplan_core.data.convert.convert_bags` (the same code, topic map and resampling as training data).

Bad input (:class:`EvalBagError`, exit code 2 in the CLI): a missing bag, an empty bag (0-byte storage files) or a
file that is not an mcap (or rosbag2 sqlite3) file, a bag lacking a needed topic (as the topic map names them), a
camera whose image size changes within the recording, too few frames for one window, a model directory that does not
load (a truncated or corrupt safetensors or JSON file is named). A truncated or corrupt bag is *salvaged*: the
messages before the damage are evaluated, the report says so, ``metrics.json`` has ``"status": "partial"`` and the
CLI exits with 3. The reward-head comparison needs the episode's end and its success label; without them (salvaged
bag, no label) it is ``null`` with the reason. Camera images of another size than the model's views are resized
(noted as a warning).

Actions: the topic map's action source (default ``/vidplan/expert_action``, the sim expert's commands). A recording
of the robot has no expert: when the default action topic is absent (not named in the topic map) the actions are the
measured EE pose and the measured gripper closure (``gripper.topic``, default ``/joint_states``) — the pose part is
the measured pose in either case (``action_pose: measured``); a warning says so and ``input.action_source`` records
which it was. An action topic the topic map names explicitly is required.

Instruction (the shadow planner's text embedding, ``input.instruction``): the episode info / sidecar's, or the last
message on /vidplan/instruction — /vidplan/task, its deprecated old name, in a bag recorded before the rename (topic
map ``instruction``).

Model directory (``--model DIR``): the parts its index ``DIR/bundle.json`` names (:mod:`vidplan_core.runtime.loader`;
an index naming a part that is not there is bad input, exit 2), or without an index the layout
:class:`vidplan_core.runtime.bundle.PlannerModels` saves, plus optional parts::

    DIR/autoencoder/  DIR/flow_map/            required (diffusers-style: config.json + safetensors)
    DIR/uq_head/  DIR/reward_head/             optional (their metrics are null with the reason when absent)
    DIR/world_model/                           optional: the EDM teacher, predicts instead of the flow map with
                                               ``teacher_steps`` > 0 (or give ``teacher_dir``)
    DIR/semantic/                              optional; the shadow planner needs it
``heads/uq_head``, ``heads/reward_head`` and ``vae/`` are accepted as alternative names.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.bags import BagError, find_bags
from vidplan_core.data.convert import ConvertError, expand_inputs
from vidplan_core.data.lerobot import LeRobotError, LeRobotSource, is_lerobot_dataset
from vidplan_core.data.schema import mc_values
from vidplan_core.data.topic_map import TopicMap
from vidplan_core.eval import controllability as CTL
from vidplan_core.eval import metrics as M
from vidplan_core.eval import plots as P
from vidplan_core.eval.bag_bundle import Bundle, default_teacher_dir, load_bundle, resolve_device, unloadable
from vidplan_core.eval.bag_config import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    SCHEMA,
    EvalBagConfig,
    EvalBagError,
    EvalBagResult,
)
from vidplan_core.eval.bag_metrics import finite_or_null
from vidplan_core.eval.bag_recording import Episode, Scan, action_source, prepare_episode, scan_bag
from vidplan_core.eval.bag_shadow import (
    load_conditioner,
    load_scorer,
    make_shadow_planner,
    session_config,
    text_embedding,
)
from vidplan_core.eval.bag_windows import PredictionMetrics, RewardMetrics, ShadowMetrics, UQMetrics
from vidplan_core.eval.report import write_report
from vidplan_core.runtime.bundle import make_noise
from vidplan_core.spaces import VIEW_ORDER

# The command's API in one place (its settings, result, errors and exit codes are defined in bag_config). The parts:
# bag_bundle (the model bundle), bag_recording (scan, salvage, windows), bag_metrics, bag_windows (the per-window
# accumulators of prediction, UQ, reward and shadow metrics), bag_shadow (shadow planner).
__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "EXIT_PARTIAL", "EvalBagConfig", "EvalBagError", "EvalBagResult", "eval_bag"]

# ------------------------------------------------------------------------------------------------- evaluation


def _window_starts(T: int, history: int, horizon: int, max_steps: int) -> list[int]:
    last = T - history - horizon
    if last < 0:
        return []
    starts = list(range(0, last + 1))
    if max_steps and len(starts) > max_steps:
        idx = np.unique(np.round(np.linspace(0, len(starts) - 1, max_steps)).astype(int))
        starts = [starts[i] for i in idx]
    return starts


def _lerobot_episode(root: Path, cfg: EvalBagConfig, bundle: Bundle) -> tuple[Episode, float]:
    """One episode of a LeRobot dataset (DROID) at the model's rate and views, read in place; and its duration [s]."""
    try:
        src = LeRobotSource(root, cfg.mapping, [cfg.episode])
        e = src.episodes[0]
        s = src.signals(e, bundle.fps)
        frames = src.frames(e, s["video_times"], bundle.views)
    except (LeRobotError, ValueError) as exc:  # ValueError: a view whose aspect ratio the model's crop refuses
        raise EvalBagError(f"LeRobot dataset {root}, episode {cfg.episode}: {exc}") from exc
    success = bool(cfg.success) if cfg.success is not None else bool(s["success"])
    src_hw = src.video_size(VIEW_ORDER[0]) or tuple(frames.shape[-2:])
    ep = Episode(frames, s["actions"].astype(np.float64), s["joint_positions"].astype(np.float64),
                  s["timestamps_ns"], success, s["instruction"], list(src.mapping.joint_names), src_hw)
    return ep, float(e.length / src.fps)


class _StageTimes:
    """Wall time per stage [s] (``with times("rollout"): ...``), synchronising CUDA so the time is the stage's."""

    STAGES = ("encode_frame", "rollout", "decode", "uq_head", "reward_head", "planner")

    def __init__(self, device: Any) -> None:
        self.device = device
        self.times: dict[str, list[float]] = {k: [] for k in self.STAGES}
        self.load_s = 0.0

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def __call__(self, stage: str | None, per: int = 1) -> Iterator[None]:
        """Time the block as ``stage`` (None: not recorded); ``per`` items: ``per`` entries of the time / ``per``."""
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        if stage is not None:
            self.times[stage] += [(time.perf_counter() - t0) / per] * per

    def summary(self) -> dict[str, Any]:
        return {**{k: M.latency_summary(v) for k, v in self.times.items() if v}, "model_load_s": self.load_s}


def _check_settings(cfg: EvalBagConfig, model_dir: str | Path) -> Path:
    """Bad settings before anything is read; returns the EDM teacher's directory."""
    if cfg.flow_steps < 1:
        raise EvalBagError(f"--flow-steps must be ≥ 1, got {cfg.flow_steps}")
    if cfg.teacher_steps < 0:
        raise EvalBagError(f"--teacher-steps must be ≥ 0, got {cfg.teacher_steps}")
    teacher_dir = Path(cfg.teacher_dir) if cfg.teacher_dir else default_teacher_dir(model_dir)
    if cfg.teacher_steps and not (teacher_dir / "config.json").is_file():
        raise EvalBagError(f"--teacher-steps {cfg.teacher_steps}: no EDM teacher at {teacher_dir} (deployment "
                           f"bundles such as models/demo leave it in the training run; pass --teacher DIR)")
    return teacher_dir


def _check_input(bag: Path, tm: TopicMap, cfg: EvalBagConfig, warnings: list[str]) -> tuple[Scan, TopicMap, bool]:
    """Check the recording before torch and the models load (bad input fails in a second): a LeRobot dataset's
    episode, or one rosbag2 episode scanned (salvaged when damaged) with its action source resolved. Returns the scan,
    the topic map to read with and whether it is a LeRobot dataset."""
    if is_lerobot_dataset(bag):  # a LeRobot / DROID dataset: one episode read in place; keys and files checked
        try:
            LeRobotSource(bag, cfg.mapping, [cfg.episode])
        except LeRobotError as exc:
            raise EvalBagError(f"LeRobot dataset {bag}, episode {cfg.episode}: {exc}") from exc
        return Scan({}, {}, False, False, 0, [], 0.0, tm), tm, True
    try:
        find_bags(bag)  # a split recording (numbered bags) counts as one episode, read merged
        episodes = expand_inputs([bag])
    except (BagError, ConvertError) as exc:
        raise EvalBagError(str(exc)) from exc
    if len(episodes) > 1:
        raise EvalBagError(f"{bag} holds {len(episodes)} episodes ({', '.join(e.name for e in episodes[:3])}, "
                           f"...); eval-bag evaluates one episode: pass one of them")
    scan = scan_bag(bag, tm, cfg.salvage)
    warnings += scan.warnings
    tm, action_note = action_source(scan.topic_map, scan, bag)
    if action_note:
        warnings.append(action_note)
    return scan, tm, False


def _encode_frames(ae: Any, frames: np.ndarray, dev: Any, times: _StageTimes, pm: PredictionMetrics
                   ) -> tuple[Any, np.ndarray]:
    """Encode every frame once, as the planner does (it caches each new frame's latents): (T, C, h, w) latents and
    the (T, V, 3, h, w) decoded frames (what the model's own copy baseline looks like); reconstruction PSNR to
    ``pm``."""
    import torch

    lat, recon = [], []
    frames_t = torch.from_numpy(frames)
    with torch.no_grad():
        for i in range(0, len(frames), 8):
            x = frames_t[i:i + 8].to(dev, torch.float32).div_(255.0)
            with times("encode_frame", per=len(x)):
                z = ae.encode(x)
            lat.append(z)
            rec = ae.decode(z).float().cpu().numpy().astype(np.float32)
            recon.append(rec)
            pm.add_reconstruction(rec, x.float().cpu().numpy())
    return torch.cat(lat), np.concatenate(recon)


def _reward_values(bundle: Bundle, ep: Episode, scan: Scan, tm: TopicMap, bag: Path, gamma: float
                   ) -> tuple[np.ndarray | None, str]:
    """The reward head's target V(τ) = γ^(F−τ)·success per frame (T,), or None and why: it needs the episode's end
    and its success label."""
    if bundle.reward_head is None:
        return None, bundle.missing.get("reward_head", "no reward head in the bundle")
    if ep.success is None:
        return None, (f"no success label in bag {bag} (topic {tm.episode_info or tm.success} or a sidecar); "
                      f"pass --success true|false to evaluate the reward head")
    if scan.damaged:
        return None, ("the bag is truncated/corrupt: the episode's last frame F is lost, so the Monte-Carlo value "
                      "γ^(F−τ)·success of the salvaged frames is unknown")

    return mc_values(len(ep.frames), bool(ep.success), gamma).astype(np.float64), ""


def _shadow_and_text(bundle: Bundle, ep: Episode, tm: TopicMap, bag: Path, cfg: EvalBagConfig, device: str,
                     session_cfg: Any, warnings: list[str]) -> tuple[Any, str, Any]:
    """The shadow planner (or None and why) and the instruction's text embedding for a text-conditioned world
    model (None otherwise, or with a warning when it cannot be made: the planner would use it)."""
    uses_text = bundle.flow_map.model.config.text_embed_dim is not None
    scorer, scorer_reason = load_scorer(bundle, device) if cfg.shadow or uses_text else (None, "")
    session, shadow_reason = None, ""
    if not cfg.shadow:
        shadow_reason = "shadow mode switched off (--no-shadow)"
    elif ep.joints.shape[1] < 7:
        shadow_reason = (f"bag {bag} has no arm joint states ({tm.joint_states or 'joint_states not mapped'}): the "
                         f"planner's basis proposals need the 7 joint positions")
    elif scorer is None:
        shadow_reason = f"the planner needs the semantic model: {scorer_reason}"
    else:
        session, shadow_reason = make_shadow_planner(bundle, scorer, cfg, device, session_cfg)
    text_emb = None
    if uses_text:
        if scorer is None:
            warnings.append(f"the world model is text-conditioned but {scorer_reason}: predictions are made "
                            f"without the instruction embedding (the planner would use it)")
        else:
            try:
                cond = None if session is not None else load_conditioner(bundle, device)  # else the session's
                text_emb = text_embedding(scorer, session, ep.instruction, cond)
            except Exception as exc:  # a broken text tower must not stop the video evaluation
                warnings.append(f"cannot embed the instruction {ep.instruction!r} ({type(exc).__name__}: {exc}): "
                                f"predictions are made without it")
    return session, shadow_reason, text_emb


def eval_bag(bag: str | Path, model_dir: str | Path, out: str | Path, topic_map: TopicMap | None = None,
             config: EvalBagConfig | None = None) -> EvalBagResult:
    """Evaluate the bundle in ``model_dir`` on the recording ``bag``; write metrics.json, plots and report.html.

    Args:
        bag: rosbag2 directory (mcap or sqlite3; a split recording directory is accepted).
        model_dir: model bundle (see the module docstring).
        out: output directory (created; files of earlier runs with the same names are replaced).
        topic_map: where the signals are (default: vidplan's topics), see :class:`vidplan_core.data.topic_map.TopicMap`.
        config: :class:`EvalBagConfig`.

    Returns:
        :class:`EvalBagResult` (``exit_code`` 0 complete, 3 partial: the salvaged part of a damaged bag).

    Raises:
        EvalBagError: bad input that leaves nothing to evaluate (see the module docstring).
    """
    cfg = config or EvalBagConfig()
    bag, out = Path(bag), Path(out)
    teacher_dir = _check_settings(cfg, model_dir)
    session_cfg = session_config(cfg.planner) if cfg.shadow else None  # a bad planner config: ConfigError now
    warnings: list[str] = []
    nulls: dict[str, str] = {}
    scan, tm, lerobot = _check_input(bag, topic_map or TopicMap(), cfg, warnings)
    import torch  # heavy imports after the bag checks, so bad input fails in a second

    from vidplan_core.sampling import edm_sample, flow_map_sample

    device = resolve_device(cfg.device)
    dev = torch.device(device)
    times = _StageTimes(dev)
    t_load = time.perf_counter()
    bundle = load_bundle(model_dir, device=device)
    times.load_s = time.perf_counter() - t_load
    if lerobot:
        ep, scan.duration_s = _lerobot_episode(bag, cfg, bundle)
        label_known = True
        label_source = "--success" if cfg.success is not None else f"LeRobot (mapping {cfg.mapping})"
    else:
        with tempfile.TemporaryDirectory(prefix="vidplan-eval-bag-") as tmp:
            ep, label_known, label_source = prepare_episode(bag, tm, bundle, cfg, Path(tmp), scan, warnings)
    T = len(ep.frames)
    Th, H = bundle.num_history, bundle.horizon
    starts = _window_starts(T, Th, H, cfg.max_steps)
    if not starts:
        raise EvalBagError(f"bag {bag}: {T} frames at {bundle.fps:g} Hz after conversion "
                           f"({'salvaged part, ' if scan.damaged else ''}{scan.duration_s:.2f} s of messages); "
                           f"one window needs {Th} history + {H} future frames = {(Th + H) / bundle.fps:.1f} s")
    if tuple(ep.source_size) != bundle.view_size:
        warnings.append(f"camera images of {ep.source_size[0]}x{ep.source_size[1]} (HxW) were resized to the "
                        f"model's {bundle.view_size[0]}x{bundle.view_size[1]} views")
    if cfg.success is not None and label_known and label_source == "--success":
        warnings.append(f"success label set on the command line: {cfg.success}")
    gamma = cfg.gamma if cfg.gamma is not None else float(bundle.info.get("value_gamma", 0.97))
    ae, fm, uq, rw = bundle.autoencoder, bundle.flow_map, bundle.uq_head, bundle.reward_head
    if cfg.uq_samples and uq is None:
        raise EvalBagError(f"uq_samples asked for, but the bundle {model_dir} has no UQ head")

    # 1. every frame encoded once; the heads' targets; the shadow planner; the predictor
    pm = PredictionMetrics(len(starts), H, device)
    lat_true, recon = _encode_frames(ae, ep.frames, dev, times, pm)
    actions_t = torch.from_numpy(ep.actions).to(dev, torch.float32)
    values, reward_reason = _reward_values(bundle, ep, scan, tm, bag, gamma)
    rwm = RewardMetrics(rw, values) if values is not None else None
    uqm = (UQMetrics(uq, cfg.element_samples, np.random.default_rng(cfg.seed), keep_samples=cfg.uq_samples)
           if uq is not None else None)
    session, shadow_reason, text_emb = _shadow_and_text(bundle, ep, tm, bag, cfg, device, session_cfg, warnings)
    shadow = ShadowMetrics()
    teacher = None
    if cfg.teacher_steps:
        from vidplan_core.models import WorldModel

        try:
            teacher = WorldModel.load(teacher_dir, device=device)
        except Exception as exc:
            raise EvalBagError(unloadable("the EDM teacher", teacher_dir, exc)) from exc

    def rollout(hist: Any, acts: Any, noise: Any) -> Any:  # (1, T, C, h, w), (1, T+H, 7), (1, H, C, h, w)
        if teacher is not None:
            return edm_sample(teacher, hist, acts, num_steps=cfg.teacher_steps, noise=noise, text_embeds=text_emb)
        return flow_map_sample(fm, hist, acts, num_steps=cfg.flow_steps, noise=noise, text_embeds=text_emb)

    ctl, ctl_shuffled = None, None
    if cfg.controllability:
        ctl = CTL.ControllabilityAccumulator(H)
        ctl_shuffled = CTL.shuffled_chunks(ep.actions, [s + Th - 1 for s in starts], H)
        if ctl_shuffled is None:
            ctl.shuffle_reason = (f"only {len(starts)} window: no other window's actions to shuffle in (needs ≥ 2 "
                                  f"windows; a longer bag or a larger --max-steps)")
    else:
        nulls["controllability"] = "switched off (EvalBagConfig.controllability = False / --no-controllability)"
    example_idx = set(np.unique(np.round(np.linspace(0, len(starts) - 1, max(cfg.examples, 0))).astype(int)).tolist()
                      ) if cfg.examples > 0 else set()
    examples: list[dict[str, Any]] = []

    # 2. windows: the recorded actions rolled out from the recorded history, against what the cameras saw
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), desc=f"eval-bag {bag.name}", unit="step", leave=False)
    for wi, s in enumerate(starts):
        c = s + Th - 1  # current frame
        fut = np.arange(c + 1, c + 1 + H)
        with torch.no_grad():
            hist = lat_true[s:s + Th][None]
            acts = actions_t[s:s + Th + H][None]
            # the planner's noise for this cycle (same seed → same noise in every runtime)
            noise = torch.from_numpy(make_noise(cfg.seed + s, (H, *lat_true.shape[1:]))).to(dev)
            with times("rollout"):
                pred = rollout(hist, acts, noise)
            with times("decode"):
                pred_img = ae.decode(pred)[0]  # (H, 3, 3, h, w)
            true_lat = lat_true[fut]
            pred_np = pred_img.float().cpu().numpy()
            tgt_np = ep.frames[fut].astype(np.float64) / 255.0
            pm.add(wi, pred_np, tgt_np, ep.frames[c].astype(np.float64) / 255.0, recon[c],
                   ((pred[0] - true_lat) ** 2).mean(dim=(1, 2, 3)).float().cpu().numpy())
            uq_map = None
            if uqm is not None:
                with times("uq_head"):
                    logits = uq(pred)[0]  # (H, C, h, w, B)
                uq_map = uqm.add(logits, (pred[0] - true_lat).abs())
            if rwm is not None:
                for kind, lat in (("on_predicted", pred), ("on_recorded", true_lat[None])):
                    with times("reward_head" if kind == "on_predicted" else None):
                        lg = rw(lat, acts[:, Th:])[0].float()  # (H, B)
                    rwm.add(kind, lg, fut)
            if ctl is not None:  # same history, same noise, other actions (common random numbers)
                ctl.add(CTL.evaluate_window(
                    lambda a, z, hist=hist: rollout(hist, torch.as_tensor(a, dtype=torch.float32, device=dev)[None],
                                                    z)[0],
                    ep.actions[s:s + Th + H], Th, true_lat, noise,
                    torch.from_numpy(CTL.other_noise(cfg.seed + s, tuple(noise.shape[1:]))).to(dev),
                    shuffled_future=None if ctl_shuffled is None else ctl_shuffled[wi],
                    decode=lambda z: ae.decode(z[None])[0].float().cpu().numpy(), target_images=tgt_np,
                    pred_true=pred[0], pred_true_images=pred_np))
        if wi in example_idx:
            examples.append({"start": s, "frame": c, "recorded": tgt_np, "predicted": pred_np, "uq_map": uq_map,
                             "psnr": pm.window_psnr(wi)})
        if session is not None and wi % max(cfg.shadow_every, 1) == 0 and (not cfg.shadow_max
                                                                           or shadow.plans < cfg.shadow_max):
            try:
                with times("planner"):
                    result, _props = session.plan(ep.frames[s:s + Th], ep.actions[s:s + Th], ep.joints[c, :7],
                                                  ep.instruction, seed=cfg.seed + s)
            except Exception as exc:  # a failing planner is a finding, not a crash of the evaluation
                shadow.failed(exc, c, warnings)
            else:
                shadow.add(result, ep.actions[fut])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # 3. aggregate
    if uqm is None:
        nulls["uq"] = bundle.missing.get("uq_head", "no UQ head in the bundle")
    if rwm is None:
        nulls["reward"] = reward_reason
    ctl_out: dict[str, Any] | None = None
    if ctl is not None:
        ctl_out, ctl_nulls = ctl.summary("controllability")
        nulls.update(ctl_nulls)
    metrics: dict[str, Any] = {
        "schema": SCHEMA,
        "status": "partial" if scan.damaged else "complete",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bag": str(bag),
        "model": str(bundle.path),
        "input": {
            "salvaged": scan.damaged,
            "topics": {t: {"type": ty, "messages": n} for t, (ty, n) in sorted(scan.topics.items())},
            "duration_s": scan.duration_s,
            "frames": T,
            "fps": bundle.fps,
            "source_image_size": list(ep.source_size),
            "model_view_size": list(bundle.view_size),
            "success": ep.success,
            "label_source": label_source if ep.success is not None else None,
            "instruction": ep.instruction,
            "joint_names": ep.joint_names,
            "action_source": (f"LeRobot mapping {cfg.mapping}" if lerobot
                              else tm.action or f"measured: {tm.ee_pose} + gripper {tm.gripper.topic}"),
            "lerobot_episode": cfg.episode if lerobot else None,
        },
        "settings": {"flow_steps": cfg.flow_steps, "teacher_steps": cfg.teacher_steps,
                     "predictor": (f"teacher N={cfg.teacher_steps}" if teacher is not None
                                   else f"flow map K={cfg.flow_steps}"),
                     "max_steps": cfg.max_steps, "device": device, "seed": cfg.seed,
                     "history": Th, "horizon": H, "gamma": gamma,
                     "text_conditioning": text_emb is not None, "topic_map": tm.model_dump(exclude_none=True)},
        "windows": len(starts),
        "window_starts": starts,
        "prediction": pm.summary(nulls),
        "uq": uqm.summary(nulls) if uqm is not None else None,
        "reward": rwm.summary(gamma, bool(ep.success), nulls) if rwm is not None else None,
        "shadow": shadow.summary(shadow_reason, nulls),
        "controllability": ctl_out,
        "latency": times.summary(),
        "warnings": warnings,
    }
    if ep.success is None:
        nulls["input.success"] = "no success label recorded (and none given with --success)"
        nulls["input.label_source"] = "no success label"
    reasons: dict[str, str] = dict(nulls)
    clean = finite_or_null(metrics, reasons)
    clean["null_reasons"] = reasons

    out.mkdir(parents=True, exist_ok=True)

    plots = P.write_plots(clean, examples, out / "plots")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(clean, indent=2, allow_nan=False))
    if cfg.uq_samples:
        np.savez_compressed(out / "uq_samples.npz", **uqm.samples())
    report_path = write_report(clean, plots, out / "report.html")
    return EvalBagResult(clean, out, metrics_path, report_path, plots,
                         EXIT_PARTIAL if scan.damaged else EXIT_OK)
