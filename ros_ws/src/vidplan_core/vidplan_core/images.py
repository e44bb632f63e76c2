"""THE image decoder of the suite: ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` → (H, W, 3) uint8 RGB.

Used by the planner node (live and replayed cameras), ``vidplan data convert``, ``vidplan eval bag`` and the demo
report, so a recording decodes to the same pixels everywhere. Functions only read attributes, so they accept rclpy
messages, ``rosbags``-deserialised ones and duck-typed stand-ins alike.

Raw images: encodings rgb8, bgr8, rgba8, bgra8, mono8 (ROS ``sensor_msgs/image_encodings``).
Compressed images: JPEG and PNG (what ``compressed_image_transport`` and ZED/DROID recordings carry), decoded with
Pillow. The ``format`` field is read the way image_transport writes it — ``"jpeg"``, ``"png"`` or
``"rgb8; jpeg compressed bgr8"`` — and the bytes' own signature must agree with it. Depth images
(``compressedDepth``, 16-bit encodings) are refused: the models take colour only.

Validation returns the reason as one line of text (None when fine) and never raises, so a node can log it, put it
in its diagnostics and drop the message; :func:`decode_image` raises :class:`ImageDecodeError` with that reason.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

__all__ = ["COMPRESSED_FORMATS", "IMAGE_ENCODINGS", "ImageDecodeError", "compressed_format", "decode_image",
           "encode_compressed", "image_size", "is_compressed", "validate_image"]

# encoding → channels (1 byte each) of the sensor_msgs/Image encodings decoded here
IMAGE_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
# CompressedImage formats decoded here, with the file signatures that identify them
COMPRESSED_FORMATS: dict[str, tuple[bytes, ...]] = {"jpeg": (b"\xff\xd8\xff",), "png": (b"\x89PNG\r\n\x1a\n",)}


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded; ``reason`` is the one-line explanation (also the exception text)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason



def _pil_reason(exc: BaseException) -> str:
    """Pillow's message without the repr of its in-memory file ("cannot identify image file <_io.BytesIO object at
    0x7f...>"): the same bad data must give the same reason every time (diagnostics, de-duplicated logs)."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__

