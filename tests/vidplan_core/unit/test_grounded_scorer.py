"""Grounded semantic scorer: real all-MiniLM-L6-v2 text encoder, patch maps, phrase bank, targets, training data
that never names a held-out combination, workspace crops, and MuJoCo label rendering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidplan_core.calibration import load_calibration, workspace_crop_box, workspace_crop_boxes
from vidplan_core.models._io import ModelLoadError
from vidplan_core.models.autoencoder import VideoAutoencoder
from vidplan_core.models.grounded import GroundedScorer, SentenceEncoder
from vidplan_core.spaces import crop_view
from vidplan_core.training.config import HELD_OUT_COMBINATIONS
from vidplan_core.training.grounded import (
    LABEL_FIRST_OBJECT,
    GroundedObjective,
    GroundingFrames,
    PhraseBank,
    attribute_maps,
    evaluate_attributes,
    evaluate_grounding,
    roundtrip_frames,
    target_fraction,
)

pytestmark = pytest.mark.unit
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "cyan"]
SHAPES = ["cube", "cylinder", "ball"]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.from_pretrained()


@pytest.fixture(scope="module")
def scorer(encoder):
    torch.manual_seed(0)
    return GroundedScorer(embed_dim=16, channels=(8, 16, 16)).attach_text_encoder(encoder).eval()


def test_text_encoder_is_the_pretrained_minilm(encoder):
    """Real weights: related instructions are closer than unrelated ones, and the output is unit norm."""
    e = encoder.encode(["touch the red cube", "touch the red block", "put the green ball in the bowl"])
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1  # a random BERT would not rank "block" next to "cube"
    # padding does not change the embedding (mean pooling over real tokens only)
    ids = torch.from_numpy(encoder.tokenize(["touch the red cube"]))
    assert torch.allclose(encoder(ids), e[:1], atol=1e-5)


def test_scorer_shapes_gradients_and_interface(scorer):
    imgs = torch.rand(2, 5, 3, 48, 80, requires_grad=True)
    t = scorer.encode_text(["touch the red cube"])
    assert t.shape == (1, 16)
    out = scorer.score_and_centroid(imgs, t[0])
    assert out["score"].shape == (2, 5) and out["map"].shape == (2, 5, 24, 40) and out["centroid"].shape == (2, 5, 2)
    assert ((out["score"] >= 0) & (out["score"] <= 1)).all()
    out["score"].sum().backward()
    assert imgs.grad is not None and imgs.grad.abs().sum() > 0  # refinement can back-propagate to the pixels
    pooled, patches = scorer.image_features(imgs.detach())
    assert pooled.shape == (2, 5, 16) and patches.shape == (2, 5, 24, 40, 16)
    with pytest.raises(ValueError, match="3, H, W"):
        scorer.image_features(torch.rand(2, 4, 8, 8))


def test_save_load_roundtrip_keeps_outputs_and_leaves_text_encoder_out(scorer, encoder, tmp_path):
    scorer.save(tmp_path / "g")
    names = {p.name for p in (tmp_path / "g").iterdir()}
    assert names == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert (tmp_path / "g" / "diffusion_pytorch_model.safetensors").stat().st_size < 1_000_000  # no BERT inside
    loaded = GroundedScorer.from_pretrained_dir(tmp_path / "g")
    x = torch.rand(1, 3, 48, 80)
    t = scorer.encode_text(["the bowl"])
    assert torch.allclose(loaded.similarity_map(x, loaded.encode_text(["the bowl"])), scorer.similarity_map(x, t),
                          atol=1e-5)
    import json

    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    cfg["text_encoder"] = "some-other-encoder"
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="some-other-encoder"):
        GroundedScorer.from_pretrained_dir(tmp_path / "g")


def test_linear_text_projection_is_additive_and_round_trips(encoder, tmp_path):
    """text_hidden=0: one linear map, so a mean of sentence embeddings projects to the mean of their projections
    (what lets a colour and a shape learned apart compose); the config carries it through save/load."""
    lin = GroundedScorer(embed_dim=16, channels=(8, 16, 16), text_hidden=0).attach_text_encoder(encoder).eval()
    mlp = GroundedScorer(embed_dim=16, channels=(8, 16, 16)).attach_text_encoder(encoder).eval()
    assert len(lin.text_proj) == 1 and len(mlp.text_proj) == 3
    a, b = encoder.encode(["the red object", "the cube"])
    with torch.no_grad():
        for model, additive in ((lin, True), (mlp, False)):
            mid = model.text_proj(((a + b) / 2)[None])[0]
            mean = (model.text_proj(a[None])[0] + model.text_proj(b[None])[0]) / 2
            assert torch.allclose(mid, mean, atol=1e-5) is additive
    lin.save(tmp_path / "lin")
    loaded = GroundedScorer.from_pretrained_dir(tmp_path / "lin")
    assert loaded.config.text_hidden == 0
    t = ["touch the red cube"]
    assert torch.allclose(loaded.encode_text(t), lin.encode_text(t), atol=1e-6)


def test_phrase_bank_flags_held_out_and_rejects_unknown():
    bank = PhraseBank(COLOURS, SHAPES, [tuple(p) for p in HELD_OUT_COMBINATIONS])
    held = {bank.texts[i] for i, h in enumerate(bank.held) if h}
    assert "touch the red cylinder" in held and "the red cylinder" in held
    assert "touch the red cube" not in held and "the red object" not in held
    # every colour and every shape still appears in a training phrase with some partner
    train_refs = {bank.refs[i] for i, h in enumerate(bank.held) if not h and bank.refs[i][0] == "object"}
    assert {r[1] for r in train_refs} == set(COLOURS) and {r[2] for r in train_refs} == set(SHAPES)
    with pytest.raises(ValueError, match="unknown"):
        PhraseBank(COLOURS, SHAPES, [("violet", "cube")])


def _fake_data(n=6, h=96, w=160, held_object=False):
    """Labelled frames: object i is a square of its colour (index) at a known place."""
    rng = np.random.default_rng(0)
    frames = np.zeros((n, 3, h, w, 3), np.uint8)
    labels = np.zeros((n, 3, h, w), np.uint8)
    oc = np.full((n, 8), -1, np.int8)
    osh = np.full((n, 8), -1, np.int8)
    for k in range(n):
        for i in range(3):
            c, s = (i + k) % 6, i % 3
            if not held_object and (COLOURS[c], SHAPES[s]) in {tuple(p) for p in HELD_OUT_COMBINATIONS}:
                c = 6 + (i % 2)  # pink / orange: never held out
            oc[k, i], osh[k, i] = c, s
            y, x = rng.integers(8, h - 16), rng.integers(8 + 40 * i, 40 * i + 30)
            labels[k, :, y:y + 8, x:x + 8] = LABEL_FIRST_OBJECT + i
            frames[k, :, y:y + 8, x:x + 8] = (40 * c) % 255
    return {"frames": frames, "labels": labels, "obj_colour": oc, "obj_shape": osh, "seed": np.arange(n),
            "colours": COLOURS, "shapes": SHAPES, "files": ["fake"]}


def test_target_fraction_is_the_covered_fraction():
    lab = np.zeros((8, 8), np.uint8)
    lab[0:2, 0:4] = LABEL_FIRST_OBJECT + 1  # object 1: red ball
    lab[4:8, 4:8] = 2  # the bowl
    oc, osh = np.array([0, 0, 2, -1]), np.array([0, 2, 0, -1])
    t = target_fraction(lab, ("object", "red", "ball"), oc, osh, COLOURS, SHAPES, pool=4)
    assert t.tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert target_fraction(lab, ("bowl",), oc, osh, COLOURS, SHAPES, pool=4).tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert float(target_fraction(lab, ("colour", "red"), oc, osh, COLOURS, SHAPES, pool=4).sum()) == 0.5
    assert float(target_fraction(lab, ("object", "blue", "cube"), oc, osh, COLOURS, SHAPES, pool=4).sum()) == 0.0


def test_training_items_never_name_a_held_out_combination():
    bank = PhraseBank(COLOURS, SHAPES, [tuple(p) for p in HELD_OUT_COMBINATIONS])
    ds = GroundingFrames(_fake_data(), bank, image_pool=2)
    seen = set()
    for _ in range(4):
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, 48, 80) and item["target"].shape == (24, 40)
            assert not bank.held[item["phrase"]], bank.texts[item["phrase"]]
            seen.add(bank.refs[item["phrase"]][0])
    assert seen == {"object", "colour", "shape", "bowl", "robot"}
    with pytest.raises(ValueError, match="held-out object"):
        GroundingFrames(_fake_data(held_object=True), bank)


def test_near_miss_items_name_an_absent_object_sharing_colour_or_shape():
    """hard_negative_prob: items name an object that is not in the scene but shares its colour or its shape with
    one in view; their target map is empty; never a held-out combination."""
    bank = PhraseBank(COLOURS, SHAPES, [tuple(p) for p in HELD_OUT_COMBINATIONS])
    data = _fake_data()
    ds = GroundingFrames(data, bank, image_pool=2, hard_negative_prob=0.99)
    near = 0
    for i in range(len(ds)):
        item = ds[i]
        ref = bank.refs[item["phrase"]]
        assert not bank.held[item["phrase"]]
        n = i // 3
        scene = {(COLOURS[c], SHAPES[s]) for c, s in zip(data["obj_colour"][n], data["obj_shape"][n], strict=True)
                 if c >= 0}
        if ref[0] == "object" and (ref[1], ref[2]) not in scene:
            assert any(ref[1] == c or ref[2] == s for c, s in scene), (ref, scene)
            assert float(item["target"].sum()) == 0.0
            near += 1
    assert near >= len(ds) * 0.9
    with pytest.raises(ValueError, match="hard_negative_prob"):
        GroundingFrames(data, bank, hard_negative_prob=1.0)


def test_shape_items_in_luminance_and_look_alike_items():
    """gray_shape_prob: items naming a shape alone show one grey image (equal channels, a gain of the luminance);
    other items keep their colours. lookalike_prob: when two objects of one colour and different shapes are in
    view, items name one of them; never a held-out combination. brightness_jitter: one gain per item."""
    bank = PhraseBank(COLOURS, SHAPES, [tuple(p) for p in HELD_OUT_COMBINATIONS])
    data = _fake_data()
    data["frames"][..., 1] //= 3  # coloured objects: the channels differ wherever an object is
    data["frames"][..., 2] //= 7
    ds = GroundingFrames(data, bank, image_pool=2, gray_shape_prob=1.0, seed=3)
    kinds = set()
    for _ in range(6):
        for i in range(len(ds)):
            item = ds[i]
            kind = bank.refs[item["phrase"]][0]
            kinds.add(kind)
            img = item["image"]
            grey = bool(torch.equal(img[0], img[1]) and torch.equal(img[1], img[2]))
            assert grey is (kind == "shape"), (kind, bank.texts[item["phrase"]])
            if kind == "shape":
                rgb = F.avg_pool2d(torch.from_numpy(data["frames"][i // 3, i % 3]).permute(2, 0, 1).float()[None]
                                   / 255.0, 2)[0]
                lum = (rgb * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
                on = lum > 0.05
                gain = img[0][on] / lum[on]
                assert float(gain.min()) > 0.69 and float(gain.max()) < 1.31 and float(gain.std()) < 1e-4
    assert "shape" in kinds and "object" in kinds

    data = _fake_data()
    data["obj_colour"][:, :2] = COLOURS.index("orange")  # objects 0 and 1: an orange cube and cylinder
    data["obj_colour"][:, 2] = COLOURS.index("pink")  # object 2, a ball: no look-alike
    ds = GroundingFrames(data, bank, image_pool=2, lookalike_prob=1.0)
    for i in range(len(ds)):
        ref = bank.refs[ds[i]["phrase"]]
        n = i // 3
        assert not bank.held[ds[i]["phrase"]]
        twins = {(COLOURS[data["obj_colour"][n, o]], SHAPES[data["obj_shape"][n, o]]) for o in (0, 1)}
        assert ref[0] == "object" and (ref[1], ref[2]) in twins, (ref, twins)
    jit = GroundingFrames(data, bank, image_pool=2, brightness_jitter=0.5)  # one gain per item, in [0.5, 1.5]
    gains = []
    for i in range(len(jit)):
        ref = F.avg_pool2d(torch.from_numpy(data["frames"][i // 3, i % 3]).permute(2, 0, 1).float()[None] / 255.0,
                           2)[0]
        on = (ref > 0.02) & (ref < 0.6)  # not clipped at 1.5
        g = jit[i]["image"][on] / ref[on]
        assert float(g.std()) < 1e-4 and 0.5 <= float(g.mean()) <= 1.5
        gains.append(float(g.mean()))
    assert np.std(gains) > 0.05
    for bad in ({"gray_shape_prob": 1.5}, {"lookalike_prob": -0.1}, {"brightness_jitter": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GroundingFrames(data, bank, **bad)


def test_decoded_items_show_the_round_tripped_views_with_the_camera_labels():
    """roundtrip_frames: views encoded then decoded (pooled; full_size repeats back); items drawn with
    roundtrip_prob show them and keep the camera frame's target; shapes that do not match are named."""
    data = _fake_data(n=3)
    ae = VideoAutoencoder(kind="pixel", view_height=48, view_width=80, patch=4)  # an exact round trip
    rt = roundtrip_frames(data["frames"], ae, image_pool=2, batch=2)
    pooled = F.avg_pool2d(torch.from_numpy(data["frames"]).permute(0, 1, 4, 2, 3).float().flatten(0, 1), 2)
    assert rt.shape == (3, 3, 48, 80, 3) and rt.dtype == np.uint8
    assert np.abs(rt.astype(int) - pooled.reshape(3, 3, 3, 48, 80).permute(0, 1, 3, 4, 2).round().numpy()).max() <= 1
    full = roundtrip_frames(data["frames"], ae, image_pool=2, full_size=True)
    assert full.shape == data["frames"].shape
    assert (full[:, :, ::2, ::2] == rt).all() and (full[:, :, 1::2, 1::2] == rt).all()

    bank = PhraseBank(COLOURS, SHAPES, [tuple(p) for p in HELD_OUT_COMBINATIONS])
    marked = np.full_like(rt, 255)  # white views: recognisable, unlike the fake frames
    plain = GroundingFrames(data, bank, seed=5)
    dec = GroundingFrames(data, bank, seed=5, roundtrip=marked, roundtrip_prob=1.0)
    for i in range(len(dec)):
        a, b = plain[i], dec[i]
        assert bool((b["image"] == 1.0).all()) and not bool((a["image"] == 1.0).all())
    assert any(float(dec[i]["target"].sum()) > 0 for i in range(len(dec)))  # the camera frame's labels
    with pytest.raises(ValueError, match="do not match"):
        GroundingFrames(data, bank, roundtrip=marked[:, :, :24], roundtrip_prob=0.5)
    with pytest.raises(ValueError, match="needs the decoded views"):
        GroundingFrames(data, bank, roundtrip_prob=0.5)


