"""Report of one recorded demo episode (``vidplan demo --launch``): PNG strip, GIF and a short Markdown page.

Everything is built from the episode's rosbag2 recording (no ROS needed):

``strip.png``
    One row per sampled planning cycle (at most ``max_rows``, evenly spread over the episode). Each cell is one
    picture of the three views stacked vertically (left, right, wrist; the model's own layout). Column 0: the real
    camera images of the triplet the cycle planned on; columns 1..F: the frames the world model imagined for the
    chosen chunk, cut from that cycle's ``/vidplan/debug/prediction`` image (the planner's
    :func:`vidplan_core.eval.visualize.prediction_strip` of ``[[current], predicted]`` with a 2-px gap). Cells are
    the model's view size scaled up by an integer ``scale`` (views at least ~96 px wide), the real images resized
    to the same size; 2-px white gaps. Without any recorded prediction, the strip has one column (real frames).
``episode.gif``
    From the task's start, at most ``gif_fps`` frames per second of sim time and ``max_gif_frames`` frames;
    views scaled down to at most ``gif_view_width`` px wide. Top row: the three camera views side by side (left, right,
    wrist). Bottom row (once the planner has planned): the same three views as the world model imagined them at the
    end of the latest chunk planned so far, resized to the camera size; 2-px white gap between the rows.
``report.md``
    Outcome, steps, latency, planner statuses, executor counters, recorded topics, the two pictures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.data.bags import BagReader
from vidplan_core.data.messages import Codec, stamp_ns
from vidplan_core.eval.visualize import prediction_strip, to_uint8_hwc
from vidplan_core.images import decode_image
from vidplan_core.spaces import VIEW_ORDER, resize_view

__all__ = ["CAMERA_TOPICS", "PREDICTION_TOPIC", "split_prediction_image", "write_demo_report"]

CAMERA_TOPICS = {v: f"/cameras/{v}/image_raw" for v in VIEW_ORDER}
PREDICTION_TOPIC = "/vidplan/debug/prediction"
GAP = 2  # px between cells, as prediction_strip's default


def split_prediction_image(img: np.ndarray, view_width: int | None = None, gap: int = GAP
                           ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cut the planner's debug prediction image into (current stacked frame, [predicted stacked frames]).

    The image is ``prediction_strip([[current], predicted])``: two rows of cells (3·vh, vw) — 3 views stacked —
    separated by ``gap`` px. ``view_width`` is the model's view width vw [px] (None: square views, vw = vh).
    Returns (3·vh, vw, 3) uint8 arrays.

    Raises:
        ValueError: a size that cannot come from that layout.
    """
    img = to_uint8_hwc(img)
    h, w = img.shape[:2]
    cell_h = (h - gap) // 2
    vw = int(view_width) if view_width else cell_h // 3
    if cell_h <= 0 or 2 * cell_h + gap != h or cell_h % 3 or vw <= 0 or (w + gap) % (vw + gap):
        raise ValueError(f"a {h}×{w} image is not a planner prediction image (2 rows of 3 stacked views "
                         f"{vw} px wide, {gap}-px gaps)")
    n = (w + gap) // (vw + gap)
    current = img[:cell_h, :vw]
    predicted = [img[cell_h + gap:, c * (vw + gap):c * (vw + gap) + vw] for c in range(n)]
    return current, predicted


def _upscale(img: np.ndarray, k: int) -> np.ndarray:
    return img if k == 1 else np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:

    return resize_view(img, h, w)


def _stacked(views: dict[str, np.ndarray], h: int, w: int) -> np.ndarray:
    return np.concatenate([_resize(views[v], h, w) for v in VIEW_ORDER], axis=0)


