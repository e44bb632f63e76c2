"""Training data, loss and evaluation of the grounded semantic scorer (:mod:`vidplan_core.models.grounded`).

Data: shards of simulated frames with per-pixel labels (``vidplan data grounding``;
:mod:`vidplan_sim.grounding_data` documents the layout). Every training item is one view of one sample plus a
phrase drawn from a fixed bank, and a target map: per patch of the scorer's map (output stride 2), the fraction of
the patch covered by what the phrase names.

Phrases (why: colour and shape are each supervised on their own, so combinations never named in training can be
composed from them):

* an object present in the view — the task templates ``touch the <c> <s>``, ``push the <c> <s> to the left|right``,
  ``put the <c> <s> in the bowl`` and the bare ``the <c> <s>`` → that object's pixels;
* a colour alone, ``the <c> object`` → every object of that colour; a shape alone, ``the <s>`` → every such shape;
* ``the bowl``, ``the robot arm`` → bowl / robot pixels;
* an object absent from the scene → nothing (the map must stay low everywhere);
* a *near miss* (``hard_negative_prob``, off by default): an absent object sharing its colour or its shape with one
  in view, e.g. ``touch the blue ball`` beside a blue cylinder → nothing. Aimed at the demo scorer's usual miss on
  held-out combinations, a same-colour object of the wrong shape (981 of 1239); measured, it did not reduce it
  (bench/results/grounding_recipe.md);
* a *look-alike* (``lookalike_prob``, off by default): an object in view that has a look-alike in view (the same
  colour, another shape), so its phrase can only be grounded by shape.

Shape (bench/results/grounding_attributes.md): trained on the phrases alone, the scorer learns colour and no shape
— "the cube" ranks a cube above the objects of other shapes in 0.4 of views, below chance, even on training
scenes — because an object's colour names it in most scenes. Two things change that:

* the **attribute term** of :class:`GroundedObjective` (``attribute_weight``): per patch an object covers, the
  object's shape and colour are classified from the patch embedding by training-only linear heads, so the
  embeddings must carry shape;
* **shape without colour**: items naming a shape alone may show their image in luminance (``gray_shape_prob``),
  and :class:`~vidplan_core.models.grounded.GroundedScorer` may read shape from luminance only
  (``colour_channels``), so a shape seen in some colours is recognised in another.

Decoded frames (``roundtrip``): the planner never scores camera frames but frames decoded from the world model's
latents, and a scorer trained on camera frames alone grounds 0.48 of unseen-combination instructions on workspace
crops after the demo VAE and tiny decoder, 0.83 on the camera frames (bench/results/grounding_recipe.md; training
with half the items decoded: 0.66 / 0.79). With ``roundtrip_prob`` an item's image is
the sample's views after encode → decode through a bundle's autoencoder and the decoder the planner scores with
(:func:`roundtrip_frames`); the labels are the camera frame's.

Held-out (colour, shape) combinations (``held_out``) never appear in a training phrase, and the training shards
never contain such objects at all; :func:`evaluate_grounding` measures them on scenes never seen in training.
Loss: per-patch binary cross-entropy against the covered fraction, positives weighted by ``pos_weight`` (objects
cover a few patches of hundreds).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vidplan_core.eval.metrics import wilson_interval
from vidplan_core.models.grounded import LUMA

__all__ = ["GroundedObjective", "GroundingFrames", "PhraseBank", "attribute_maps", "evaluate_attributes",
           "evaluate_grounding", "load_shards", "object_fractions",
           "roundtrip_frames", "target_fraction"]

LABEL_BOWL, LABEL_ROBOT, LABEL_FIRST_OBJECT = 2, 1, 3  # vidplan_sim.env.SimEnv.render_labels
TASK_TEMPLATES = ("touch the {c} {s}", "push the {c} {s} to the left", "push the {c} {s} to the right",
                  "put the {c} {s} in the bowl")
OBJECT_TEMPLATES = (*TASK_TEMPLATES, "the {c} {s}")


class PhraseBank:
    """Every phrase of training and evaluation, with what it refers to.

    ``refs[i]`` is ``("object", c, s)``, ``("colour", c)``, ``("shape", s)``, ``("bowl",)`` or ``("robot",)``.
    Phrases naming a held-out combination are listed too (for evaluation) but flagged in ``held``.
    """

    def __init__(self, colours: list[str], shapes: list[str], held_out: list[tuple[str, str]]):
        self.colours, self.shapes = list(colours), list(shapes)
        self.held_out = {tuple(p) for p in held_out}
        unknown = [p for p in self.held_out if p[0] not in colours or p[1] not in shapes]
        if unknown:
            raise ValueError(f"held_out names unknown combinations {unknown}; colours {colours}, shapes {shapes}")
        self.texts: list[str] = []
        self.refs: list[tuple[str, ...]] = []
        self.held: list[bool] = []
        for c in colours:
            for s in shapes:
                for t in OBJECT_TEMPLATES:
                    self._add(t.format(c=c, s=s), ("object", c, s), (c, s) in self.held_out)
        for c in colours:
            self._add(f"the {c} object", ("colour", c), False)
        for s in shapes:
            self._add(f"the {s}", ("shape", s), False)
        self._add("the bowl", ("bowl",), False)
        self._add("the robot arm", ("robot",), False)
        self.index = {t: i for i, t in enumerate(self.texts)}

    def _add(self, text: str, ref: tuple[str, ...], held: bool) -> None:
        self.texts.append(text)
        self.refs.append(ref)
        self.held.append(held)

    def object_phrases(self, c: str, s: str, templates: tuple[str, ...] = OBJECT_TEMPLATES) -> list[int]:
        return [self.index[t.format(c=c, s=s)] for t in templates]


def load_shards(pattern: str | Path) -> dict[str, np.ndarray]:
    """Concatenate the ``.npz`` shards matching ``pattern`` (a glob); ValueError when none match or when their
    colour/shape lists differ."""
    files = sorted(glob.glob(str(pattern)))
    files = [f for f in files if not f.endswith(".partial.npz")]
    if not files:
        raise ValueError(f"no grounding shards match {pattern} (make them with `vidplan data grounding`)")
    parts = [dict(np.load(f)) for f in files]
    for p, f in zip(parts[1:], files[1:], strict=True):
        if list(p["colours"]) != list(parts[0]["colours"]) or list(p["shapes"]) != list(parts[0]["shapes"]):
            raise ValueError(f"{f}: colours/shapes differ from {files[0]}")
    out = {k: np.concatenate([p[k] for p in parts]) for k in ("frames", "labels", "obj_colour", "obj_shape", "seed")}
    out["colours"] = [str(c) for c in parts[0]["colours"]]
    out["shapes"] = [str(s) for s in parts[0]["shapes"]]
    out["files"] = files
    return out


@torch.no_grad()
def roundtrip_frames(frames: np.ndarray, autoencoder: nn.Module, decoder: nn.Module | None = None,
                     image_pool: int = 2, batch: int = 32, full_size: bool = False) -> np.ndarray:
    """Views as the planner's semantic reward sees them: encoded, then decoded.

    Args:
        frames: (N, 3, H, W, 3) uint8 views (left, right, wrist) of N samples.
        autoencoder: a :class:`~vidplan_core.models.autoencoder.VideoAutoencoder` whose views are
            (H/image_pool, W/image_pool).
        decoder: what decodes (anything with ``decode(latents)``, e.g. the bundle's tiny decoder); default the
            autoencoder's own decoder.
        image_pool: average-pooling applied to the views before encoding.
        full_size: repeat each decoded pixel image_pool × image_pool times, back to (H, W), so the result stands in
            for ``frames`` wherever they are pooled again (:func:`evaluate_grounding`).

    Returns:
        (N, 3, H/image_pool, W/image_pool, 3) uint8 decoded views ((N, 3, H, W, 3) with ``full_size``).
    """
    dec = decoder if decoder is not None else autoencoder
    out = []
    for i in range(0, len(frames), batch):
        f = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch])).permute(0, 1, 4, 2, 3).float() / 255.0
        n = f.shape[0]
        if image_pool > 1:
            f = F.avg_pool2d(f.flatten(0, 1), image_pool).reshape(n, 3, 3, f.shape[-2] // image_pool, -1)
        x = dec.decode(autoencoder.encode(f)).clamp(0, 1)  # (n, 3, 3, h, w)
        out.append((x.permute(0, 1, 3, 4, 2) * 255.0).round().to(torch.uint8).numpy())
    views = np.concatenate(out)
    if full_size and image_pool > 1:
        views = views.repeat(image_pool, axis=2).repeat(image_pool, axis=3)
    return views


def _pool(x: np.ndarray | torch.Tensor, k: int) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32)
    return F.avg_pool2d(t[None, None], k)[0, 0] if k > 1 else t


def target_fraction(labels: np.ndarray, ref: tuple[str, ...], obj_colour: np.ndarray, obj_shape: np.ndarray,
                    colours: list[str], shapes: list[str], pool: int) -> torch.Tensor:
    """(H, W) labels → (H/pool, W/pool) fraction of each cell showing what ``ref`` names."""
    if ref[0] == "bowl":
        mask = labels == LABEL_BOWL
    elif ref[0] == "robot":
        mask = labels == LABEL_ROBOT
    else:
        sel = np.ones(len(obj_colour), bool) & (obj_colour >= 0)
        if ref[0] in ("object", "colour"):
            sel &= obj_colour == colours.index(ref[1])
        if ref[0] == "object":
            sel &= obj_shape == shapes.index(ref[2])
        if ref[0] == "shape":
            sel &= obj_shape == shapes.index(ref[1])
        ids = LABEL_FIRST_OBJECT + np.flatnonzero(sel)
        mask = np.isin(labels, ids)
    return _pool(mask.astype(np.float32), pool)


def object_fractions(labels: np.ndarray, obj_colour: np.ndarray, pool: int, min_pixels: int = 0
                     ) -> dict[int, torch.Tensor]:
    """(H, W) labels → {object index: (H/pool, W/pool) fraction of each cell the object covers}, for the scene's
    objects (``obj_colour`` ≥ 0) with at least ``min_pixels`` label pixels in view (H, W multiples of ``pool``)."""
    out = {}
    for o in range(len(obj_colour)):
        if obj_colour[o] >= 0:
            f = _pool((labels == LABEL_FIRST_OBJECT + o).astype(np.float32), pool)
            if float(f.sum()) * pool * pool >= min_pixels:
                out[o] = f
    return out


def attribute_maps(labels: np.ndarray, obj_colour: np.ndarray, obj_shape: np.ndarray, pool: int,
                   min_frac: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) labels → per cell of (H/pool, W/pool) the shape and the colour of the object covering it, as class
    indices: 0 = no object in the cell, 1 + s / 1 + c = an object of shape s / colour c covers ≥ ``min_frac`` of
    it, −1 (ignored) = an object covers part of it (an edge). int64 maps, for the attribute loss."""
    fracs = object_fractions(labels, obj_colour, pool)  # {object index: (h, w) fraction}
    h, w = labels.shape[0] // pool, labels.shape[1] // pool
    shape_map = torch.zeros((h, w), dtype=torch.int64)
    colour_map = torch.zeros((h, w), dtype=torch.int64)
    if fracs:
        frac = torch.stack(list(fracs.values()))  # (K, h, w)
        best, arg = frac.max(0)
        idx = torch.tensor(list(fracs))[arg]
        sh = torch.as_tensor(obj_shape.astype(np.int64))[idx] + 1
        co = torch.as_tensor(obj_colour.astype(np.int64))[idx] + 1
        covered = best >= min_frac
        edge = (frac.sum(0) > 0) & ~covered
        shape_map = torch.where(covered, sh, torch.where(edge, -1, 0))
        colour_map = torch.where(covered, co, torch.where(edge, -1, 0))
    return shape_map, colour_map


class GroundingFrames(torch.utils.data.Dataset):
    """(sample, view) items with a random phrase and its target map (see the module docstring).

    Args:
        data: :func:`load_shards` output. bank: the phrases. image_pool: average-pooling of the stored frames
            (2: 96×160 → 48×80). views: view indices used (0 left, 1 right, 2 wrist).
        min_pixels: an object counts as present in a view from this many label pixels.
        hard_negative_prob: probability that an item names a near miss (see the module docstring) when an object
            is in view; 0 keeps the original phrase mix.
        roundtrip: optional (N, 3, h, w, 3) uint8 decoded views (:func:`roundtrip_frames`, already pooled);
            roundtrip_prob: probability that an item shows them instead of the camera views.
        gray_shape_prob: probability that an item naming a shape alone (``the <s>``) shows its image in
            luminance, scaled by a random gain in [0.7, 1.3] (see the module docstring: shape without colour).
        lookalike_prob: probability that an item names an object in view that has a look-alike in view (the same
            colour, another shape) when there is one.
        brightness_jitter: every item's image is scaled by a gain drawn from [1 − j, 1 + j] (clipped to [0, 1]), so
            an object's brightness, which differs per colour, does not stand in for its colour or its shape.
    Items: {"image": (3, h, w) float in [0, 1], "target": (h/2, w/2) float, "phrase": int, "shape_map",
    "colour_map": (h/2, w/2) int64 (:func:`attribute_maps`; the colour map is all −1 on an item shown in
    luminance)}.
    """

    def __init__(self, data: dict[str, Any], bank: PhraseBank, image_pool: int = 2, views: tuple[int, ...] = (0, 1, 2),
                 min_pixels: int = 4, seed: int = 0, hard_negative_prob: float = 0.0,
                 roundtrip: np.ndarray | None = None, roundtrip_prob: float = 0.0, gray_shape_prob: float = 0.0,
                 lookalike_prob: float = 0.0, brightness_jitter: float = 0.0):
        self.d, self.bank, self.pool, self.views = data, bank, int(image_pool), tuple(views)
        self.min_pixels = int(min_pixels)
        for name, p in (("gray_shape_prob", gray_shape_prob), ("lookalike_prob", lookalike_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.gray_shape_prob, self.lookalike_prob = float(gray_shape_prob), float(lookalike_prob)
        if not 0.0 <= brightness_jitter < 1.0:
            raise ValueError(f"brightness_jitter must be in [0, 1), got {brightness_jitter}")
        self.brightness_jitter = float(brightness_jitter)
        if not 0.0 <= hard_negative_prob < 1.0:
            raise ValueError(f"hard_negative_prob must be in [0, 1), got {hard_negative_prob}")
        self.hard_negative_prob = float(hard_negative_prob)
        if not 0.0 <= roundtrip_prob <= 1.0:
            raise ValueError(f"roundtrip_prob must be in [0, 1], got {roundtrip_prob}")
        if roundtrip_prob > 0 and roundtrip is None:
            raise ValueError("roundtrip_prob > 0 needs the decoded views (roundtrip=roundtrip_frames(...))")
        if roundtrip is not None:
            exp = (len(data["seed"]), data["frames"].shape[1], data["frames"].shape[2] // self.pool,
                   data["frames"].shape[3] // self.pool, 3)
            if tuple(roundtrip.shape) != exp:
                raise ValueError(f"roundtrip views {tuple(roundtrip.shape)} do not match the pooled frames {exp}")
        self.roundtrip, self.roundtrip_prob = roundtrip, float(roundtrip_prob)
        self.rng = np.random.default_rng(seed)
        held = [(c, s) for c, s in bank.held_out]
        for n in range(len(data["seed"])):
            for c, s in zip(data["obj_colour"][n], data["obj_shape"][n], strict=True):
                if c >= 0 and (bank.colours[c], bank.shapes[s]) in held:
                    raise ValueError(f"training shard {data['files']} holds a held-out object "
                                     f"{bank.colours[c]} {bank.shapes[s]} (seed {data['seed'][n]}): regenerate it "
                                     "with exclude=held_out")

    def __len__(self) -> int:
        return len(self.d["seed"]) * len(self.views)

    def _phrase(self, n: int, labels: np.ndarray) -> int:
        b, d = self.bank, self.d
        oc, osh = d["obj_colour"][n], d["obj_shape"][n]
        counts = np.bincount(labels.ravel(), minlength=LABEL_FIRST_OBJECT + len(oc))
        present = [i for i in range(len(oc)) if oc[i] >= 0 and counts[LABEL_FIRST_OBJECT + i] >= self.min_pixels]
        in_scene = {(b.colours[c], b.shapes[s]) for c, s in zip(oc, osh, strict=True) if c >= 0}
        if self.lookalike_prob and len(present) > 1 and self.rng.random() < self.lookalike_prob:
            twins = [i for i in present if any(oc[j] == oc[i] and osh[j] != osh[i] for j in present)]
            if twins:
                i = twins[self.rng.integers(len(twins))]
                return int(self.rng.choice(b.object_phrases(b.colours[oc[i]], b.shapes[osh[i]])))
        if present and self.hard_negative_prob and self.rng.random() < self.hard_negative_prob:
            i = present[self.rng.integers(len(present))]
            c0, s0 = b.colours[oc[i]], b.shapes[osh[i]]
            near = [(c0, s) for s in b.shapes] + [(c, s0) for c in b.colours]
            near = [p for p in near if p not in in_scene and p not in b.held_out]
            if near:
                c, s = near[self.rng.integers(len(near))]
                return int(self.rng.choice(b.object_phrases(c, s)))
        u = self.rng.random()
        if present and u < 0.55:
            i = present[self.rng.integers(len(present))]
            return int(self.rng.choice(b.object_phrases(b.colours[oc[i]], b.shapes[osh[i]])))
        if present and u < 0.67:
            return b.index[f"the {b.colours[oc[present[self.rng.integers(len(present))]]]} object"]
        if present and u < 0.79:
            return b.index[f"the {b.shapes[osh[present[self.rng.integers(len(present))]]]}"]
        if u < 0.85:
            return b.index["the bowl"]
        if u < 0.90:
            return b.index["the robot arm"]
        absent = [(c, s) for c in b.colours for s in b.shapes if (c, s) not in in_scene and (c, s) not in b.held_out]
        c, s = absent[self.rng.integers(len(absent))]
        return int(self.rng.choice(b.object_phrases(c, s)))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        n, v = divmod(int(idx), len(self.views))
        v = self.views[v]
        labels = self.d["labels"][n, v]
        k = self._phrase(n, labels)
        if self.roundtrip is not None and self.roundtrip_prob and self.rng.random() < self.roundtrip_prob:
            img = torch.from_numpy(self.roundtrip[n, v]).permute(2, 0, 1).float() / 255.0
        else:
            img = torch.from_numpy(self.d["frames"][n, v]).permute(2, 0, 1).float() / 255.0
            if self.pool > 1:
                img = F.avg_pool2d(img[None], self.pool)[0]
        if self.brightness_jitter:
            j = self.brightness_jitter
            img = (img * float(self.rng.uniform(1.0 - j, 1.0 + j))).clamp(0.0, 1.0)
        shape_map, colour_map = attribute_maps(labels, self.d["obj_colour"][n], self.d["obj_shape"][n],
                                               pool=2 * self.pool)
        if self.gray_shape_prob and self.bank.refs[k][0] == "shape" and self.rng.random() < self.gray_shape_prob:
            lum = (img * torch.tensor(LUMA)[:, None, None]).sum(0, keepdim=True)
            img = (lum * float(self.rng.uniform(0.7, 1.3))).clamp(0.0, 1.0).expand(3, -1, -1).contiguous()
            colour_map = torch.full_like(colour_map, -1)  # no colour to see
        target = target_fraction(labels, self.bank.refs[k], self.d["obj_colour"][n], self.d["obj_shape"][n],
                                 self.bank.colours, self.bank.shapes, pool=2 * self.pool)
        return {"image": img, "target": target, "phrase": k, "shape_map": shape_map, "colour_map": colour_map}


class GroundedObjective(nn.Module):
    """Per-patch BCE of the scorer's map against the covered fraction (positives × ``pos_weight``), plus, with
    ``attribute_weight`` > 0, cross-entropies of the shape and the colour of the object under each patch an
    object covers (:func:`attribute_maps`), read from the patch embeddings by two linear heads that exist only in
    training.

    Why the attribute term: with the phrase loss alone the scorer settles on colour — an object's colour names it
    in most scenes, so the loss is nearly met without shape and the tower never learns it
    (bench/results/grounding_attributes.md). The heads make every object patch's embedding carry its shape, so the
    phrases can use it.
    """

    def __init__(self, scorer: nn.Module, pos_weight: float = 10.0, attribute_weight: float = 0.0,
                 n_colours: int = 0, n_shapes: int = 0):
        super().__init__()
        self.scorer = scorer
        self.pos_weight = float(pos_weight)
        if attribute_weight < 0:
            raise ValueError(f"attribute_weight must be >= 0, got {attribute_weight}")
        self.attribute_weight = float(attribute_weight)
        if self.attribute_weight > 0:
            if n_colours < 1 or n_shapes < 1:
                raise ValueError("attribute_weight > 0 needs n_colours and n_shapes (the scene's name lists)")
            d = int(scorer.config.embed_dim)
            self.shape_head = nn.Linear(d, n_shapes)
            self.colour_head = nn.Linear(d, n_colours)

    @staticmethod
    def _attribute_ce(head: nn.Module, flat: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        on = cls >= 0  # covered by an object (the maps' 0 = none and -1 = edge both become < 0)
        if not bool(on.any()):  # no object in the batch, or every item in luminance (colour): no target
            return flat.sum() * 0.0
        return F.cross_entropy(head(flat[on]), cls[on])

    def forward(self, image: torch.Tensor, sentence: torch.Tensor, target: torch.Tensor,
                shape_map: torch.Tensor | None = None,
                colour_map: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _, patches = self.scorer.image_features(image)  # (B, gh, gw, D)
        logits = self.scorer.map_logits(patches, self.scorer.project_text(sentence))
        if logits.shape != target.shape:
            raise ValueError(f"map {tuple(logits.shape)} vs target {tuple(target.shape)}: image size must be a "
                             "multiple of 2 × the label pooling")
        w = 1.0 + (self.pos_weight - 1.0) * (target > 0).float()
        phrase = F.binary_cross_entropy_with_logits(logits, target, weight=w)
        if self.attribute_weight == 0:
            return {"loss": phrase}
        if shape_map is None or colour_map is None:
            raise ValueError("attribute_weight > 0: forward needs shape_map and colour_map")
        # Over the patches an object covers only: objects are a few patches of hundreds, and a mean over all of
        # them is met by "no object" everywhere with the shape guessed. The embeddings are unit vectors: the
        # heads' weights set the logits' scale.
        flat = patches.flatten(0, 2)
        shape = self._attribute_ce(self.shape_head, flat, shape_map.flatten() - 1)
        colour = self._attribute_ce(self.colour_head, flat, colour_map.flatten() - 1)
        return {"loss": phrase + self.attribute_weight * (shape + colour), "phrase_loss": phrase.detach(),
                "shape_loss": shape.detach(), "colour_loss": colour.detach()}


@torch.no_grad()
def evaluate_grounding(scorer: Any, data: dict[str, Any], bank: PhraseBank, sentence: torch.Tensor,
                       image_pool: int = 2, min_pixels: int = 4, templates: tuple[str, ...] = TASK_TEMPLATES,
                       only: str = "target", batch: int = 64, attributes: bool = False) -> dict[str, Any]:
    """Grounding accuracy: for each view where the named object and at least one other object are visible
    (≥ ``min_pixels`` label pixels each), the instruction picks the right object when the object with the highest
    mean map logit over its own pixels is the named one. ``only="target"`` names the scene's target (the shard's
    object 0); ``"all"`` names every visible object in turn. ``sentence``: (len(bank.texts), text_dim) sentence
    embeddings of the bank.

    Returns:
        {"accuracy", "n", "correct", "ci95", "per_view": {view: {accuracy, n}}, "top_patch_accuracy",
        "tracked"} — the top-patch accuracy counts a view as right when the map's highest patch lies on the named
        object; ``tracked`` when, in addition, the map is confident there (σ(max logit) ≥ 0.5): what the planner's
        push-progress term needs to follow the object (``ScoreConfig.track_confidence``). With ``attributes``
        (and ``only="target"``), also ``"attributes"``: what :func:`evaluate_attributes` returns, counted on the
        same views from the same image features (one pass of the image tower instead of two). ``batch``: views
        per pass of the image tower (each view's phrases share its features).
    """
    if attributes and only != "target":
        raise ValueError("evaluate_grounding(attributes=True) counts the target's attributes: needs only='target'")
    scorer.eval()
    text = scorer.project_text(sentence)
    pool = 2 * image_pool
    # the views to score, each with its queries (named object index, phrase): the image tower and the object
    # fractions run once per view, whatever the number of phrases naming its objects
    views: list[tuple[int, int, list[tuple[int, int]]]] = []  # (sample, view, [(object index, phrase)])
    d = data
    for n in range(len(d["seed"])):
        oc, osh = d["obj_colour"][n], d["obj_shape"][n]
        for v in range(d["labels"].shape[1]):
            counts = np.bincount(d["labels"][n, v].ravel(), minlength=LABEL_FIRST_OBJECT + len(oc))
            vis = [i for i in range(len(oc)) if oc[i] >= 0 and counts[LABEL_FIRST_OBJECT + i] >= min_pixels]
            if len(vis) < 2:
                continue
            named = [0] if only == "target" else vis
            qs = [(i, k) for i in named if i in vis
                  for k in bank.object_phrases(bank.colours[oc[i]], bank.shapes[osh[i]], templates)]
            if qs:
                views.append((n, v, qs))
    correct = top_ok = tracked = n_queries = 0
    per_view: dict[int, list[int]] = {}
    counts = _attribute_counts()
    for s in range(0, len(views), batch):
        vs = views[s:s + batch]
        img = torch.stack([torch.from_numpy(d["frames"][n, v]).permute(2, 0, 1).float() / 255.0 for n, v, _ in vs])
        if image_pool > 1:
            img = F.avg_pool2d(img, image_pool)
        _, patches = scorer.image_features(img)
        rows = [j for j, (*_, qs) in enumerate(vs) for _ in qs]  # each query's view in this batch
        logits = scorer.map_logits(patches[rows], text[[k for *_, qs in vs for _, k in qs]])
        q = 0
        for j, (n, v, qs) in enumerate(vs):
            lab = d["labels"][n, v]
            frac = object_fractions(lab, d["obj_colour"][n], pool, min_pixels)
            if attributes:
                _count_attributes(counts, scorer, text, patches[j], frac, d["obj_colour"][n], d["obj_shape"][n], bank)
            for i, _k in qs:
                lg = logits[q]
                q += 1
                means = {o: float((lg * f).sum() / f.sum()) for o, f in frac.items()}
                ok = max(means, key=means.__getitem__) == i  # the first of equal means, in object order
                correct += ok
                pv = per_view.setdefault(v, [0, 0])
                pv[0] += ok
                pv[1] += 1
                top = int(lg.flatten().argmax())
                tfrac = _pool((lab == LABEL_FIRST_OBJECT + i).astype(np.float32), pool).flatten()
                top_ok += bool(tfrac[top] > 0)
                tracked += bool(tfrac[top] > 0 and float(lg.flatten()[top]) >= 0.0)  # σ(logit) ≥ 0.5
        n_queries += q
    n = n_queries
    names = ("left", "right", "wrist")
    ci = wilson_interval(correct, n) or (0.0, 1.0)
    rep = {"accuracy": correct / n if n else float("nan"), "n": n, "correct": correct, "ci95": list(ci),
           "top_patch_accuracy": top_ok / n if n else float("nan"), "tracked": tracked / n if n else float("nan"),
           "per_view": {names[v]: {"accuracy": c / t, "n": t} for v, (c, t) in sorted(per_view.items())}}
    if attributes:
        rep["attributes"] = _attribute_report(counts)
    return rep


def _attribute_counts() -> dict[str, list[int]]:
    return {k: [0, 0] for k in ("shape_alone", "colour_alone", "vs_same_colour", "vs_same_shape")}


def _attribute_report(counts: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    return {k: {"accuracy": c / t if t else float("nan"), "n": t, "correct": c,
                "ci95": list(wilson_interval(c, t) or (0.0, 1.0))} for k, (c, t) in counts.items()}


def _count_attributes(counts: dict[str, list[int]], scorer: Any, text: torch.Tensor, patches: torch.Tensor,
                      frac: dict[int, torch.Tensor], oc: np.ndarray, osh: np.ndarray, bank: PhraseBank) -> None:
    """Adds one view to ``counts`` (see :func:`evaluate_attributes`): ``patches`` (gh, gw, D) of the view, ``frac``
    its visible objects' cell fractions (:func:`object_fractions`), ``oc``/``osh`` the scene's object colours and
    shapes (object 0 the target). A view without the target or without a rival adds nothing."""
    if 0 not in frac or len(frac) < 2:
        return
    c, sh = bank.colours[oc[0]], bank.shapes[osh[0]]
    others = [o for o in frac if o != 0]
    whole = f"touch the {c} {sh}"
    for key, phrase, rivals in (
            ("shape_alone", f"the {sh}", [o for o in others if osh[o] != osh[0]]),
            ("colour_alone", f"the {c} object", [o for o in others if oc[o] != oc[0]]),
            ("vs_same_colour", whole, [o for o in others if oc[o] == oc[0] and osh[o] != osh[0]]),
            ("vs_same_shape", whole, [o for o in others if osh[o] == osh[0] and oc[o] != oc[0]])):
        if rivals:
            lg = scorer.map_logits(patches, text[bank.index[phrase]])
            m = {o: float((lg * f).sum() / f.sum()) for o, f in frac.items()}
            counts[key][0] += m[0] > max(m[o] for o in rivals)
            counts[key][1] += 1


@torch.no_grad()
def evaluate_attributes(scorer: Any, data: dict[str, Any], bank: PhraseBank, sentence: torch.Tensor,
                        image_pool: int = 2, min_pixels: int = 4, batch: int = 64) -> dict[str, dict[str, Any]]:
    """What a scorer grounds by, per attribute, over the views where the scene's target (object 0) and another
    object are visible (as :func:`evaluate_grounding`); each count is of views where the phrase's mean map logit over
    the target's pixels beats every rival's:

    * ``shape_alone``: ``the <s>`` (the target's shape) against the visible objects of other shapes;
    * ``colour_alone``: ``the <c> object`` against the visible objects of other colours;
    * ``vs_same_colour``: ``touch the <c> <s>`` against the look-alikes of the same colour (other shapes): what
      only shape can decide; ``vs_same_shape``: against the objects of the same shape (other colours).

    Returns {name: {"accuracy", "n", "correct", "ci95"}} (chance is below 0.5 where there are several rivals).
    """
    scorer.eval()
    text = scorer.project_text(sentence)
    pool = 2 * image_pool
    d = data
    views = [(n, v) for n in range(len(d["seed"])) for v in range(d["labels"].shape[1])]
    counts = _attribute_counts()
    for s in range(0, len(views), batch):
        chunk = views[s:s + batch]
        img = torch.stack([torch.from_numpy(d["frames"][n, v]).permute(2, 0, 1).float() / 255.0 for n, v in chunk])
        if image_pool > 1:
            img = F.avg_pool2d(img, image_pool)
        _, patches = scorer.image_features(img)
        for j, (n, v) in enumerate(chunk):
            frac = object_fractions(d["labels"][n, v], d["obj_colour"][n], pool, min_pixels)
            _count_attributes(counts, scorer, text, patches[j], frac, d["obj_colour"][n], d["obj_shape"][n], bank)
    return _attribute_report(counts)
