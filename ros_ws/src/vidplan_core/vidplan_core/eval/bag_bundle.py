"""The model bundle ``vidplan eval-bag`` evaluates: which parts a directory holds, loaded strictly, and
why a part is missing or unreadable."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidplan_core.eval.bag_config import MODEL_READ_ERRORS, EvalBagError

__all__ = [
    "Bundle",
    "default_teacher_dir",
    "load_bundle",
    "resolve_device",
    "safetensor_errors",
    "unloadable",
    "unreadable_model_file",
]


@dataclass
class Bundle:
    """The models of a bundle directory (see the module docstring); absent optional parts are None with a reason."""

    path: Path
    autoencoder: Any
    flow_map: Any
    uq_head: Any | None
    reward_head: Any | None
    semantic_dir: Path | None
    info: dict[str, Any]
    missing: dict[str, str] = field(default_factory=dict)
    index: Any = None  # vidplan_core.runtime.bundle_index.BundleIndex

    @property
    def num_history(self) -> int:
        return int(self.flow_map.model.config.num_history)

    @property
    def horizon(self) -> int:
        return int(self.flow_map.model.config.num_future)

    @property
    def fps(self) -> float:
        return float(self.flow_map.model.config.fps)

    @property
    def view_size(self) -> tuple[int, int]:
        c = self.autoencoder.config
        return int(c.view_height), int(c.view_width)

    @property
    def views(self) -> Any:
        """The model's :class:`~vidplan_core.spaces.ViewPreparation` (workspace crops of its action maps): the
        recording's images are cut exactly as the planner node cuts live ones."""
        from vidplan_core.models.action_maps import normalised_view_geometry
        from vidplan_core.spaces import ViewPreparation

        maps = self.flow_map.model.config.action_maps
        return ViewPreparation.from_geometry(normalised_view_geometry(maps) if maps else None, *self.view_size)


def load_bundle(model_dir: str | Path, device: str = "cpu") -> Bundle:
    """Load the models eval-bag needs from a bundle directory (strict, safetensors only), through the one
    model-directory loader (:mod:`vidplan_core.runtime.loader`): the parts its index ``bundle.json`` names, or those
    of the layout when it has none.

    Raises:
        EvalBagError: the directory or a required model is missing, the index names a part that is not there (the
            message names the key and the path), a model does not load (the message of
            :class:`vidplan_core.models.ModelLoadError` names file and mismatch), or the models disagree on the
            latent shape.
    """
    from vidplan_core.models import ModelLoadError
    from vidplan_core.runtime.bundle_index import CONVENTIONS, BundleError, read_bundle_index
    from vidplan_core.runtime.loader import load_part

    root = Path(model_dir)
    if not root.is_dir():
        raise EvalBagError(f"model directory {root} does not exist")
    try:
        index = read_bundle_index(root)
    except BundleError as exc:
        raise EvalBagError(str(exc)) from exc
    sections = {"autoencoder": True, "flow_map": True, "uq_head": False, "reward_head": False}
    models: dict[str, Any] = {}
    missing: dict[str, str] = {}
    problems: list[str] = []
    for sec, required in sections.items():
        models[sec] = None
        if index.path(sec) is None:
            msg = (f"model directory {root} has no {' or '.join(n + '/' for n in CONVENTIONS[sec])} (with "
                   f"config.json)" + ("" if index.inferred else f"; its index {index.source} names no {sec}"))
            if required:
                problems.append(msg)
            else:
                missing[sec] = msg
            continue
        try:
            models[sec] = load_part(index, sec, device=device)
        except (ModelLoadError, BundleError) as exc:  # these name file and problem (a checksum mismatch, ...)
            problems.append(unloadable(f"model directory {root}: {sec}", index.path(sec), exc, str(exc)))
        except (*MODEL_READ_ERRORS, *safetensor_errors()) as exc:  # e.g. a truncated safetensors file
            problems.append(unloadable(f"model directory {root}: {sec}", index.path(sec), exc))
    if problems:
        raise EvalBagError(problems)
    lat = tuple(models["autoencoder"].latent_shape)
    for sec in ("flow_map", "uq_head", "reward_head"):
        m = models[sec]
        if m is None:
            continue
        shape = tuple(m.model.latent_shape) if sec == "flow_map" else (
            m.config.latent_channels, m.config.latent_height, m.config.latent_width)
        if shape != lat:
            problems.append(f"model directory {root}: {sec} expects latents {shape}, the autoencoder makes {lat}")
    if problems:
        raise EvalBagError(problems)
    sem = index.path("semantic")
    if sem is None:
        missing["semantic"] = f"model directory {root} has no semantic/ model"
    info: dict[str, Any] = {}
    if index.value_gamma is not None:
        info["value_gamma"] = index.value_gamma
    elif (root / "model.json").is_file():  # metadata file of earlier bundles
        try:
            info = json.loads((root / "model.json").read_text())
        except json.JSONDecodeError as exc:
            raise EvalBagError(f"{root / 'model.json'}: invalid JSON ({exc})") from exc
    return Bundle(root, models["autoencoder"], models["flow_map"], models["uq_head"], models["reward_head"], sem,
                  info, missing, index)


def safetensor_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError  # not an OSError/ValueError: the reader's own exception

    return (SafetensorError,)


def unreadable_model_file(directory: str | Path) -> tuple[Path, str] | None:
    """The first file under ``directory`` that cannot be read as what its name says (``*.safetensors``: header and
    every tensor's byte range inside the file; ``*.json``: JSON), with the reason; None when all read."""
    from safetensors import safe_open

    for f in sorted(Path(directory).rglob("*")):
        if f.suffix == ".safetensors" and f.is_file():
            try:
                with safe_open(str(f), framework="numpy") as st:
                    for key in st.keys():
                        st.get_slice(key)
            except Exception as exc:  # anything the reader raises means the file is damaged
                return f, f"truncated or corrupt: not a complete safetensors file ({type(exc).__name__}: {exc})"
        elif f.suffix == ".json" and f.is_file():
            try:
                json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                return f, f"not valid JSON ({exc})"
    return None


def unloadable(what: str, directory: Path | None, exc: BaseException, otherwise: str = "") -> str:
    """The message for a model part that raised ``exc`` while loading: the damaged file when one is found, else
    ``otherwise`` (or the exception)."""
    bad = unreadable_model_file(directory) if directory is not None and Path(directory).is_dir() else None
    if bad is not None:
        return f"{what}: {bad[0]} is {bad[1]}"
    return otherwise or f"{what} does not load from {directory}: {type(exc).__name__}: {exc}"


def default_teacher_dir(model_dir: str | Path) -> Path:
    """Where the bundle keeps its EDM teacher: the index's ``world_model`` part, else ``<model_dir>/world_model``
    (the index is checked later, with the models, after the bag)."""
    from vidplan_core.runtime.bundle_index import BundleError, read_bundle_index

    try:
        p = read_bundle_index(model_dir, check=False).path("world_model")
    except BundleError:
        p = None
    return p if p is not None else Path(model_dir) / "world_model"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalBagError(f"device {device!r}: CUDA is not available on this machine (use --device cpu)")
    return device