def _read(bag: Path, max_rows: int, gif_fps: float, max_gif_frames: int, start_ns: int) -> dict[str, Any]:
    """Camera triplets (by header stamp), predictions, topic counts from the bag."""
    codec = Codec()
    cams: dict[int, dict[str, Any]] = {}      # header stamp → view → raw message (decoded lazily)
    preds: list[tuple[int, Any]] = []  # (header stamp, message) of the planner's debug prediction images
    with BagReader(bag) as reader:
        counts = {t.name: t.message_count for t in reader.topics.values()}
        wanted = [t for t in (*CAMERA_TOPICS.values(), PREDICTION_TOPIC) if t in reader.topics]
        view_of = {t: v for v, t in CAMERA_TOPICS.items()}
        for m in reader.messages(wanted):
            msg = codec.deserialize(m.data, m.msgtype)
            if m.topic == PREDICTION_TOPIC:
                if stamp_ns(msg) >= start_ns:
                    preds.append((stamp_ns(msg), msg))
            else:
                cams.setdefault(stamp_ns(msg), {})[view_of[m.topic]] = msg
    triplets = sorted((t, v) for t, v in cams.items() if len(v) == 3)

    def decode(views: dict[str, Any]) -> dict[str, np.ndarray]:
        return {v: decode_image(msg, f"bag {bag}: {CAMERA_TOPICS[v]}") for v, msg in views.items()}

    # GIF: triplets from the task's start, at most gif_fps per second of (stamp) time and max_gif_frames in all.
    episode = [(t, v) for t, v in triplets if t >= start_ns]
    if episode:
        span_s = (episode[-1][0] - episode[0][0]) * 1e-9
        period_s = max(1.0 / gif_fps, span_s / max(max_gif_frames - 1, 1))
    gif, last = [], -math.inf
    for t, views in episode:
        if (t - last) * 1e-9 >= period_s - 1e-6:
            gif.append((t, decode(views)))
            last = t
    # Strip: evenly spread predictions, each with the triplet it planned on (same stamp, else the latest before).
    rows = []
    if preds:
        idx = np.unique(np.linspace(0, len(preds) - 1, min(max_rows, len(preds))).round().astype(int))
        stamps = [t for t, _ in triplets]
        for i in idx:
            t, msg = preds[int(i)]
            j = int(np.searchsorted(stamps, t, side="right")) - 1
            real = decode(triplets[j][1]) if j >= 0 else None
            rows.append((t, real, decode_image(msg, f"bag {bag}: {PREDICTION_TOPIC}")))
    elif episode:
        idx = np.unique(np.linspace(0, len(episode) - 1, min(max_rows, len(episode))).round().astype(int))
        rows = [(episode[int(i)][0], decode(episode[int(i)][1]), None) for i in idx]
    # Latest prediction at each GIF time (decoded once each).
    gif_preds: list[Any] = []
    pstamps = [t for t, _ in preds]
    cache: dict[int, np.ndarray] = {}
    for t, _ in gif:
        j = int(np.searchsorted(pstamps, t, side="right")) - 1
        if j >= 0 and j not in cache:
            cache[j] = decode_image(preds[j][1], f"bag {bag}: {PREDICTION_TOPIC}")
        gif_preds.append(cache.get(j) if j >= 0 else None)
    return {"counts": counts, "gif": gif, "gif_preds": gif_preds, "rows": rows, "n_predictions": len(preds),
            "n_triplets": len(triplets)}


def _strip(rows: list, view_width: int | None, min_view_width: int = 96) -> tuple[np.ndarray, dict[str, Any]]:
    """Build the strip image and its layout (see the module docstring)."""
    cur_pred = [split_prediction_image(p, view_width) if p is not None else None for _, _, p in rows]
    if any(cp is not None for cp in cur_pred):
        cell0 = next(cp for cp in cur_pred if cp is not None)[0]
        vh, vw = cell0.shape[0] // 3, cell0.shape[1]
    else:  # no predictions: real frames only, at their own aspect ratio
        img = rows[0][1][VIEW_ORDER[0]]
        vh, vw = img.shape[0], img.shape[1]
    scale = max(1, math.ceil(min_view_width / vw))
    ch, cw = 3 * vh * scale, vw * scale
    n_future = max((len(cp[1]) for cp in cur_pred if cp is not None), default=0)
    grid = []
    for (_, real, _), cp in zip(rows, cur_pred, strict=True):
        if real is not None:
            first = np.concatenate([_resize(real[v], vh * scale, vw * scale) for v in VIEW_ORDER], axis=0)
        else:  # no camera triplet recorded before this cycle: the planner's own copy of the current frame
            first = _upscale(cp[0], scale)
        row = [first]
        if cp is not None:
            row += [_upscale(f, scale) for f in cp[1]]
        grid.append(row)
    img = prediction_strip(grid, gap=GAP)
    layout = {"rows": len(grid), "cols": 1 + n_future, "cell_height": ch, "cell_width": cw, "gap": GAP,
              "scale": scale, "view_size": [vh, vw], "imagined_frames": n_future,
              "row_stamps_s": [round(t * 1e-9, 3) for t, _, _ in rows]}
    return img, layout


