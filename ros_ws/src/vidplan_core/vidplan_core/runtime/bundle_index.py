"""The index of a planner model directory (``bundle.json`` at its root): reading, inferring, writing, checksums.

A model directory ("bundle")::

    DIR/bundle.json     the index: format version, the model configuration's name, every part's relative path
    DIR/autoencoder/  DIR/flow_map/  DIR/uq_head/  DIR/reward_head/      diffusers-style (config.json + safetensors)
    DIR/world_model/                                                     optional: the EDM teacher
    DIR/tiny_decoder/                                                    optional: the distilled decoder the
                                                                         semantic reward decodes with
    DIR/semantic/                                                        SigLIP / CLIP (transformers directory) or
                                                                         the grounded scorer (diffusers-style)
    DIR/text_conditioner/                                                optional: a semantic model of the same kind
                                                                         whose text embedding conditions the world
                                                                         model and the policy (default: semantic/'s)
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

Loading the parts and making a planning backend: :mod:`vidplan_core.runtime.loader`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints

from vidplan_core.config import ConfigError, validate_model
from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.manifest import MANIFEST_NAME, file_sha256

__all__ = [
    "BACKENDS",
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
    "as_bundle_index",
    "bundle_problems",
    "infer_bundle_index",
    "parts_needed",
    "read_bundle_index",
    "record_export",
    "verify_checksums",
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
    "semantic": ("semantic",), "policy": ("policy",), "tiny_decoder": ("tiny_decoder",),
    "text_conditioner": ("text_conditioner",)}
BACKENDS = ("torch", "onnxruntime", "tensorrt")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # the files a part's checksums cover
BackendKind = Literal["torch", "onnxruntime", "tensorrt"]
# "policy": the optional behaviour-cloned nominal policy (vidplan train bc; not part of the world-model suite);
# "tiny_decoder": the optional distilled decoder of the semantic reward (vidplan train tiny-decoder);
# "text_conditioner": the optional semantic model whose text embedding the world model and the policy were trained on,
# when the scorer in "semantic" was retrained after them (the scorer's own embedding then scores, this one conditions)
PartName = Literal["autoencoder", "world_model", "flow_map", "uq_head", "reward_head", "semantic", "policy",
                   "tiny_decoder", "text_conditioner"]


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


def as_bundle_index(model_dir: str | Path | BundleIndex) -> BundleIndex:
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
        msg += "; re-index with vidplan_core.runtime.bundle_index.write_bundle_index to record them"
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
        index.require(parts_needed(backend), f"the {backend} backend")
        if backend == "torch":
            for part in PLANNER_PARTS:
                verify_checksums(index, part)
    except BundleError as exc:
        return [str(exc)]
    return []


def parts_needed(backend: str) -> tuple[str, ...]:
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return PLANNER_PARTS if backend == "torch" else ("export",)
