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
import math
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.bags import BagError, find_bags
from vidplan_core.data.convert import ConvertError, TopicMap, expand_inputs
from vidplan_core.eval import metrics as M
from vidplan_core.eval.bag_bundle import Bundle, default_teacher_dir, load_bundle, resolve_device, unloadable
from vidplan_core.eval.bag_config import (
    EMPTY_BIN,
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PARTIAL,
    PSNR_MSE_FLOOR,
    SCHEMA,
    EvalBagConfig,
    EvalBagError,
    EvalBagResult,
)
from vidplan_core.eval.bag_metrics import (
    MOVING_THRESHOLD,
    ReliabilityAccumulator,
    correlation,
    finite_or_null,
    moving_psnr,
    rotation_errors,
)
from vidplan_core.eval.bag_recording import Episode, Scan, action_source, prepare_episode, scan_bag
from vidplan_core.eval.bag_shadow import load_scorer, make_shadow_planner, session_config, text_embedding
from vidplan_core.spaces import VIEW_ORDER

# The command's API in one place (its settings, result, errors and exit codes are defined in bag_config). The parts:
# bag_bundle (the model bundle), bag_recording (scan, salvage, windows), bag_metrics, bag_shadow (shadow planner).
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
    from vidplan_core.data.lerobot import LeRobotError, LeRobotSource

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