def _gif_frame(views: dict[str, np.ndarray], pred_img: np.ndarray | None, view_width: int | None,
               max_view_width: int) -> np.ndarray:
    """Real views side by side; below them the last imagined frame's views (white until the first plan). Views
    wider than ``max_view_width`` are scaled down (a GIF is for a quick look, and small ones encode fast)."""
    h, w = views[VIEW_ORDER[0]].shape[:2]
    if w > max_view_width:
        h, w = max(1, round(h * max_view_width / w)), max_view_width
    top = np.concatenate([_resize(views[v], h, w) for v in VIEW_ORDER], axis=1)
    if pred_img is None:
        bottom = np.full_like(top, 255)
    else:
        last = split_prediction_image(pred_img, view_width)[1][-1]  # (3·vh, vw, 3): views stacked vertically
        vh = last.shape[0] // 3
        bottom = np.concatenate([_resize(last[i * vh:(i + 1) * vh], h, w) for i in range(3)], axis=1)
    return np.concatenate([top, np.full((GAP, top.shape[1], 3), 255, np.uint8), bottom], axis=0)


def _save_gif(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """Looping GIF; each frame quantised with Pillow's fast octree (its default quantiser costs ~0.25 s per
    960×360 frame on a small CPU)."""
    from PIL import Image

    pil = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE) for f in frames]
    pil[0].save(path, save_all=True, append_images=pil[1:], duration=int(1000 / fps), loop=0)


