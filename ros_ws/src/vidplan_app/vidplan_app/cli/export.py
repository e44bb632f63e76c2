"""``vidplan export``: planner graphs → ONNX (+ TensorRT engines) with a verified manifest."""

from __future__ import annotations

from pathlib import Path

import typer

from vidplan_app.cli import app


def _ints(s: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in s.split(",") if x.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {s!r}") from exc
    if not vals or min(vals) < 1:
        raise typer.BadParameter(f"{what} must be ≥ 1, got {s!r}")
    return vals


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="model directory (autoencoder/, world_model/, flow_map/, uq_head/, "
                                "reward_head/, semantic/) or, with --random, a config name/file (tiny, demo, full)"),
    out: Path = typer.Option(..., "--out", "-o", help="export directory (ONNX files + manifest.json)"),
    random: bool = typer.Option(False, "--random", help="random weights of the named config (speed tests)"),
    flow_steps: str = typer.Option("1", help="flow-map step counts K to export, e.g. 1,2,4"),
    batch: str = typer.Option("1,16", help="candidate batch sizes N of the rollout/heads/semantic graphs"),
    grad_batch: str = typer.Option("1", help="batch sizes of the value-and-grad graph"),
    simplify: str = typer.Option("onnxslim", help="onnxslim | onnxsim | none"),
    verify: bool = typer.Option(True, help="check every graph against torch in onnxruntime"),
    tol: float = typer.Option(1e-4, help="verification tolerance (relative)"),
    compact: bool = typer.Option(True, help="one deduplicated weights file shared by all graphs, float16 storage "
                                 "where exact, no exporter debug metadata (lossless)"),
    opset: int = typer.Option(18),
    kappa: float = typer.Option(3.0, help="κ of the refinement objective's exp(−κ·h̄) weight"),
    tensorrt: bool = typer.Option(False, "--tensorrt", help="also build TensorRT engines (needs TensorRT + GPU)"),
    precision: str = typer.Option("fp16", help="TensorRT precision: fp16 | bf16 | fp32"),
    engine_dir: Path | None = typer.Option(None, help="TensorRT engine cache (default OUT/engines)"),
) -> None:
    """Export the planner's graphs to ONNX, simplify, verify against torch and write a manifest. An export inside
    the model directory (e.g. MODEL/onnx) is recorded in the model directory's index (bundle.json)."""
    if simplify not in ("onnxslim", "onnxsim", "none"):
        raise typer.BadParameter(f"--simplify must be onnxslim, onnxsim or none, got {simplify!r}")
    if precision not in ("fp16", "bf16", "fp32"):
        raise typer.BadParameter(f"--precision must be fp16, bf16 or fp32, got {precision!r}")
    ks, ns, gs = _ints(flow_steps, "--flow-steps"), _ints(batch, "--batch"), _ints(grad_batch, "--grad-batch")
    from vidplan_core.export.onnx_export import export_planner
    from vidplan_core.runtime.base import BackendError
    from vidplan_core.runtime.bundle import random_planner_models
    from vidplan_core.runtime.graphs import ObjectiveConfig
    from vidplan_core.runtime.loader import load_planner_models

    try:
        models = random_planner_models(model) if random else load_planner_models(model)
    except BackendError as exc:  # a missing directory or part (named by the index's key), parts that do not fit
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    manifest = export_planner(models, out, flow_steps=ks, batch_sizes=ns, grad_batch_sizes=gs,
                              objective=ObjectiveConfig(kappa=kappa), opset=opset, simplify=simplify,  # type: ignore[arg-type]
                              verify=verify, tol=tol, progress=lambda s: typer.echo(f"  {s}"), compact=compact)
    typer.echo(f"exported {len(manifest.graphs)} graphs to {out} (manifest.json)")
    if not random:
        from vidplan_core.runtime.bundle_index import record_export

        index = record_export(model, out)  # an export inside the model directory is named in its bundle.json
        if index is not None:
            typer.echo(f"updated {index}")
    if tensorrt:
        from vidplan_core.runtime.tensorrt_engines import EngineCache

        cache = EngineCache(engine_dir or out / "engines")
        engines = cache.build_all(manifest, precision)  # type: ignore[arg-type]
        typer.echo(f"TensorRT engines ({precision}): {len(engines)} in {cache.dir} "
                   f"(built now: {len(cache.built)}, cached: {len(engines) - len(cache.built)})")
