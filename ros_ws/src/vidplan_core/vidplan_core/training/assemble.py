"""Put trained models together into the planner's model directory (what ``load_planner_models`` and export read).

Layout written (every part a diffusers/transformers-style directory, safetensors only)::

    OUT/autoencoder/   ← runs/vae/final
    OUT/world_model/   ← runs/world-model/final   (the teacher; kept for evaluation and re-distillation)
    OUT/flow_map/      ← runs/flow-map/final
    OUT/uq_head/       ← runs/heads/final/uq_head
    OUT/reward_head/   ← runs/heads/final/reward_head
    OUT/semantic/      ← runs/semantic/final
    OUT/policy/        ← runs/bc/final            (optional: the behaviour-cloned nominal policy, when trained)
    OUT/tiny_decoder/  ← runs/tiny-decoder/final  (optional: the semantic reward's distilled decoder, when trained)
    OUT/text_conditioner/ ← given by name only    (optional: the semantic model the world model was trained with,
                                                  when OUT/semantic/ is a scorer retrained after it)
    OUT/bundle.json    the index naming every part and the model configuration (vidplan_core.runtime.loader)
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["OPTIONAL_PARTS", "PARTS", "assemble_model_dir", "bundle_sources", "config_name_of", "default_sources"]

PARTS = ("autoencoder", "world_model", "flow_map", "uq_head", "reward_head", "semantic")
OPTIONAL_PARTS = ("policy", "tiny_decoder", "text_conditioner")  # copied when their source directory exists


def default_sources(runs: str | Path) -> dict[str, Path]:
    """Where each part lies in a runs directory trained with the bundled configs (``runs/<kind>/final``)."""
    r = Path(runs)
    return {"autoencoder": r / "vae" / "final", "world_model": r / "world-model" / "final",
            "flow_map": r / "flow-map" / "final", "uq_head": r / "heads" / "final" / "uq_head",
            "reward_head": r / "heads" / "final" / "reward_head", "semantic": r / "semantic" / "final",
            "policy": r / "bc" / "final", "tiny_decoder": r / "tiny-decoder" / "final"}


def bundle_sources(model_dir: str | Path) -> tuple[dict[str, Path], dict]:
    """Every part of an assembled model directory as sources for :func:`assemble_model_dir`, and the settings its
    index records (``config``, ``semantic_view``, ``centring_view``, ``map_views``; None where unset).

    For re-assembling a bundle with one part replaced (a scorer retrained on decoded views, kept apart from the text
    embedding the world model was trained with: ``text_conditioner``). Raises BundleError for a directory whose
    index names missing parts.
    """
    from vidplan_core.runtime.bundle_index import read_bundle_index

    idx = read_bundle_index(model_dir)
    sources = {part: idx.path(part) for part in idx.parts}
    settings = {"config": idx.config, "semantic_view": idx.semantic_view, "centring_view": idx.centring_view,
                "map_views": None if idx.map_views is None else list(idx.map_views)}
    return sources, settings


def config_name_of(sources: dict[str, str | Path]) -> str | None:
    """The model configuration the flow map was trained with: ``model`` of its run's ``config.yaml`` (the run
    directory above ``final/``), a suite YAML by its stem; None when there is no such file."""
    import yaml

    fm = sources.get("flow_map")
    for d in ((Path(fm).parent, Path(fm)) if fm is not None else ()):
        f = d / "config.yaml"
        if f.is_file():
            try:
                model = (yaml.safe_load(f.read_text()) or {}).get("model")
            except (yaml.YAMLError, AttributeError, OSError):
                return None
            if isinstance(model, str) and model:
                return model if model in ("tiny", "demo", "full") else Path(model).stem
    return None


def assemble_model_dir(out: str | Path, sources: dict[str, str | Path], overwrite: bool = False,
                       check: bool = True, storage_dtype: str = "float32", config: str | None = None,
                       teacher: bool = True, semantic_view: int | None = None, centring_view: int | None = None,
                       map_views: list[int] | None = None) -> Path:
    """Copy the trained parts into ``out`` (see the module docstring), write its index ``bundle.json`` and, with
    ``check``, load them all as the planner does (strict loading; latent shapes and text-embedding width consistent).

    ``config``: the model configuration's name recorded in the index (default: :func:`config_name_of`).
    ``teacher=False`` leaves the EDM teacher (``world_model``) out: planning needs only the flow map (deployment
    bundles such as models/demo); the index then names no teacher.

    ``semantic_view`` / ``centring_view`` / ``map_views``: the views the semantic scorer scores, centres on and
    returns maps of (0 left, 1 right, 2 wrist; recorded in the index; None = the loader's defaults 0, 2,
    [centring_view]). A grounded scorer with the gripper-referenced centring term wants exterior map views.

    ``storage_dtype="float16"`` re-saves the world-model parts and the policy (not the semantic model) with
    half-precision parameters: half the bytes, weights rounded once (see
    :meth:`vidplan_core.models._io.StrictLoadMixin.save`).

    Raises:
        FileNotFoundError: a part is missing (naming it and its source); FileExistsError: ``out`` exists and
        ``overwrite`` is False; ValueError: unknown ``storage_dtype``; vidplan_core.runtime.base.BackendError /
        ModelLoadError from the check. Nothing in ``out`` is touched before the new directory loads.
    """
    out = Path(out)
    if storage_dtype not in ("float32", "float16"):
        raise ValueError(f"storage_dtype must be float32 or float16, got {storage_dtype!r}")
    parts = [p for p in PARTS if teacher or p != "world_model"]
    missing = [f"{p} (expected at {sources.get(p)})" for p in parts
               if sources.get(p) is None or not Path(sources[p]).is_dir()]
    if missing:
        raise FileNotFoundError("cannot assemble the model directory; missing part(s): " + "; ".join(missing))
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite to replace it")
    parts += [p for p in OPTIONAL_PARTS if sources.get(p) is not None and Path(sources[p]).is_dir()]
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:  # built in a temporary directory that any failure removes
        for p in parts:
            shutil.copytree(sources[p], tmp / p)
        if storage_dtype == "float16":
            import torch

            from vidplan_core.models.configs import SUITE_SECTIONS

            for p, cls in SUITE_SECTIONS.items():
                if p in parts:
                    cls.load(tmp / p).save(tmp / p, storage_dtype=torch.float16)
            if "policy" in parts:
                from vidplan_core.models.bc_policy import BCPolicy

                BCPolicy.load(tmp / "policy").save(tmp / "policy", storage_dtype=torch.float16)
        from vidplan_core.runtime.bundle_index import write_bundle_index

        write_bundle_index(tmp, config=config or config_name_of(sources), semantic_view=semantic_view,
                           centring_view=centring_view, map_views=map_views)
        if check:
            from vidplan_core.runtime.loader import load_planner_models

            load_planner_models(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():  # replaced only once the new directory is complete and loads: a failure keeps the old one
        shutil.rmtree(out)
    tmp.rename(out)
    return out
