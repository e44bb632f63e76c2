"""Export manifest: which ONNX files make up an exported planner, their hashes, shapes, opset and versions.

``manifest.json`` sits next to the ONNX files. Loading it verifies the sha256 of every graph file and of every
external-data file (the weights, see :mod:`vidplan_core.export.compact`) before any session is created, so a stale
or tampered export is a clear start-up error (:class:`ManifestError`), never a mid-control surprise.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidplan_core.runtime.base import BackendError

__all__ = ["MANIFEST_FORMAT", "GraphEntry", "Manifest", "ManifestError", "file_sha256", "load_manifest",
           "runtime_versions"]

MANIFEST_FORMAT = "vidplan-export/2"
_READABLE_FORMATS = ("vidplan-export/1", MANIFEST_FORMAT)  # /1: no external-data hashes
MANIFEST_NAME = "manifest.json"


class ManifestError(BackendError):
    """The export directory or its manifest is missing, malformed or does not match the files."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def runtime_versions() -> dict[str, str]:
    """Versions of the libraries an export depends on (recorded in the manifest)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "onnx", "onnxruntime", "onnxscript", "onnxslim", "onnxsim", "diffusers", "transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class GraphEntry:
    """One exported graph.

    Attributes:
        file: ONNX file name relative to the export directory.
        sha256: hex digest of the file.
        inputs / outputs: name → shape (ints; a string for a dynamic dimension).
        batch: the candidate batch size N the graph was traced for (None = dynamic / not batched).
        max_abs_err / max_rel_err: verification against torch in onnxruntime (None if not verified).
        data: external-data files the graph reads its weights from (hashed in :attr:`Manifest.data_files`).
    """

    file: str
    sha256: str
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    batch: int | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    data: list[str] = field(default_factory=list)


@dataclass
class Manifest:
    """Contents of ``manifest.json`` (see module docstring). ``data_files``: external-data file → sha256."""

    graphs: dict[str, GraphEntry]
    opset: int
    model: dict[str, Any]
    data_files: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=runtime_versions)
    format: str = MANIFEST_FORMAT
    directory: Path | None = None

    def to_json(self) -> str:
        d = {"format": self.format, "opset": self.opset, "versions": self.versions, "model": self.model,
             "graphs": {k: vars(v) for k, v in self.graphs.items()}, "data_files": self.data_files}
        return json.dumps(d, indent=2, sort_keys=True)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(self.to_json())
        return path

    def path(self, graph: str) -> Path:
        """Absolute path of a graph's file; ManifestError naming the graph when it is not in the export."""
        if graph not in self.graphs:
            raise ManifestError(f"graph '{graph}' is not in the export at {self.directory} "
                                f"(has: {sorted(self.graphs)}); re-export with it")
        return Path(self.directory or ".") / self.graphs[graph].file

    def content_sha256(self, graph: str) -> str:
        """Digest of everything a graph is built from (its file and its external-data files); equals the graph
        file's sha256 when it has no external data. Keys caches of artefacts built from the graph (TensorRT)."""
        g = self.graphs[graph]
        if not g.data:
            return g.sha256
        parts = [g.sha256] + [f"{f}:{self.data_files[f]}" for f in sorted(g.data)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_manifest(directory: str | Path, verify_hashes: bool = True) -> Manifest:
    """Read and check ``directory/manifest.json``.

    Raises:
        ManifestError: missing directory/manifest/file, unknown format, or a file whose sha256 differs from the
            manifest (the message names the file and both hashes).
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in {directory}: run `vidplan export` first")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if d.get("format") not in _READABLE_FORMATS:
        raise ManifestError(f"{path}: format {d.get('format')!r}, expected one of {_READABLE_FORMATS}")
    try:
        graphs = {k: GraphEntry(**v) for k, v in d["graphs"].items()}
        m = Manifest(graphs=graphs, opset=int(d["opset"]), model=d["model"], versions=d.get("versions", {}),
                     data_files=dict(d.get("data_files", {})), directory=directory, format=d["format"])
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: malformed manifest ({exc})") from exc
    for name, g in graphs.items():
        unlisted = sorted(set(g.data) - set(m.data_files))
        if unlisted:
            raise ManifestError(f"{path}: graph '{name}' reads external data {unlisted} that data_files does not list")
    files = [(f"graph '{name}' file", g.file, g.sha256) for name, g in graphs.items()]
    files += [("external-data file", f, sha) for f, sha in m.data_files.items()]
    for what, rel, sha in files:
        f = directory / rel
        if not f.is_file():
            raise ManifestError(f"{path}: {what} {f} is missing")
        if verify_hashes:
            digest = file_sha256(f)
            if digest != sha:
                raise ManifestError(f"{f}: sha256 {digest[:16]}… does not match the manifest ({sha[:16]}…); "
                                    "the export is stale or was modified — re-run `vidplan export`")
    return m
