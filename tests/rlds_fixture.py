"""Write small RLDS datasets in the TFDS layout DROID's RLDS release has, for tests.

A version directory with ``dataset_info.json`` (splits with ``shardLengths`` and ``filepathTemplate``, int64 as
strings), ``features.json`` (DROID's documented feature tree, images shrunk to H×W) and TFRecord shards
``NAME-train.tfrecord-XXXXX-of-YYYYY``. Each record is one episode's ``tf.train.Example``, serialised as TFDS does
(see vidplan_core/data/rlds.py): nested keys joined with ``/``, every step's values of a ``steps/...`` feature
stacked and flattened into one list, float64 → float_list, bool → int64 0/1, text and JPEG images → bytes_list.
Records are framed by the ``tfrecord`` package's writer (real masked CRC-32C) — an implementation independent of the
reader under test.

Every image of episode e at step k is a flat colour: red 8·k, green 40·e + 20, blue 60·v + 30 (v = view), so a
decoded, resized frame says which (episode, step, view) it shows despite JPEG. Signals are known functions of
(e, k) (:func:`signals`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

NAME = "droid_mini"
H, W = 32, 48
CAMS = ("steps/observation/exterior_image_1_left", "steps/observation/exterior_image_2_left",
        "steps/observation/wrist_image_left")


def picture(e: int, k: int, v: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = (8 * k) % 256
    img[..., 1] = 40 * e + 20
    img[..., 2] = 60 * v + 30
    return img


def jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def signals(e: int, length: int) -> dict[str, np.ndarray]:
    """(length, d) float64: cartesian_position, gripper_position, joint_position of episode e."""
    k = np.arange(length, dtype=np.float64)
    cart = np.stack([0.4 + 0.001 * k, 0.01 * e + 0 * k, 0.3 + 0 * k, 0.1 + 0 * k, 0.2 + 0 * k, 0.3 + 0.01 * k], 1)
    joints = np.arange(7)[None, :] * 0.1 + 0.002 * k[:, None]
    return {"cart": cart, "grip": (k / max(length - 1, 1))[:, None], "joints": joints}


def instruction(e: int) -> str:
    return f"put the marker {e} in the bowl"


def file_path(e: int, success: bool) -> str:
    return f"/droid/raw/LAB/{'success' if success else 'failure'}/2023-07-0{e + 1}/trajectory.h5"


def _tensor(shape: list[int], dtype: str, cls: str = "tensor_feature.Tensor") -> dict:
    return {"pythonClassName": f"tensorflow_datasets.core.features.{cls}",
            "tensor": {"shape": {"dimensions": [str(d) for d in shape]} if shape else {}, "dtype": dtype,
                       "encoding": "none"}}


def _dict(features: dict) -> dict:
    return {"pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
            "featuresDict": {"features": features}}


def features_json() -> dict:
    """DROID's documented RLDS feature tree (features.json), images H×W."""
    text = {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}}
    image = {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
             "image": {"shape": {"dimensions": [str(H), str(W), "3"]}, "dtype": "uint8", "encodingFormat": "jpeg"}}
    scalar = lambda dtype: _tensor([], dtype, "scalar.Scalar")  # noqa: E731
    step = _dict({
        "is_first": scalar("bool"), "is_last": scalar("bool"), "is_terminal": scalar("bool"),
        "language_instruction": text, "language_instruction_2": text, "language_instruction_3": text,
        "observation": _dict({"gripper_position": _tensor([1], "float64"),
                              "cartesian_position": _tensor([6], "float64"), "joint_position": _tensor([7], "float64"),
                              "wrist_image_left": image, "exterior_image_1_left": image,
                              "exterior_image_2_left": image}),
        "action_dict": _dict({"gripper_position": _tensor([1], "float64"),
                              "cartesian_position": _tensor([6], "float64"),
                              "joint_position": _tensor([7], "float64")}),
        "discount": scalar("float32"), "reward": scalar("float32"), "action": _tensor([7], "float64")})
    return _dict({"steps": {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
                            "sequence": {"feature": step, "length": "-1"}},
                  "episode_metadata": _dict({"recording_folderpath": text, "file_path": text})})


