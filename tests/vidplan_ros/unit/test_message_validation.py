"""The message validators of the nodes (vidplan_ros.conversions): every malformed message yields a reason naming what
is wrong, never an exception; image_to_array is the one image decoder (vidplan_core.images, raw and compressed) and
raises ImageDecodeError (a ValueError) with that reason. On real ROS message classes and on duck-typed stand-ins."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CompressedImage, Image, JointState

from vidplan_ros.conversions import (
    IMAGE_ENCODINGS,
    ImageDecodeError,
    image_to_array,
    validate_image,
    validate_joint_state,
    validate_pose,
)

ARM = [f"panda_joint{i}" for i in range(1, 8)]


def _img(h=2, w=3, enc="rgb8", step=None, data=None) -> Image:
    ch = IMAGE_ENCODINGS.get(enc, 3)
    step = w * ch if step is None else step
    return Image(height=h, width=w, encoding=enc, step=step, data=bytes(step * h) if data is None else data)


# ------------------------------------------------------------------------------------------------------ images
def test_valid_images_decode_to_rgb():
    assert validate_image(_img()) is None
    data = bytes([1, 2, 3, 4, 5, 6, 0, 0] * 2)  # 2x2 bgr8 with 2 bytes of row padding
    img = image_to_array(Image(height=2, width=2, encoding="bgr8", step=8, data=data))
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [3, 2, 1] and img[0, 1].tolist() == [6, 5, 4]
    rgba = image_to_array(Image(height=1, width=2, encoding="RGBA8", step=8, data=bytes([9, 8, 7, 255, 1, 2, 3, 0])))
    assert rgba.tolist() == [[[9, 8, 7], [1, 2, 3]]]  # case-insensitive encoding, alpha dropped
    mono = image_to_array(Image(height=1, width=2, encoding="mono8", step=2, data=bytes([5, 6])))
    assert mono.tolist() == [[[5, 5, 5], [6, 6, 6]]]
    # a duck-typed message with a list of ints decodes the same
    duck = SimpleNamespace(height=1, width=1, encoding="rgb8", step=3, data=[10, 20, 30])
    assert image_to_array(duck).tolist() == [[[10, 20, 30]]]


@pytest.mark.parametrize("msg, words", [
    (_img(h=0, w=0, data=b""), "invalid image size 0x0"),  # issue 13: was decoded to an empty image and planned on
    (_img(h=4, w=0, step=0, data=b""), "invalid image size 0x4"),
    (_img(h=0, w=4, data=b""), "invalid image size 4x0"),
    (_img(enc="yuv422", step=6, data=bytes(12)), "unsupported image encoding 'yuv422'"),
    (_img(enc="32FC1", step=12, data=bytes(24)), "unsupported image encoding '32FC1'"),
    (_img(enc="", step=9, data=bytes(18)), "unsupported image encoding ''"),
    (_img(step=8), "image step 8 is less than width 3 x 3 bytes"),
    (_img(data=bytes(17)), "image data is 17 bytes, too small for step 9 x height 2 = 18"),
    (_img(data=bytes(19)), "image data is 19 bytes, too large for step 9 x height 2 = 18"),
    (_img(data=b""), "image data is 0 bytes, too small"),
    (CompressedImage(format="jpeg", data=b"\x89PNG\r\n\x1a\n"), "says format 'jpeg' but its data is PNG"),
    (CompressedImage(format="16UC1; compressedDepth png", data=b"\x89PNG\r\n\x1a\n"), "is not supported"),
    (CompressedImage(format="jpeg", data=b"GIF89a"), "is neither JPEG nor PNG"),
    (CompressedImage(format="jpeg", data=b""), "compressed image has no data"),
    (SimpleNamespace(height=-1, width=2, encoding="rgb8", step=6, data=b""), "must be non-negative integers"),
    (SimpleNamespace(height=1.5, width=2, encoding="rgb8", step=6, data=b""), "must be non-negative integers"),
    (SimpleNamespace(height=1, width=1, encoding=None, step=3, data=b"abc"), "unsupported image encoding None"),
    (SimpleNamespace(height=1, width=1, encoding="rgb8", step=3, data=None), "has no length"),
    (SimpleNamespace(pixels=b""), "a SimpleNamespace is not an image"),
])
def test_invalid_images_are_named_and_not_decoded(msg, words):
    reason = validate_image(msg)
    assert reason is not None and words in reason, reason
    with pytest.raises(ImageDecodeError) as e:
        image_to_array(msg)
    assert e.value.reason == reason and str(e.value) == reason
    assert isinstance(e.value, ValueError)


def test_undecodable_data_is_an_image_decode_error():
    # right length, but items that are not bytes
    with pytest.raises(ImageDecodeError, match="not bytes"):
        image_to_array(SimpleNamespace(height=1, width=1, encoding="rgb8", step=3, data=[1, 2, 300]))


# ------------------------------------------------------------------------------------------------------ joint states
def _js(names=(*ARM, "panda_finger_joint1"), positions=None, velocity=(), effort=()) -> JointState:
    positions = [0.1] * len(names) if positions is None else positions
    return JointState(name=list(names), position=list(positions), velocity=list(velocity), effort=list(effort))


def test_valid_joint_states():
    assert validate_joint_state(_js()) is None
    assert validate_joint_state(_js(), required=ARM) is None
    assert validate_joint_state(_js(velocity=[0.0] * 8, effort=[float("nan")] * 8)) is None  # NaN efforts: tolerated
    assert validate_joint_state(JointState()) is None  # nothing in it, nothing wrong with it
    assert validate_joint_state(SimpleNamespace(name=("a",), position=(1.0,))) is None


@pytest.mark.parametrize("msg, kw, words", [
    (_js(positions=[]), {}, "JointState has 8 names but 0 positions"),  # issue 13: IndexError ended the planner
    (_js(positions=[0.0] * 7), {}, "8 names but 7 positions"),
    (_js(names=ARM, positions=[0.0] * 8), {}, "7 names but 8 positions"),
    (_js(positions=[0.0, 0.0, 0.0, float("nan"), 0.0, 0.0, 0.0, 0.0]), {},
     "non-finite joint position(s) for panda_joint4"),
    (_js(positions=[float("inf")] + [0.0] * 7), {}, "for panda_joint1"),
    (_js(velocity=[0.0] * 3), {}, "8 names but 3 velocity values"),
    (_js(effort=[0.0] * 9), {}, "8 names but 9 effort values"),
    (_js(names=["a", "b", "a"]), {}, "duplicate joint names ['a']"),
    (_js(names=["panda_finger_joint1"]), {"required": ARM}, "lacks joint(s) ['panda_joint1'"),
    (SimpleNamespace(name=[1, 2], position=[0.0, 0.0]), {}, "joint names must be strings"),
    (SimpleNamespace(name=["a"], position=["x"]), {}, "joint positions are not numbers"),
    (SimpleNamespace(name=["a"], position=None), {}, "joint positions are not numbers"),
    (SimpleNamespace(position=[1.0]), {}, "not a JointState"),
])
def test_malformed_joint_states_are_named(msg, kw, words):
    reason = validate_joint_state(msg, **kw)
    assert reason is not None and words in reason, reason


# ------------------------------------------------------------------------------------------------------ poses
def _pose(x=0.3, qw=1.0, qx=0.0) -> Pose:
    p = Pose()
    p.position.x, p.position.z = x, 0.5
    p.orientation.w, p.orientation.x = qw, qx
    return p


def test_poses():
    assert validate_pose(_pose()) is None
    assert validate_pose(_pose(qw=2.0)) is None  # not normalised: fine (normalised when converted)
    assert "non-finite position [nan, 0.0, 0.5]" in validate_pose(_pose(x=float("nan")))
    assert "non-finite orientation" in validate_pose(_pose(qx=float("inf")))
    assert "quaternion of zero norm" in validate_pose(_pose(qw=0.0))
    assert "norm overflows" in validate_pose(_pose(qw=1e200, qx=1e200))  # found by the hypothesis fuzzing
    assert "not a Pose" in validate_pose(SimpleNamespace(position=None))
