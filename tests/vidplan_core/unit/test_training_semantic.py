"""The demo's semantic model: SigLIP sigmoid loss, word-level tokenizer, training and loading by the scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidplan_core.data.schema import DatasetMeta, EpisodeMeta, save_meta, write_shard
from vidplan_core.models.siglip import build_tokenizer
from vidplan_core.spaces import VIEW_ORDER, ActionNormalizer
from vidplan_core.training.config import load_train_config
from vidplan_core.training.recipes import make_recipe
from vidplan_core.training.siglip import siglip_loss
from vidplan_core.training.trainer import Trainer

CAPTIONS = ["put the red cube in the bowl", "touch the blue ball", "push the green cylinder to the left"]
COLOURS = [(220, 30, 30), (30, 30, 220), (30, 200, 30)]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models train ~10× faster on one thread than on two contended ones (the CI machine is shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _dataset(root, n_per=2, T=6, H=16, W=16):
    eps = []
    acts = []
    for i in range(n_per * len(CAPTIONS)):
        c = i % len(CAPTIONS)
        rng = np.random.default_rng(i)
        frames = rng.integers(0, 60, (T, 3, 3, H, W)).astype(np.uint8)
        frames[:, :, :, 4:12, 4:12] = np.array(COLOURS[c], np.uint8)[None, None, :, None, None]  # the object
        a = rng.uniform(0, 1, (T, 7)).astype(np.float32)
        acts.append(a)
        write_shard(root / "shards" / f"e{i}.safetensors", {
            "frames": frames, "actions": a, "ee_pose": a[:, :6].copy(), "gripper": a[:, 6].copy(),
            "joint_positions": np.zeros((T, 7), np.float32), "timestamps_ns": np.arange(T, dtype=np.int64)})
        eps.append(EpisodeMeta(index=i, name=f"e{i}", shard=f"shards/e{i}.safetensors", length=T,
                               instruction=CAPTIONS[c], success=True, split="val" if i == 0 else "train"))
    save_meta(root, DatasetMeta(image_size={v: (H, W) for v in VIEW_ORDER}, episodes=eps, joint_names=list("abcdefg"),
                                action_stats=ActionNormalizer.fit(np.concatenate(acts)).state_dict()))


def test_siglip_loss_prefers_matching_pairs():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    labels = torch.eye(4, dtype=torch.bool)
    scale, bias = torch.tensor(np.log(10.0)), torch.tensor(-5.0)
    matched = siglip_loss(e, e, labels, scale, bias)
    shuffled = siglip_loss(e, e[[1, 2, 3, 0]], labels, scale, bias)
    assert matched < shuffled
    # several positives per row (frames sharing a caption) are allowed
    multi = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.bool)
    v = siglip_loss(e[:3], e[:2], multi, scale, bias)
    assert torch.isfinite(v) and v > 0
    # gradients reach the temperature and bias
    s, b = scale.clone().requires_grad_(), bias.clone().requires_grad_()
    siglip_loss(e, e, labels, s, b).backward()
    assert s.grad is not None and b.grad is not None


def test_tokenizer_pads_and_knows_unseen_template_words():
    tok = build_tokenizer(CAPTIONS, max_len=12)
    enc = tok(["touch the red ball", "fly away"], padding="max_length", max_length=12, truncation=True)
    ids = enc["input_ids"]
    assert len(ids[0]) == 12 and ids[0][4] == tok.eos_token_id and ids[0][5] == tok.pad_token_id
    assert tok.unk_token_id not in ids[0][:4]  # every word known
    assert ids[1][:2] == [tok.unk_token_id, tok.unk_token_id]


def test_train_semantic_and_load_with_scorer(tmp_path):
    from vidplan_core.models import SemanticScorer

    _dataset(tmp_path / "ds")
    cfg = load_train_config("tiny-semantic", [f"data.root={tmp_path / 'ds'}", f"train.output_dir={tmp_path / 'run'}",
                                              "train.max_steps=40", "train.val_every=40", "train.ckpt_every=40",
                                              "train.progress=false", "data.batch_size=12", "optim.lr=3e-3"])
    res = Trainer(cfg, make_recipe(cfg)).run()
    assert res["val"]["retrieval_acc"] == pytest.approx(1.0)  # held-out episode: its caption ranks first
    scorer = SemanticScorer.from_pretrained(res["final_dir"])
    emb = scorer.encode_text(CAPTIONS)
    img = torch.full((3, 16, 16), 0.1)
    img[:, 4:12, 4:12] = torch.tensor(COLOURS[1]).float()[:, None, None] / 255
    scores = torch.stack([scorer.score(img[None], e)[0] for e in emb])
    assert int(scores.argmax()) == 1 and torch.isfinite(scores).all()