def test_factorised_tower_sees_shape_in_luminance_and_colour_in_a_window(tmp_path):
    """colour_channels > 0: the tower reads the luminance only and the colour branch RGB through a 3x3 window.
    Two images of one luminance and different hues differ only through the colour branch (identical embeddings
    with its output zeroed); a pixel's hue reaches no patch beyond the window; the option saves and loads."""
    torch.manual_seed(0)
    sc = GroundedScorer(embed_dim=16, channels=(8, 16, 16), colour_channels=8).eval()
    assert sc.stem[0].in_channels == 1
    a = torch.rand(2, 3, 48, 80)
    luma = torch.tensor([0.299, 0.587, 0.114])
    # the same luminance, another hue: move along a direction orthogonal to the luminance weights
    d = torch.tensor([0.587, -0.299, 0.0])
    b = a + 0.1 * d[None, :, None, None]
    assert torch.allclose((a * luma[:, None, None]).sum(1), (b * luma[:, None, None]).sum(1), atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(sc.patch_embeddings(a), sc.patch_embeddings(b), atol=1e-4)
        sc.out_colour.weight.zero_()
        sc.out_colour.bias.zero_()
        assert torch.allclose(sc.patch_embeddings(a), sc.patch_embeddings(b), atol=1e-5)
    sc2 = GroundedScorer(embed_dim=16, channels=(8, 16, 16), colour_channels=8).eval()
    with torch.no_grad():  # a hue change at one pixel: only the patches whose window holds it see it
        sc2.out2.weight.zero_()
        sc2.out4.weight.zero_()
        c = a.clone()
        c[:, :, 20, 40] += 0.2 * d
        diff = (sc2.patch_embeddings(c) - sc2.patch_embeddings(a)).abs().sum((0, 1))
        assert diff[10, 20] > 0 and float(diff.sum() - diff[9:12, 19:22].sum()) == 0.0
    sc.save(tmp_path / "f")
    assert GroundedScorer.from_pretrained_dir(tmp_path / "f").config.colour_channels == 8


def test_attribute_maps_and_the_attribute_loss():
    """attribute_maps: per cell the shape / colour class (1 + index) of the object covering at least half of it,
    0 where no object is, -1 at its edges. The objective's attribute term trains its heads (gradients reach the
    tower), needs the maps, and is absent at attribute_weight 0."""
    lab = np.zeros((8, 8), np.uint8)
    lab[0:4, 0:4] = LABEL_FIRST_OBJECT + 1  # object 1 (green ball) fills cell (0, 0)
    lab[4:6, 4:8] = LABEL_FIRST_OBJECT  # object 0 (red cube) covers half of cell (1, 1)
    lab[0:1, 4:8] = 2  # the bowl: not an object
    oc, osh = np.array([0, 1, -1]), np.array([0, 2, -1])
    shape, colour = attribute_maps(lab, oc, osh, pool=4)
    assert shape.tolist() == [[3, 0], [0, 1]] and colour.tolist() == [[2, 0], [0, 1]]
    lab[4:5, 4:8] = 0  # a quarter: an edge
    assert attribute_maps(lab, oc, osh, pool=4)[0].tolist() == [[3, 0], [0, -1]]

    data = _fake_data()
    bank = PhraseBank(COLOURS, SHAPES, [])
    items = [GroundingFrames(data, bank)[i] for i in range(6)]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items])
             for k in ("image", "target", "phrase", "shape_map", "colour_map")}
    assert batch["shape_map"].shape == batch["target"].shape and int(batch["shape_map"].max()) >= 1
    sent = torch.randn(len(bank.texts), 384)
    torch.manual_seed(0)
    plain = GroundedObjective(GroundedScorer(embed_dim=16, channels=(8, 16, 16)), pos_weight=5.0)
    assert set(plain(batch["image"], sent[batch["phrase"]], batch["target"])) == {"loss"}
    obj = GroundedObjective(GroundedScorer(embed_dim=16, channels=(8, 16, 16)), pos_weight=5.0, attribute_weight=1.0,
                            n_colours=len(COLOURS), n_shapes=len(SHAPES))
    out = obj(batch["image"], sent[batch["phrase"]], batch["target"], batch["shape_map"], batch["colour_map"])
    assert torch.allclose(out["loss"], out["phrase_loss"] + out["shape_loss"] + out["colour_loss"])
    out["loss"].backward()
    assert obj.shape_head.weight.grad.abs().sum() > 0 and obj.scorer.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="shape_map"):
        obj(batch["image"], sent[batch["phrase"]], batch["target"])
    with pytest.raises(ValueError, match="n_colours"):
        GroundedObjective(GroundedScorer(embed_dim=16, channels=(8, 16, 16)), attribute_weight=1.0)