def eval_bag(bag: str | Path, model_dir: str | Path, out: str | Path, topic_map: TopicMap | None = None,
             config: EvalBagConfig | None = None) -> EvalBagResult:
    """Evaluate the bundle in ``model_dir`` on the recording ``bag``; write metrics.json, plots and report.html.

    Args:
        bag: rosbag2 directory (mcap or sqlite3; a split recording directory is accepted).
        model_dir: model bundle (see the module docstring).
        out: output directory (created; files of earlier runs with the same names are replaced).
        topic_map: where the signals are (default: vidplan's topics), see :class:`vidplan_core.data.convert.TopicMap`.
        config: :class:`EvalBagConfig`.

    Returns:
        :class:`EvalBagResult` (``exit_code`` 0 complete, 3 partial: the salvaged part of a damaged bag).

    Raises:
        EvalBagError: bad input that leaves nothing to evaluate (see the module docstring).
    """
    cfg = config or EvalBagConfig()
    tm = topic_map or TopicMap()
    bag = Path(bag)
    out = Path(out)
    if cfg.flow_steps < 1:
        raise EvalBagError(f"--flow-steps must be ≥ 1, got {cfg.flow_steps}")
    if cfg.teacher_steps < 0:
        raise EvalBagError(f"--teacher-steps must be ≥ 0, got {cfg.teacher_steps}")
    teacher_dir = Path(cfg.teacher_dir) if cfg.teacher_dir else default_teacher_dir(model_dir)
    if cfg.teacher_steps and not (teacher_dir / "config.json").is_file():
        raise EvalBagError(f"--teacher-steps {cfg.teacher_steps}: no EDM teacher at {teacher_dir} (deployment "
                           f"bundles such as models/demo leave it in the training run; pass --teacher DIR)")
    session_cfg = session_config(cfg.planner) if cfg.shadow else None  # a bad planner config: ConfigError now
    from vidplan_core.data.lerobot import LeRobotError, LeRobotSource, is_lerobot_dataset

    lerobot = is_lerobot_dataset(bag)
    warnings: list[str] = []
    nulls: dict[str, str] = {}
    if lerobot:  # a LeRobot / DROID dataset: one episode read in place; keys and files checked before the models
        try:
            LeRobotSource(bag, cfg.mapping, [cfg.episode])
        except LeRobotError as exc:
            raise EvalBagError(f"LeRobot dataset {bag}, episode {cfg.episode}: {exc}") from exc
        scan = Scan({}, {}, False, False, 0, [], 0.0, tm)
        action_note = ""
    else:
        try:
            find_bags(bag)  # a split recording (numbered bags) counts as one episode, read merged
            episodes = expand_inputs([bag])
        except (BagError, ConvertError) as exc:
            raise EvalBagError(str(exc)) from exc
        if len(episodes) > 1:
            raise EvalBagError(f"{bag} holds {len(episodes)} episodes ({', '.join(e.name for e in episodes[:3])}, "
                               f"...); eval-bag evaluates one episode: pass one of them")
        scan = scan_bag(bag, tm, cfg.salvage)  # the bag first: bad input fails fast, before torch and the models load
        warnings += scan.warnings
        tm = scan.topic_map
        tm, action_note = action_source(tm, scan, bag)
    if action_note:
        warnings.append(action_note)
    import torch  # heavy imports after the bag checks, so bad input fails in a second

    from vidplan_core.models import normalized_entropy, to_bins
    from vidplan_core.runtime.bundle import make_noise

    device = resolve_device(cfg.device)
    t_load = time.perf_counter()
    bundle = load_bundle(model_dir, device=device)
    t_load = time.perf_counter() - t_load
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
    dev = torch.device(device)
    lat_times: dict[str, list[float]] = {k: [] for k in ("encode_frame", "rollout", "decode", "uq_head",
                                                           "reward_head", "planner")}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    # 1. encode every frame once (the planner encodes each new frame once and caches it: per-frame latency)
    frames_t = torch.from_numpy(ep.frames)
    lat_true_l, recon_psnr, recon_l = [], {v: [] for v in VIEW_ORDER}, []
    with torch.no_grad():
        for i in range(0, T, 8):
            x = frames_t[i:i + 8].to(dev, torch.float32).div_(255.0)
            sync()
            t0 = time.perf_counter()
            z = ae.encode(x)
            sync()
            dt = time.perf_counter() - t0
            lat_times["encode_frame"] += [dt / len(x)] * len(x)
            lat_true_l.append(z)
            rec = ae.decode(z).float().cpu().numpy()
            recon_l.append(rec.astype(np.float32))
            tgt = x.float().cpu().numpy()
            for vi, v in enumerate(VIEW_ORDER):
                mse = np.maximum(np.mean((rec[:, vi] - tgt[:, vi]) ** 2, axis=(-3, -2, -1)), PSNR_MSE_FLOOR)
                recon_psnr[v] += (10 * np.log10(1.0 / mse)).tolist()
    lat_true = torch.cat(lat_true_l)  # (T, C, h, w)
    recon = np.concatenate(recon_l)  # (T, V, 3, h, w) decoded frames: what the model's own copy baseline looks like
    actions_t = torch.from_numpy(ep.actions).to(dev, torch.float32)

    # reward target: V(τ) = γ^(F−τ)·success needs the episode's end and its label
    reward_reason = ""
    if rw is None:
        reward_reason = bundle.missing.get("reward_head", "no reward head in the bundle")
    elif ep.success is None:
        reward_reason = (f"no success label in bag {bag} (topic {tm.episode_info or tm.success} or a sidecar); "
                         f"pass --success true|false to evaluate the reward head")
    elif scan.damaged:
        reward_reason = ("the bag is truncated/corrupt: the episode's last frame F is lost, so the Monte-Carlo "
                         "value γ^(F−τ)·success of the salvaged frames is unknown")
    values = None
    if not reward_reason:
        from vidplan_core.data.schema import mc_values

        values = mc_values(T, bool(ep.success), gamma).astype(np.float64)

    # shadow planner and the instruction embedding (a text-conditioned world model gets it, as in the planner)
    shadow_reason = ""
    session = None
    uses_text = fm.model.config.text_embed_dim is not None
    scorer, scorer_reason = (None, "")
    if cfg.shadow or uses_text:
        scorer, scorer_reason = load_scorer(bundle, device)
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
                text_emb = text_embedding(scorer, session, ep.instruction, device)
            except Exception as exc:  # a broken text tower must not stop the video evaluation
                warnings.append(f"cannot embed the instruction {ep.instruction!r} ({type(exc).__name__}: {exc}): "
                                f"predictions are made without it")

    teacher = None
    if cfg.teacher_steps:
        from vidplan_core.models import WorldModel

        try:
            teacher = WorldModel.load(teacher_dir, device=device)
        except Exception as exc:
            raise EvalBagError(unloadable("the EDM teacher", teacher_dir, exc)) from exc

    # 2. windows
    psnr_w = np.zeros((len(starts), H, len(VIEW_ORDER)))
    copy_w = np.zeros_like(psnr_w)  # baseline: the current frame copied into the future (what must be predicted)
    # pooled squared errors on the pixels that change (|future − current| > MOVING_THRESHOLD in some channel):
    # what the copy baseline cannot get right and planning needs (robot, pushed objects) — per horizon step
    moving_sse = {"prediction": np.zeros(H), "copy": np.zeros(H), "copy_decoded": np.zeros(H)}
    moving_n = np.zeros(H)
    ssim_w = np.zeros_like(psnr_w)
    lpips_fn, lpips_reason = M.make_lpips(device)  # None where the package or its weights are not available
    lpips_w = np.zeros_like(psnr_w)
    lmse_w = np.zeros((len(starts), H))
    rel_uq = ReliabilityAccumulator(15)
    uq_frame_ent, uq_frame_err, uq_frame_exp = [], [], []
    el_ent, el_err = [], []
    rng = np.random.default_rng(cfg.seed)
    rw_pred: dict[str, list] = {"on_predicted": [], "on_recorded": []}
    rw_rel = {"on_predicted": ReliabilityAccumulator(15), "on_recorded": ReliabilityAccumulator(15)}
    rw_points: list[tuple[int, int, float, float]] = []  # (frame τ, horizon step, predicted E[V], target V)
    shadow_rows: list[dict[str, Any]] = []
    shadow_status: dict[str, int] = {}
    shadow_stage: dict[str, list[float]] = {}
    example_idx = set(np.unique(np.round(np.linspace(0, len(starts) - 1, max(cfg.examples, 0))).astype(int)).tolist()
                      ) if cfg.examples > 0 else set()
    examples: list[dict[str, Any]] = []

    from vidplan_core.sampling import edm_sample, flow_map_sample  # torch: imported once a model is loaded

    def rollout(hist: Any, acts: Any, noise: Any) -> Any:  # (1, T, C, h, w), (1, T+H, 7), (1, H, C, h, w)
        if teacher is not None:
            return edm_sample(teacher, hist, acts, num_steps=cfg.teacher_steps, noise=noise, text_embeds=text_emb)
        return flow_map_sample(fm, hist, acts, num_steps=cfg.flow_steps, noise=noise, text_embeds=text_emb)

    ctl, ctl_shuffled = None, None
    if cfg.controllability:
        from vidplan_core.eval import controllability as CTL

        ctl = CTL.ControllabilityAccumulator(H)
        ctl_shuffled = CTL.shuffled_chunks(ep.actions, [s + Th - 1 for s in starts], H)
        if ctl_shuffled is None:
            ctl.shuffle_reason = (f"only {len(starts)} window: no other window's actions to shuffle in (needs ≥ 2 "
                                  f"windows; a longer bag or a larger --max-steps)")
    else:
        nulls["controllability"] = "switched off (EvalBagConfig.controllability = False / --no-controllability)"

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(starts), desc=f"eval-bag {bag.name}", unit="step", leave=False)
    plans_done = 0
    for wi, s in enumerate(starts):
        c = s + Th - 1  # current frame
        fut = np.arange(c + 1, c + 1 + H)
        with torch.no_grad():
            hist = lat_true[s:s + Th][None]
            acts = actions_t[s:s + Th + H][None]
            # the planner's noise for this cycle (same seed → same noise in every runtime)
            noise = torch.from_numpy(make_noise(cfg.seed + s, (H, *lat_true.shape[1:]))).to(dev)
            sync()
            t0 = time.perf_counter()
            pred = rollout(hist, acts, noise)
            sync()
            lat_times["rollout"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            pred_img = ae.decode(pred)[0]  # (H, 3, 3, h, w)
            sync()
            lat_times["decode"].append(time.perf_counter() - t0)
            true_lat = lat_true[fut]
            pred_np = pred_img.float().cpu().numpy()
            tgt_np = ep.frames[fut].astype(np.float64) / 255.0
            now_np = ep.frames[c].astype(np.float64) / 255.0
            for h in range(H):
                for vi in range(len(VIEW_ORDER)):
                    mse = max(float(np.mean((pred_np[h, vi] - tgt_np[h, vi]) ** 2)), PSNR_MSE_FLOOR)
                    psnr_w[wi, h, vi] = 10 * math.log10(1.0 / mse)
                    mse = max(float(np.mean((now_np[vi] - tgt_np[h, vi]) ** 2)), PSNR_MSE_FLOOR)
                    copy_w[wi, h, vi] = 10 * math.log10(1.0 / mse)
                    ssim_w[wi, h, vi] = M.ssim(pred_np[h, vi], tgt_np[h, vi])
                    if lpips_fn is not None:
                        lpips_w[wi, h, vi] = lpips_fn(pred_np[h, vi], tgt_np[h, vi])
                    moving = np.abs(tgt_np[h, vi] - now_np[vi]).max(axis=0) > MOVING_THRESHOLD  # (h, w)
                    if moving.any():
                        moving_sse["prediction"][h] += float(((pred_np[h, vi] - tgt_np[h, vi])[:, moving] ** 2).sum())
                        moving_sse["copy"][h] += float(((now_np[vi] - tgt_np[h, vi])[:, moving] ** 2).sum())
                        moving_sse["copy_decoded"][h] += float(((recon[c, vi] - tgt_np[h, vi])[:, moving] ** 2).sum())
                        moving_n[h] += 3 * int(moving.sum())
            err = (pred[0] - true_lat).abs()  # (H, C, h, w)
            lmse_w[wi] = ((pred[0] - true_lat) ** 2).mean(dim=(1, 2, 3)).float().cpu().numpy()
            uq_map = None
            if uq is not None:
                t0 = time.perf_counter()
                logits = uq(pred)[0]  # (H, C, h, w, B)
                sync()
                lat_times["uq_head"].append(time.perf_counter() - t0)
                probs = logits.float().softmax(-1)
                target = to_bins(err.float(), 0.0, float(uq.config.max_error), int(uq.config.num_bins))
                conf, pbin = probs.max(-1)
                rel_uq.add(conf.cpu().numpy(), (pbin == target).float().cpu().numpy())
                ent = normalized_entropy(logits.float())  # (H, C, h, w)
                exp_err = (probs * uq.centers.to(probs)).sum(-1)
                uq_frame_ent += ent.mean(dim=(1, 2, 3)).cpu().tolist()
                uq_frame_err += err.float().mean(dim=(1, 2, 3)).cpu().tolist()
                uq_frame_exp += exp_err.mean(dim=(1, 2, 3)).cpu().tolist()
                flat_e, flat_x = ent.reshape(-1).cpu().numpy(), err.reshape(-1).float().cpu().numpy()
                k = min(cfg.element_samples, flat_e.size)
                pick = rng.choice(flat_e.size, size=k, replace=False)
                el_ent.append(flat_e[pick])
                el_err.append(flat_x[pick])
                uq_map = ent.mean(dim=1).cpu().numpy()  # (H, h, w): mean over latent channels
            if values is not None:
                fut_acts = acts[:, Th:]
                tv = torch.as_tensor(values[fut], dtype=torch.float32, device=dev)
                tbin = to_bins(tv, 0.0, 1.0, int(rw.config.num_bins))
                for kind, lat in (("on_predicted", pred), ("on_recorded", true_lat[None])):
                    t0 = time.perf_counter()
                    lg = rw(lat, fut_acts)[0].float()  # (H, B)
                    sync()
                    if kind == "on_predicted":
                        lat_times["reward_head"].append(time.perf_counter() - t0)
                    p = lg.softmax(-1)
                    conf, pb = p.max(-1)
                    ev = (p * rw.centers.to(p)).sum(-1)
                    rw_rel[kind].add(conf.cpu().numpy(), (pb == tbin).float().cpu().numpy())
                    rw_pred[kind].append(np.stack([ev.cpu().numpy(), values[fut]], axis=1))
                    if kind == "on_predicted":
                        rw_points += [(int(fut[h]), h, float(ev[h]), float(values[fut[h]])) for h in range(H)]
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
                             "psnr": psnr_w[wi].mean(axis=1).tolist()})
        # shadow planner
        if session is not None and wi % max(cfg.shadow_every, 1) == 0 and (not cfg.shadow_max
                                                                           or plans_done < cfg.shadow_max):
            t0 = time.perf_counter()
            try:
                result, _props = session.plan(ep.frames[s:s + Th], ep.actions[s:s + Th], ep.joints[c, :7],
                                              ep.instruction, seed=cfg.seed + s)
            except Exception as exc:  # a failing planner is a finding, not a crash of the evaluation
                shadow_status["error"] = shadow_status.get("error", 0) + 1
                if shadow_status["error"] <= 3:  # the first few are enough to diagnose
                    warnings.append(f"shadow planner failed at frame {c}: {type(exc).__name__}: {exc}")
            else:
                lat_times["planner"].append(time.perf_counter() - t0)
                plans_done += 1
                shadow_status[result.status] = shadow_status.get(result.status, 0) + 1
                for k, v in result.timings.items():
                    shadow_stage.setdefault(k, []).append(float(v))
                ch = result.chunk
                ref = ep.actions[fut]
                n = min(len(ch.position), H)
                shadow_rows.append({
                    "position_m": np.linalg.norm(ch.position[:n] - ref[:n, :3], axis=1),
                    "rotation_rad": rotation_errors(ch.euler[:n], ref[:n, 3:6]),
                    "gripper": np.abs(ch.gripper[:n] - ref[:n, 6]),
                })
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    # 3. aggregate
    views = list(VIEW_ORDER)
    prediction = {
        "psnr_db": {**{v: psnr_w[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                    "mean": psnr_w.mean(axis=(0, 2)).tolist()},
        "ssim": {**{v: ssim_w[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                 "mean": ssim_w.mean(axis=(0, 2)).tolist()},
        "latent_mse": {"per_step": lmse_w.mean(0).tolist(), "mean": float(lmse_w.mean())},
        "psnr_db_mean": float(psnr_w.mean()),
        "copy_last_frame_psnr_db": {"per_step": copy_w.mean(axis=(0, 2)).tolist(), "mean": float(copy_w.mean())},
        "moving_pixels": moving_psnr(moving_sse, moving_n),
        "ssim_mean": float(ssim_w.mean()),
        "lpips": ({**{v: lpips_w[:, :, i].mean(0).tolist() for i, v in enumerate(views)},
                   "mean": lpips_w.mean(axis=(0, 2)).tolist()} if lpips_fn is not None else None),
        "reconstruction_psnr_db": {v: float(np.mean(recon_psnr[v])) for v in views},
    }
    if lpips_fn is None:
        nulls["prediction.lpips"] = lpips_reason
    uq_out: dict[str, Any] | None
    if uq is None:
        uq_out = None
        nulls["uq"] = bundle.missing.get("uq_head", "no UQ head in the bundle")
    else:
        diag = rel_uq.diagram()
        if 0 in diag["count"]:
            for q in ("confidence", "accuracy"):
                nulls[f"uq.reliability.{q}"] = EMPTY_BIN
        uq_out = {
            "ece": rel_uq.ece(),
            "bin_accuracy": rel_uq.accuracy(),
            "elements": rel_uq.n,
            "num_bins": int(uq.config.num_bins),
            "max_error": float(uq.config.max_error),
            "reliability": diag,
            "mean_normalized_entropy": float(np.mean(uq_frame_ent)),
            "mean_abs_error": float(np.mean(uq_frame_err)),
            "expected_error_mae": float(np.mean(np.abs(np.asarray(uq_frame_exp) - np.asarray(uq_frame_err)))),
            "per_frame": {"normalized_entropy": uq_frame_ent, "abs_error": uq_frame_err,
                          "expected_error": uq_frame_exp},
            "entropy_error_correlation": {
                "per_element": correlation(np.concatenate(el_ent), np.concatenate(el_err),
                                           "per-element entropy vs error", nulls,
                                           "uq.entropy_error_correlation.per_element"),
                "per_frame": correlation(np.asarray(uq_frame_ent), np.asarray(uq_frame_err),
                                         "per-frame mean entropy vs mean error", nulls,
                                         "uq.entropy_error_correlation.per_frame"),
            },
        }
    reward_out: dict[str, Any] | None = None
    if reward_reason:
        nulls["reward"] = reward_reason
    else:
        reward_out = {"gamma": gamma, "success": bool(ep.success), "num_bins": int(rw.config.num_bins)}
        for kind in ("on_predicted", "on_recorded"):
            pv = np.concatenate(rw_pred[kind])
            diag = rw_rel[kind].diagram()
            if 0 in diag["count"]:
                for q in ("confidence", "accuracy"):
                    nulls[f"reward.{kind}.reliability.{q}"] = EMPTY_BIN
            reward_out[kind] = {"bin_accuracy": rw_rel[kind].accuracy(), "ece": rw_rel[kind].ece(),
                                "value_mae": float(np.mean(np.abs(pv[:, 0] - pv[:, 1]))),
                                "frames": len(pv), "reliability": diag}
        reward_out["points"] = [list(p) for p in rw_points]
    shadow_out: dict[str, Any] | None = None
    if shadow_rows:
        n = min(len(r["position_m"]) for r in shadow_rows)
        agg = {k: np.stack([r[k][:n] for r in shadow_rows]) for k in ("position_m", "rotation_rad", "gripper")}
        shadow_out = {"plans": len(shadow_rows), "status": shadow_status,
                      **{f"{k}_per_step": v.mean(0).tolist() for k, v in agg.items()},
                      **{f"{k}_mean": float(v.mean()) for k, v in agg.items()},
                      "stage_latency": {k: M.latency_summary(v) for k, v in shadow_stage.items()}}
    else:
        nulls["shadow"] = shadow_reason or ("the planner failed at every step (see warnings)" if shadow_status
                                            else "no window was planned")
    ctl_out: dict[str, Any] | None = None
    if ctl is not None:
        ctl_out, ctl_nulls = ctl.summary("controllability")
        nulls.update(ctl_nulls)
    latency = {k: M.latency_summary(v) for k, v in lat_times.items() if v}
    latency["model_load_s"] = t_load
    status = "partial" if scan.damaged else "complete"
    metrics: dict[str, Any] = {
        "schema": SCHEMA,
        "status": status,
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
        "prediction": prediction,
        "uq": uq_out,
        "reward": reward_out,
        "shadow": shadow_out,
        "controllability": ctl_out,
        "latency": latency,
        "warnings": warnings,
    }
    if ep.success is None:
        nulls["input.success"] = "no success label recorded (and none given with --success)"
        nulls["input.label_source"] = "no success label"
    reasons: dict[str, str] = dict(nulls)
    clean = finite_or_null(metrics, reasons)
    clean["null_reasons"] = reasons

    out.mkdir(parents=True, exist_ok=True)
    from vidplan_core.eval import plots as P
    from vidplan_core.eval.report import write_report

    plots = P.write_plots(clean, examples, out / "plots")
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(clean, indent=2, allow_nan=False))
    report_path = write_report(clean, plots, out / "report.html")
    return EvalBagResult(clean, out, metrics_path, report_path, plots,
                         EXIT_PARTIAL if scan.damaged else EXIT_OK)
