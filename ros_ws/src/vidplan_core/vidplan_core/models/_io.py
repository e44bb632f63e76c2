"""Strict, pickle-free persistence shared by every model (diffusers layout: ``config.json`` + safetensors).

diffusers' own ``from_pretrained`` initialises missing weights randomly with only a warning; a model that
silently runs with random weights is exactly the failure we must not have, so :meth:`StrictLoadMixin.load`
checks every key and shape and raises a :class:`ModelLoadError` naming the file and the mismatches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import torch

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "ModelLoadError", "StrictLoadMixin", "check_finite", "check_shape"]

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
CONFIG_NAME = "config.json"
T = TypeVar("T")


class ModelLoadError(RuntimeError):
    """A model directory is missing files, or its weights do not match its config (names file and keys)."""


def check_shape(name: str, x: torch.Tensor, expected: tuple[int | None, ...]) -> None:
    """Raise ``ValueError`` naming ``name``, the expected and received shapes (``None`` = any size)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape, strict=True))
    if not ok:
        exp = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name}: expected shape {exp}, got {tuple(x.shape)}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN/Inf (skipped while tracing/exporting or on meta tensors)."""
    exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
    if x.device.type == "meta" or torch.jit.is_tracing() or torch.compiler.is_compiling() or exporting:
        return
    try:
        finite = bool(torch.isfinite(x).all())
    except Exception:
        return
    if not finite:
        n = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: {n} non-finite (NaN/Inf) values in input of shape {tuple(x.shape)}")


class StrictLoadMixin:
    """Adds :meth:`load` (strict, safetensors-only) and :meth:`save` (optionally half-precision storage) to a
    diffusers ``ModelMixin`` + ``ConfigMixin`` class."""

    def save(self, directory: str | Path, storage_dtype: torch.dtype | None = None) -> None:
        """``save_pretrained(directory)``; with ``storage_dtype`` (``torch.float16``) the floating-point
        parameters are stored in that dtype and :meth:`load` casts them back to the model's dtype.

        Halves the weights file. The weights are rounded once, at saving; buffers (action statistics, scales) stay
        in full precision. A model loaded from such a file computes in float32 with exactly representable weights,
        which is also what lets an ONNX export store them as float16 without changing a single output.
        """
        from safetensors.torch import save_file

        self.save_pretrained(directory)  # type: ignore[attr-defined]
        if storage_dtype is None:
            return
        params = {n for n, _ in self.named_parameters()}  # type: ignore[attr-defined]
        state = {k: (v.to(storage_dtype) if k in params and v.is_floating_point() else v).detach().cpu().contiguous()
                 for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        save_file(state, str(Path(directory) / WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def load(cls: type[T], path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> T:
        """Load a model saved with ``save_pretrained(path)`` from a local directory.

        Raises:
            ModelLoadError: directory/file missing, weights missing or unexpected, or a shape mismatch
                (message lists expected vs received shapes).
        """
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file, w_file = path / CONFIG_NAME, path / WEIGHTS_NAME
        missing = [str(f) for f in (cfg_file, w_file) if not f.is_file()]
        if missing:
            raise ModelLoadError(f"cannot load {cls.__name__} from {path}: missing file(s) {missing} "
                                 f"(expected a diffusers-style directory with {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            config = json.loads(cfg_file.read_text())
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{cfg_file}: invalid JSON ({exc})") from exc
        cls_name = config.get("_class_name")
        if cls_name is not None and cls_name != cls.__name__:
            raise ModelLoadError(f"{cfg_file}: holds a {cls_name}, expected a {cls.__name__}")
        try:
            model = cls.from_config(config)  # type: ignore[attr-defined]
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{cfg_file}: config does not build a {cls.__name__}: {exc}") from exc
        state = load_file(str(w_file))
        own = model.state_dict()
        problems: list[str] = []
        for k in sorted(set(own) - set(state)):
            problems.append(f"missing weight '{k}' (expected shape {tuple(own[k].shape)})")
        for k in sorted(set(state) - set(own)):
            problems.append(f"unexpected weight '{k}' of shape {tuple(state[k].shape)}")
        for k in sorted(set(own) & set(state)):
            if own[k].shape != state[k].shape:
                problems.append(f"'{k}': config expects shape {tuple(own[k].shape)}, file has {tuple(state[k].shape)}")
        if problems:
            head = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
            raise ModelLoadError(f"weights in {w_file} do not match config {cfg_file}:\n  " + "\n  ".join(head))
        model.load_state_dict(state, strict=True)
        model.eval()
        return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