def test_attribute_evaluation_counts_what_a_colour_only_scorer_gets_right():
    """evaluate_attributes with a scorer that sees colour and no shape (its map lights every pixel of the named
    colour; shape phrases light nothing): the colour alone and the instruction against same-shape rivals always
    win, the shape alone and the instruction against a same-colour look-alike never do."""
    n, h, w = 4, 96, 160
    frames = np.zeros((n, 3, h, w, 3), np.uint8)
    labels = np.zeros((n, 3, h, w), np.uint8)
    objs = [("orange", "cube"), ("orange", "cylinder"), ("pink", "cube")]  # target, look-alike, same shape
    oc = np.full((n, 8), -1, np.int8)
    osh = np.full((n, 8), -1, np.int8)
    for i, (c, s) in enumerate(objs):
        oc[:, i], osh[:, i] = COLOURS.index(c), SHAPES.index(s)
        y, x = 16 + 24 * i, 24 + 40 * i
        labels[:, :, y:y + 8, x:x + 8] = LABEL_FIRST_OBJECT + i
        frames[:, :, y:y + 8, x:x + 8, 0] = 20 * (COLOURS.index(c) + 1)
    data = {"frames": frames, "labels": labels, "obj_colour": oc, "obj_shape": osh, "seed": np.arange(n)}
    bank = PhraseBank(COLOURS, SHAPES, [])

    class ColourOnly(torch.nn.Module):
        def project_text(self, s):
            return s

        def image_features(self, img):  # (B, 3, 48, 80) → the red channel at the label cells (B, 24, 40)
            return None, F.avg_pool2d(img, 2)[:, 0]

        def map_logits(self, p, k):
            ref = bank.refs[int(k)]
            if ref[0] not in ("object", "colour"):
                return torch.zeros_like(p)
            return (torch.round(p * 255 / 20) == COLOURS.index(ref[1]) + 1).float()

    rep = evaluate_attributes(ColourOnly(), data, bank, torch.arange(len(bank.texts)))
    assert {k: (v["correct"], v["n"]) for k, v in rep.items()} == {
        "shape_alone": (0, 12), "colour_alone": (12, 12), "vs_same_colour": (0, 12), "vs_same_shape": (12, 12)}