def write_demo_report(out_dir: str | Path, bag: str | Path, result: dict[str, Any],
                      view_size: tuple[int, int] | None = None, max_rows: int = 6, gif_fps: float = 5.0,
                      max_gif_frames: int = 100, gif_view_width: int = 192) -> dict[str, Any]:
    """Write ``strip.png``, ``episode.gif`` and ``report.md`` into ``out_dir`` from the recording at ``bag``.

    Args:
        out_dir: report directory (created).
        bag: the episode's rosbag2 recording (a bag directory).
        result: the episode's outcome (``LearnedDemoResult.to_dict()``, plus ``model_dir``, ``backend``, ...),
            shown in the report; its ``sim_start_s`` (sim time the task was set) starts the GIF and the strip.
        view_size: the model's (height, width) of one view [px], to cut the prediction images (None: square).
        max_rows: planning cycles shown in the strip.
        gif_fps: GIF frames per second of sim time (fewer when the episode would need more than max_gif_frames).
        max_gif_frames: most GIF frames.
        gif_view_width: views wider than this [px] are scaled down in the GIF.

    Returns:
        {"files": {name: path}, "strip": layout (rows, cols, cell size, ...), "recording": topic → count,
        "warnings": [...]}.

    Raises:
        vidplan_core.data.bags.BagError: the recording is missing or unreadable.
        ValueError: the recording has no camera images.
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start_ns = int(float(result.get("sim_start_s", 0.0)) * 1e9)
    data = _read(Path(bag), max_rows, gif_fps, max_gif_frames, start_ns)
    warnings = []
    if not data["rows"]:
        raise ValueError(f"bag {bag}: no complete camera triplet ({', '.join(CAMERA_TOPICS.values())}) recorded")
    if not data["n_predictions"]:
        warnings.append(f"no {PREDICTION_TOPIC} recorded: the strip shows the real frames only")
    files: dict[str, str] = {}
    strip, layout = _strip(data["rows"], view_size[1] if view_size else None)
    Image.fromarray(strip).save(out / "strip.png")
    files["strip"] = str(out / "strip.png")
    gif_frames = [_gif_frame(views, pred, view_size[1] if view_size else None, gif_view_width)
                  for (_, views), pred in zip(data["gif"], data["gif_preds"], strict=True)]
    if gif_frames:
        _save_gif(gif_frames, out / "episode.gif", fps=gif_fps)
        files["gif"] = str(out / "episode.gif")
    report = out / "report.md"
    report.write_text(_markdown(result, layout, data, warnings, Path(bag), out))
    files["report"] = str(report)
    return {"files": files, "strip": layout, "recording": data["counts"], "gif_frames": len(gif_frames),
            "warnings": warnings}


def _fmt(v: Any, nd: int = 1) -> str:
    return f"{v:.{nd}f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def _markdown(r: dict[str, Any], layout: dict[str, Any], data: dict[str, Any], warnings: list[str], bag: Path,
              out: Path) -> str:
    try:
        bag_rel = bag.relative_to(out)
    except ValueError:
        bag_rel = bag
    ok = r.get("success")
    lines = [f"# vidplan demo: {'SUCCESS' if ok else 'FAILURE'}", "",
             f"*{r.get('instruction', '')}* — scene seed {r.get('scene_seed')}, clutter {r.get('clutter', '?')}", "",
             "| | |", "|---|---|",
             f"| outcome | {'success' if ok else 'failure'}: {r.get('message', '')} |",
             f"| stopped by | {r.get('stopped_by', '')} |",
             f"| control steps executed (15 Hz) | {r.get('steps_executed')} / {r.get('max_steps')} |",
             f"| chunks planned | {r.get('chunks_planned')} ({r.get('plan_cycles')} plan cycles) |",
             f"| planner statuses | {', '.join(f'{k}: {v}' for k, v in sorted(r.get('plan_status', {}).items()))} |",
             f"| plan latency p50 / p95 | {_fmt(r.get('plan_latency_ms_p50'))} / "
             f"{_fmt(r.get('plan_latency_ms_p95'))} ms |",
             f"| models | `{r.get('model_dir', '')}` ({r.get('backend', '')}) |",
             f"| sim speed | at most {r.get('real_time_factor', '?')}× real time (plan latency is wall time) |",
             f"| sim time / wall time | {_fmt(r.get('sim_time_s'))} s / {_fmt(r.get('wall_time_s'))} s |",
             f"| recording | `{bag_rel}` |", ""]
    stages = r.get("stage_ms_median") or {}
    if stages:
        lines += ["Median stage timings of a plan cycle [ms]:", "",
                  "| " + " | ".join(stages) + " |", "|" + "---|" * len(stages),
                  "| " + " | ".join(_fmt(v) for v in stages.values()) + " |", ""]
    ex = r.get("executor") or {}
    keys = [k for k in ("chunks_received", "chunks_executed", "chunks_rejected", "last_rejection_reason",
                        "chunk_to_trajectory_ms_p50", "chunk_to_trajectory_ms_p95") if ex.get(k)]
    if keys:
        short = {k: ex[k][:200] + ("…" if len(ex[k]) > 200 else "") for k in keys}
        lines += ["Executor (last /diagnostics): " + "; ".join(f"{k} = {v}" for k, v in short.items()), ""]
    when = ", ".join(f"{t:.1f}" for t in layout["row_stamps_s"])
    lines += ["## What the planner saw and imagined", "",
              f"Rows: {layout['rows']} planning cycles (sim time {when} s). Column 1: the real camera images (left, "
              "right, wrist stacked); columns 2–"
              f"{layout['cols']}: the {layout['imagined_frames']} frames the world model imagined for the chosen "
              "chunk (model rate 5 Hz).", "", "![strip](strip.png)", "",
              "## Episode", "", "Top: the cameras; bottom: the views the world model imagined at the end of the "
              "latest planned chunk.", "", "![episode](episode.gif)", "",
              "## Recorded topics", "", "| topic | messages |", "|---|---|",
              *[f"| `{k}` | {v} |" for k, v in sorted(data["counts"].items())], ""]
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    return "\n".join(lines)