def _count(value: Any) -> int | None:
    """A non-negative integer field as int, or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if n == value and n >= 0 else None


def is_compressed(msg: Any) -> bool:
    """True for a ``sensor_msgs/CompressedImage`` (it has ``format`` and no ``encoding``)."""
    return not hasattr(msg, "encoding") and hasattr(msg, "format")


# Pillow pixel modes decoded here (8-bit colour / grey; not I;16 depth, CMYK, float)
_COLOUR_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA")


def _as_bytes(data: Any) -> bytes | None:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if hasattr(data, "typecode"):  # rclpy's array('B') for uint8[] fields
        return data.tobytes() if data.typecode in ("B", "b") else None
    if isinstance(data, np.ndarray):
        return data.astype(np.uint8, copy=False).tobytes() if data.dtype == np.uint8 else None
    try:
        return bytes(np.asarray(list(data), dtype=np.uint8))  # array('B'), a list of ints
    except (TypeError, ValueError, OverflowError):
        return None


def compressed_format(fmt: str) -> str | None:
    """The codec a CompressedImage ``format`` string names: "jpeg", "png", "" (not given) or None (refused).

    image_transport writes ``"<source encoding>; <codec> compressed <encoding>"`` (e.g. ``"rgb8; jpeg compressed
    bgr8"``); drivers often write just ``"jpeg"``. Depth (``compressedDepth``) and 16-bit sources are refused.
    """
    f = str(fmt).strip().lower()
    if not f:
        return ""
    if "compresseddepth" in f or "16uc1" in f or "32fc1" in f or "16" in f.split(";")[0]:
        return None
    if "png" in f:
        return "png"
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    return None


def _sniff(data: bytes) -> str | None:
    for name, sigs in COMPRESSED_FORMATS.items():
        if any(data.startswith(s) for s in sigs):
            return name
    return None


def _validate_compressed(msg: Any) -> tuple[str | None, bytes | None]:
    fmt = getattr(msg, "format", "")
    codec = compressed_format(fmt)
    if codec is None:
        return (f"compressed image format {fmt!r} is not supported; expected a colour image in "
                f"{' or '.join(COMPRESSED_FORMATS)} (e.g. 'jpeg', 'rgb8; jpeg compressed bgr8')"), None
    data = _as_bytes(getattr(msg, "data", None))
    if data is None:
        return f"compressed image data of type {type(getattr(msg, 'data', None)).__name__} is not bytes", None
    if not data:
        return "compressed image has no data", None
    found = _sniff(data)
    if found is None:
        return f"compressed image data ({len(data)} bytes) is neither JPEG nor PNG (format {fmt!r})", None
    if codec and found != codec:
        return f"compressed image says format {fmt!r} but its data is {found.upper()}", None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header, not the pixels
            mode, (w, h) = im.mode, im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        return (f"compressed image header ({len(data)} bytes, {found.upper()}) could not be read: "
                f"{_pil_reason(exc)}"), None
    if mode not in _COLOUR_MODES:
        return f"compressed image of pixel mode {mode!r} is not an 8-bit colour or grey image", None
    if w == 0 or h == 0:
        return f"invalid compressed image size {w}x{h} (width x height)", None
    return None, data


def validate_image(msg: Any) -> str | None:
    """Why an image message cannot be decoded, or None when :func:`decode_image` will decode it (for a
    CompressedImage, as far as its header says: pixel data truncated after a valid header fails only when decoded,
    which keeps validation cheap for every image of a 15 Hz camera).

    Raw checks: height and width > 0, an encoding of :data:`IMAGE_ENCODINGS` (case-insensitive), ``step`` ≥
    width × channels (bytes) and ``len(data) == step × height`` exactly. Compressed checks: a colour JPEG/PNG format
    (:func:`compressed_format`) whose data carries that format's signature and a readable 8-bit colour/grey header.
    """
    if is_compressed(msg):
        return _validate_compressed(msg)[0]
    if not hasattr(msg, "encoding"):
        return (f"a {type(msg).__name__} is not an image: expected sensor_msgs/Image or sensor_msgs/CompressedImage")
    h, w, step = (_count(getattr(msg, k, None)) for k in ("height", "width", "step"))
    if h is None or w is None or step is None:
        return (f"invalid image header: height {getattr(msg, 'height', None)!r}, width "
                f"{getattr(msg, 'width', None)!r}, step {getattr(msg, 'step', None)!r} must be non-negative integers")
    if h == 0 or w == 0:
        return f"invalid image size {w}x{h} (width x height): both must be > 0"
    enc = getattr(msg, "encoding", "")
    ch = IMAGE_ENCODINGS.get(enc.lower()) if isinstance(enc, str) else None
    if ch is None:
        return f"unsupported image encoding {enc!r}; expected {', '.join(IMAGE_ENCODINGS)}"
    if step < w * ch:
        return f"image step {step} is less than width {w} x {ch} bytes per pixel ({enc})"
    try:
        n = len(msg.data)
    except TypeError:
        return f"image data of type {type(msg.data).__name__} has no length"
    if n != step * h:
        return (f"image data is {n} bytes, too {'small' if n < step * h else 'large'} for step {step} x height "
                f"{h} = {step * h} bytes ({w}x{h} {enc})")
    return None


def _decode_compressed(msg: Any) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    reason, data = _validate_compressed(msg)
    if reason is not None:
        raise ImageDecodeError(reason)
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise ImageDecodeError(f"compressed image ({len(data)} bytes) could not be decoded: "
                               f"{_pil_reason(exc)}") from exc


def decode_image(msg: Any, where: str = "") -> np.ndarray:
    """An Image or CompressedImage message → (H, W, 3) uint8 RGB array (a copy).

    Args:
        msg: the message (rclpy, rosbags or duck-typed).
        where: prefixed to the error text (e.g. ``"bag ep_0003: /cameras/left/image_raw"``).
    Raises:
        ImageDecodeError: the message fails :func:`validate_image` or its compressed data does not decode.
    """
    try:
        if is_compressed(msg):
            return _decode_compressed(msg)
        return _decode_raw(msg)
    except ImageDecodeError as exc:
        if where:
            raise ImageDecodeError(f"{where}: {exc.reason}") from exc
        raise


def _decode_raw(msg: Any) -> np.ndarray:
    reason = validate_image(msg)
    if reason is not None:
        raise ImageDecodeError(reason)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    enc = msg.encoding.lower()
    ch = IMAGE_ENCODINGS[enc]
    data = msg.data
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list of ints (duck-typed messages)
        try:
            buf = np.asarray(data, dtype=np.uint8)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ImageDecodeError(f"image data is not bytes: {exc}") from exc
    if buf.size != step * h:  # a buffer of wider items than bytes
        raise ImageDecodeError(f"image data is {buf.size} bytes, expected step {step} x height {h} = {step * h}")
    img = buf.reshape(h, step)[:, :w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return np.ascontiguousarray(img[..., :3])


def image_size(msg: Any) -> tuple[int, int]:
    """(height, width) [px] of an image message without decoding its pixels (a JPEG/PNG header is read).

    Raises:
        ImageDecodeError: as :func:`validate_image`, or compressed data whose header cannot be read.
    """
    reason = validate_image(msg)
    if reason is not None:
        raise ImageDecodeError(reason)
    if not is_compressed(msg):
        return int(msg.height), int(msg.width)
    from PIL import Image, UnidentifiedImageError

    data = _as_bytes(msg.data)
    try:
        with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header only
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"compressed image header could not be read: {_pil_reason(exc)}") from exc
    return int(h), int(w)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """(H, W, 3) uint8 RGB → (``format`` field, data) of a CompressedImage, as compressed_image_transport writes
    them (``"rgb8; jpeg compressed bgr8"`` / ``"rgb8; png compressed rgb8"``).

    Args:
        rgb: the image.
        fmt: "jpeg" or "png".
        quality: JPEG quality 1–95 (ignored for PNG).
    """
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"encode_compressed expects an (H, W, 3) uint8 RGB image, got {arr.shape} {arr.dtype}")
    if fmt not in COMPRESSED_FORMATS:
        raise ValueError(f"compressed format {fmt!r} is not supported; expected one of {list(COMPRESSED_FORMATS)}")
    buf = io.BytesIO()
    if fmt == "jpeg":
        if not 1 <= int(quality) <= 95:
            raise ValueError(f"JPEG quality must be in 1..95, got {quality}")
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        return "rgb8; jpeg compressed bgr8", buf.getvalue()
    Image.fromarray(arr).save(buf, format="PNG")
    return "rgb8; png compressed rgb8", buf.getvalue()