def episode_datum(e: int, length: int, success: bool) -> dict[str, tuple[object, str]]:
    """Episode e as the flat ``{key: (values, kind)}`` TFDS writes into its tf.train.Example."""
    s = signals(e, length)
    first = [1] + [0] * (length - 1)
    datum: dict[str, tuple[object, str]] = {
        "steps/observation/cartesian_position": (s["cart"].reshape(-1).tolist(), "float"),
        "steps/observation/gripper_position": (s["grip"].reshape(-1).tolist(), "float"),
        "steps/observation/joint_position": (s["joints"].reshape(-1).tolist(), "float"),
        "steps/action_dict/cartesian_position": ((s["cart"] + 0.01).reshape(-1).tolist(), "float"),
        "steps/action_dict/gripper_position": (s["grip"].reshape(-1).tolist(), "float"),
        "steps/action_dict/joint_position": (s["joints"].reshape(-1).tolist(), "float"),
        "steps/action": (np.zeros((length, 7)).reshape(-1).tolist(), "float"),
        "steps/is_first": (first, "int"), "steps/is_last": (first[::-1], "int"),
        "steps/is_terminal": (first[::-1], "int"),
        "steps/discount": ([1.0] * length, "float"), "steps/reward": ([0.0] * (length - 1) + [1.0], "float"),
        # the instruction is missing on the first step (the reader takes the first non-empty one)
        "steps/language_instruction": ([b""] + [instruction(e).encode()] * (length - 1), "byte"),
        "steps/language_instruction_2": ([b"another wording"] * length, "byte"),
        "steps/language_instruction_3": ([b""] * length, "byte"),
        "episode_metadata/file_path": (file_path(e, success).encode(), "byte"),
        "episode_metadata/recording_folderpath": (b"/droid/raw/LAB/recordings", "byte"),
    }
    for v, key in enumerate(CAMS):
        datum[key] = ([jpeg(picture(e, k, v)) for k in range(length)], "byte")
    return datum


def write_rlds(root: Path, lengths: tuple[int, ...] = (21, 19, 16), shard_sizes: tuple[int, ...] = (2, 1),
               success: tuple[bool, ...] | None = None) -> Path:
    """Write the dataset's version directory ``root/NAME/1.0.0`` (returned): episodes of ``lengths`` steps in shards
    of ``shard_sizes`` episodes; episode e fails where ``success[e]`` is False (default: episode 1)."""
    from tfrecord import TFRecordWriter

    assert sum(shard_sizes) == len(lengths)
    success = success if success is not None else tuple(e != 1 for e in range(len(lengths)))
    vdir = root / NAME / "1.0.0"
    vdir.mkdir(parents=True)
    n, e = len(shard_sizes), 0
    for i, count in enumerate(shard_sizes):
        w = TFRecordWriter(str(vdir / f"{NAME}-train.tfrecord-{i:05d}-of-{n:05d}"))
        for _ in range(count):
            w.write(episode_datum(e, lengths[e], success[e]))
            e += 1
        w.close()
    num_bytes = sum(p.stat().st_size for p in vdir.glob("*.tfrecord-*"))
    info = {"name": NAME, "version": "1.0.0", "fileFormat": "tfrecord", "moduleName": "droid_mini.droid_mini",
            "description": "a DROID-like RLDS dataset for tests",
            "splits": [{"name": "train", "numBytes": str(num_bytes), "shardLengths": [str(c) for c in shard_sizes],
                        "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"}]}
    (vdir / "dataset_info.json").write_text(json.dumps(info, indent=2))
    (vdir / "features.json").write_text(json.dumps(features_json(), indent=4))
    return vdir