def test_grounding_with_attributes_in_one_pass_counts_what_each_counts_alone(scorer, encoder):
    """evaluate_grounding(attributes=True) counts the attributes on the same views from the same image features:
    the numbers evaluate_attributes gives, and its own grounding numbers unchanged."""
    data = _fake_data()
    bank = PhraseBank(COLOURS, SHAPES, [])
    sent = encoder.encode(bank.texts)
    both = evaluate_grounding(scorer, data, bank, sent, attributes=True)
    alone = evaluate_grounding(scorer, data, bank, sent)
    assert {k: v for k, v in both.items() if k != "attributes"} == alone and alone["n"] > 0
    counts = {k: (v["correct"], v["n"]) for k, v in both["attributes"].items()}
    assert counts == {k: (v["correct"], v["n"]) for k, v in evaluate_attributes(scorer, data, bank, sent).items()}
    assert sum(n for _c, n in counts.values()) > 0
    with pytest.raises(ValueError, match="only='target'"):
        evaluate_grounding(scorer, data, bank, sent, only="all", attributes=True)


def test_objective_learns_and_evaluation_counts_right(scorer, encoder):
    """A few steps on fake frames lower the loss; the evaluation scores a map that is right by construction as
    100 % and one that points at another object as 0 %."""
    data = _fake_data()
    bank = PhraseBank(COLOURS, SHAPES, [])
    ds = GroundingFrames(data, bank)
    sent = encoder.encode(bank.texts)
    torch.manual_seed(0)
    obj = GroundedObjective(GroundedScorer(embed_dim=16, channels=(8, 16, 16)), pos_weight=5.0)
    opt = torch.optim.Adam(obj.parameters(), lr=3e-3)
    items = [ds[i] for i in range(len(ds))]
    batch = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in ("image", "target", "phrase")}
    losses = []
    for _ in range(25):
        loss = obj(batch["image"], sent[batch["phrase"]], batch["target"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]

    class Oracle(torch.nn.Module):  # a map equal to the named object's mask (or to another object's)
        def __init__(self, wrong: bool):
            super().__init__()
            self.wrong, self.q = wrong, []

        def eval(self):
            return self

        def project_text(self, s):
            return s

        def image_features(self, img):
            return None, img

        def map_logits(self, patches, text):
            return self.q.pop(0)

    rep = evaluate_grounding(scorer, data, bank, sent)  # an untrained scorer runs end to end
    assert rep["n"] == 6 * 3 * 4 and 0 <= rep["accuracy"] <= 1
    for wrong in (False, True):
        o = Oracle(wrong)
        maps = []
        for n in range(6):
            for v in range(3):
                for _ in range(4):
                    idx = 1 if wrong else 0
                    maps.append(target_fraction(data["labels"][n, v], ("object", COLOURS[data["obj_colour"][n, idx]],
                                                SHAPES[data["obj_shape"][n, idx]]), data["obj_colour"][n],
                                                data["obj_shape"][n], COLOURS, SHAPES, pool=4))
        o.q = [torch.stack(maps)]
        rep = evaluate_grounding(o, data, bank, sent, batch=10_000)
        assert rep["accuracy"] == (0.0 if wrong else 1.0)
        assert rep["ci95"][0] <= rep["accuracy"] <= rep["ci95"][1]
        assert rep["tracked"] <= rep["top_patch_accuracy"]
        if not wrong:  # the maps peak on the target with logits ≥ 0 (σ ≥ 0.5): tracked everywhere
            assert rep["top_patch_accuracy"] == rep["tracked"] == 1.0
            # shifted below 0 they still point at the target, but no longer confidently: never tracked
            o.q = [torch.stack(maps) - 1.5]
            low = evaluate_grounding(o, data, bank, sent, batch=10_000)
            assert low["accuracy"] == low["top_patch_accuracy"] == 1.0 and low["tracked"] == 0.0


def test_workspace_crop_holds_the_workspace_at_the_model_aspect():
    cal = load_calibration()
    ws = {"x": [0.33, 0.71], "y": [-0.31, 0.31], "z": [0.0, 0.12]}
    boxes = workspace_crop_boxes(cal, ws, 160 / 96)
    assert set(boxes) == {"left", "right"}  # the wrist camera moves: never cropped
    corners = np.array([[x, y, z] for x in ws["x"] for y in ws["y"] for z in ws["z"]])
    for name, (x0, y0, x1, y1) in boxes.items():
        cam = cal.cameras[name]
        assert abs((x1 - x0) / (y1 - y0) - 160 / 96) < 0.02
        assert 0 <= x0 < x1 <= cam.width and 0 <= y0 < y1 <= cam.height
        T = np.linalg.inv(cam.transform())
        pc = corners @ T[:3, :3].T + T[:3, 3]
        u, v = cam.fx * pc[:, 0] / pc[:, 2] + cam.cx, cam.fy * pc[:, 1] / pc[:, 2] + cam.cy
        assert (u >= x0).all() and (u <= x1).all() and (v >= y0).all() and (v <= y1).all()
        assert (x1 - x0) < 0.7 * cam.width  # a real zoom
    with pytest.raises(ValueError, match="behind the camera"):
        workspace_crop_box(cal.cameras["left"], np.array([[0.05, 2.0, 0.52]]), 1.0)
    with pytest.raises(ValueError, match="'z'"):
        workspace_crop_boxes(cal, {"x": [0, 1], "y": [0, 1], "z": [1, 0]}, 1.0)


def test_crop_view_cuts_then_resizes():
    img = np.zeros((180, 320, 3), np.uint8)
    img[50:60, 100:120] = 255
    out = crop_view(img, [100, 50, 120, 60], 10, 20)
    assert out.shape == (10, 20, 3) and out.min() == 255
    assert crop_view(img, None, 90, 160).shape == (90, 160, 3)
    with pytest.raises(ValueError, match="leaves no image"):
        crop_view(img, [400, 0, 500, 10], 10, 10)
