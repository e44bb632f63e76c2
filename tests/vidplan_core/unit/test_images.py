"""vidplan_core.images — the one image decoder: raw encodings and CompressedImage (JPEG, PNG) decode to the same
RGB pixels on rclpy messages, rosbags-deserialised messages and duck-typed ones; what cannot be decoded is named."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from vidplan_core.images import (
    ImageDecodeError,
    compressed_format,
    decode_image,
    encode_compressed,
    image_size,
    validate_image,
)


def _scene(h: int = 36, w: int = 64) -> np.ndarray:
    """A smooth colour image with a sharp square (JPEG-friendly but not flat)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 90)], axis=2).astype(np.uint8)
    img[h // 3:h // 3 + 8, w // 2:w // 2 + 8] = (230, 20, 20)
    return img


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip_on_rclpy_messages(fmt):
    img = _scene()
    form, data = encode_compressed(img, fmt, quality=95)
    assert compressed_format(form) == fmt
    msg = CompressedImage(format=form, data=data)  # rclpy stores uint8[] as array('B')
    assert validate_image(msg) is None
    out = decode_image(msg)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert image_size(msg) == img.shape[:2]
    if fmt == "png":
        np.testing.assert_array_equal(out, img)  # lossless
    else:
        mse = np.mean((out.astype(float) - img.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 35.0, mse  # JPEG q95 (4:2:0 chroma: colour edges blur by a pixel)
        centre = out[img.shape[0] // 3 + 4, img.shape[1] // 2 + 4]
        assert tuple(int(c) for c in centre) == pytest.approx((230, 20, 20), abs=12)


def test_rosbags_deserialised_compressed_image_decodes():
    """Bags: rosbags gives the data as a numpy uint8 array; the same decoder, the same pixels."""
    from vidplan_core.data.messages import Codec

    codec = Codec()
    C, H, T = (codec.type(t) for t in ("sensor_msgs/msg/CompressedImage", "std_msgs/msg/Header",
                                       "builtin_interfaces/msg/Time"))
    form, data = encode_compressed(_scene(), "png")
    msg = C(header=H(stamp=T(sec=1, nanosec=0), frame_id="left"), format=form,
            data=np.frombuffer(data, dtype=np.uint8))
    back = codec.deserialize(codec.serialize(msg), "sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(decode_image(back), _scene())


def test_format_strings():
    assert compressed_format("jpeg") == "jpeg" and compressed_format("JPG") == "jpeg"
    assert compressed_format("rgb8; jpeg compressed bgr8") == "jpeg"
    assert compressed_format("bgr8; png compressed bgr8") == "png"
    assert compressed_format("") == ""  # not given: the data's signature decides
    assert compressed_format("16UC1; compressedDepth png") is None
    assert compressed_format("tiff") is None


def test_grey_and_untyped_formats_decode_to_rgb():
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).save(buf, format="PNG")
    out = decode_image(SimpleNamespace(format="", data=buf.getvalue()))  # format left empty by some drivers
    assert out.shape == (3, 4, 3) and (out[..., 0] == out[..., 2]).all() and out[2, 3, 1] == 220


def test_bad_compressed_data_is_named():
    form, data = encode_compressed(_scene(), "jpeg")
    # a header that parses, pixels cut off: validation (header only) passes, decoding names the failure
    cut = CompressedImage(format=form, data=data[: len(data) * 9 // 10])
    assert validate_image(cut) is None
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        decode_image(cut, where="bag ep_0: /cameras/left/image_raw/compressed")
    try:
        decode_image(cut, where="bag ep_0: /cameras/left/image_raw/compressed")
    except ImageDecodeError as exc:
        assert exc.reason.startswith("bag ep_0: /cameras/left/image_raw/compressed: ")
    # a 16-bit depth PNG is refused at validation, by its pixel mode
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(buf, format="PNG")
    reason = validate_image(CompressedImage(format="png", data=buf.getvalue()))
    assert reason is not None and "pixel mode" in reason
    with pytest.raises(ValueError, match="uint8 RGB"):
        encode_compressed(np.zeros((4, 4), np.uint8))


def test_unpad_undoes_openpi_resize_with_pad():
    """`vidplan serve openpi` gets DROID clients' 224×224 resize_with_pad images: the central band is the picture."""
    from openpi_client import image_tools

    from vidplan_core.planning.openpi_serving import unpad

    img = _scene(180, 320)
    padded = image_tools.resize_with_pad(img, 224, 224)
    band = unpad(padded, 320 / 180)
    assert band.shape == (126, 224, 3)
    assert band[0].mean() > 20 and padded[0].max() == 0  # the bars are gone, the picture starts at the band
    assert unpad(img, 320 / 180) is img  # a non-square image is left as it is


def test_an_unreadable_compressed_image_gives_the_same_reason_every_time():
    """Pillow names its in-memory file by address ("cannot identify image file <_io.BytesIO object at 0x...>"): the
    reason drops it, so the same bad message always gives the same diagnostic (a fuzz test found the difference)."""
    from vidplan_core.images import validate_image

    msg = CompressedImage(format="", data=[255, 216, 255])  # a JPEG marker and nothing else
    first = validate_image(msg)
    assert first and "could not be read" in first and " at 0x" not in first
    assert all(validate_image(msg) == first for _ in range(3))
