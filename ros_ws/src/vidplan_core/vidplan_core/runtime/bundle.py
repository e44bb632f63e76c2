"""The set of models a planner needs (world model suite + semantic scorer) and the graphs built from it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidplan_core.runtime.base import BackendError
from vidplan_core.runtime.bundle_index import write_bundle_index

__all__ = ["LatentCache", "PlannerModels", "frame_key", "make_noise"]


@dataclass
class PlannerModels:
    """World-model suite (:class:`vidplan_core.models.configs.ModelSuite`) + semantic scorer.

    Attributes:
        suite: autoencoder, world model, flow map, UQ head, reward head.
        scorer: :class:`vidplan_core.models.semantic.SemanticScorer` (SigLIP / CLIP) or
            :class:`vidplan_core.models.grounded.GroundedScorer`.
        semantic_view: which view the semantic reward scores (0 left, 1 right, 2 wrist).
        centring_view: which view's semantic map gives the centroid of the centring term (default 2, the wrist
            camera: its image centre is under the gripper, so the distance to it depends on the candidate — on a
            static exterior view it is the same for every candidate).
        config_name: the model configuration (tiny, demo, full, a suite YAML's name); recorded in ``bundle.json``.
        map_views: the views whose semantic maps the semantic graph returns, stacked vertically (default
            ``(centring_view,)``). Several views serve the gripper-referenced centring term, which compares the
            target's centroid with the candidate's projected TCP in each view (two exterior views fix it in 3-D).
        tiny_decoder: optional :class:`~vidplan_core.models.tiny_decoder.TinyDecoder` distilled from the
            autoencoder's decoder; the semantic reward decodes with it (:attr:`scoring_decoder`), the debug
            pictures with the full decoder.
        text_conditioner: optional semantic model of the scorer's kind (and tokenizer) whose text embedding
            conditions the world model and the policy (:attr:`conditioner`); a bundle carries one when its scorer
            was retrained after the world model (the world model's text input stays the one it was trained on,
            while the new scorer scores). None: the scorer's embedding does both.
    """

    suite: Any
    scorer: Any
    semantic_view: int = 0
    config_name: str | None = None
    centring_view: int = 2
    map_views: tuple[int, ...] | None = None
    tiny_decoder: Any = None
    text_conditioner: Any = None

    def modules(self) -> list[Any]:
        """Every torch module the planner runs (world-model suite, scorer, tiny decoder and text conditioner when
        present): the one list a backend freezes and moves to its device, so no part is left behind on the CPU."""
        s = self.suite
        return [m for m in (s.autoencoder, s.flow_map, s.uq_head, s.reward_head, self.scorer, self.tiny_decoder,
                            self.text_conditioner) if m is not None]

    @property
    def conditioner(self) -> Any:
        """The semantic model whose text embedding conditions the world model and the policy: the
        ``text_conditioner`` when the bundle has one, else the scorer."""
        return self.text_conditioner if self.text_conditioner is not None else self.scorer

    def conditioning_embedding(self, instruction: str) -> Any:
        """(1, D) unit-norm text embedding the world model and the policy condition on (torch, float32, on the
        conditioner's device)."""
        import torch

        c = self.conditioner
        device = next(c.parameters(), torch.zeros(())).device
        ids = torch.as_tensor(self.tokenize(instruction), device=device)
        with torch.no_grad():
            return c.encode_text(input_ids=ids)[:1].float()

    @property
    def scoring_decoder(self) -> Any:
        """What the semantic reward decodes predicted latents with: the tiny decoder when the bundle has one,
        else the autoencoder (both have ``decode(latents) → views``)."""
        return self.tiny_decoder if self.tiny_decoder is not None else self.suite.autoencoder

    @property
    def map_view_list(self) -> tuple[int, ...]:
        """The semantic map's views, in the order they are stacked."""
        return tuple(self.map_views) if self.map_views else (int(self.centring_view),)

    def view_geometry(self) -> dict[str, Any]:
        """Camera geometry of the model's views (:func:`~vidplan_core.models.action_maps.normalised_view_geometry`:
        the world model's own when it renders action maps, else the default calibration, whole views)."""
        from vidplan_core.models.action_maps import normalised_view_geometry

        return normalised_view_geometry(self.suite.flow_map.model.config.action_maps)

    def save(self, directory: str | Path, storage_dtype: Any = None, config_name: str | None = None) -> None:
        """Write the layout :meth:`load` reads: ``directory/<section>/`` per model, ``directory/semantic`` and the
        index ``directory/bundle.json`` naming them (:mod:`vidplan_core.runtime.loader`).

        ``storage_dtype`` (``torch.float16``): the world-model suite's parameters are stored in half precision
        (:meth:`vidplan_core.models._io.StrictLoadMixin.save`); the semantic model always stays float32.
        ``config_name``: recorded in the index (default :attr:`config_name`)."""
        from vidplan_core.models.siglip import save_semantic

        self.suite.save(directory, storage_dtype=storage_dtype)
        if self.tiny_decoder is not None:
            self.tiny_decoder.save(Path(directory) / "tiny_decoder")
        for name, sc in (("semantic", self.scorer), ("text_conditioner", self.text_conditioner)):
            if sc is None:
                continue
            if sc.kind == "grounded":  # image tower + text projection; the sentence encoder is installed
                sc.save(Path(directory) / name)
            else:
                save_semantic(sc.model, sc.tokenizer, Path(directory) / name, sc.model.config.vision_config.image_size)
        # views only when they differ from the defaults the loader assumes (0, 2, [centring_view])
        write_bundle_index(directory, config=config_name or self.config_name,
                           semantic_view=self.semantic_view if self.semantic_view != 0 else None,
                           centring_view=self.centring_view if self.centring_view != 2 else None,
                           map_views=self.map_views)

    @property
    def horizon(self) -> int:
        return int(self.suite.flow_map.model.config.num_future)

    @property
    def num_history(self) -> int:
        return int(self.suite.flow_map.model.config.num_history)

    @property
    def uses_text(self) -> bool:
        """Whether the world model conditions on the instruction's text embedding."""
        return self.suite.flow_map.model.config.text_embed_dim is not None

    def check(self) -> None:
        """Consistency between the parts (latent shapes, text embedding width); BackendError naming both."""
        fm = self.suite.flow_map.model
        ae_shape = tuple(self.suite.autoencoder.latent_shape)
        if tuple(fm.latent_shape) != ae_shape:
            raise BackendError(f"world model latent {tuple(fm.latent_shape)} does not match the autoencoder's "
                               f"{ae_shape}")
        for name in ("uq_head", "reward_head"):
            c = getattr(self.suite, name).config
            if (c.latent_channels, c.latent_height, c.latent_width) != ae_shape:
                raise BackendError(f"{name} latent {(c.latent_channels, c.latent_height, c.latent_width)} does not "
                                   f"match the autoencoder's {ae_shape}")
        if self.text_conditioner is not None:
            a, b = self.scorer, self.text_conditioner
            same = (a.kind == b.kind and a.max_text_len == b.max_text_len
                    and (a.config.text_encoder == b.config.text_encoder if a.kind == "grounded"
                         else a.tokenizer.get_vocab() == b.tokenizer.get_vocab()))
            if not same:  # one tokenisation (and, grounded, one sentence encoder) serves both
                raise BackendError(f"text_conditioner ({b.kind}, {b.max_text_len} tokens) does not tokenise like the "
                                   f"semantic scorer ({a.kind}, {a.max_text_len} tokens): it must be a semantic model "
                                   f"of the same kind and text encoder")
        if self.uses_text:
            d_text = self.text_dim()
            if d_text != fm.config.text_embed_dim:
                what = "text_conditioner" if self.text_conditioner is not None else "semantic scorer"
                raise BackendError(f"world model expects text embeddings of width {fm.config.text_embed_dim}, the "
                                   f"{what} produces {d_text}")
        if self.tiny_decoder is not None:
            td = tuple(self.tiny_decoder.latent_shape)
            ae = self.suite.autoencoder.config
            td_view = (self.tiny_decoder.config.view_height, self.tiny_decoder.config.view_width)
            if td != ae_shape or td_view != (ae.view_height, ae.view_width):
                raise BackendError(f"tiny_decoder decodes latents {td} into {td_view[0]}x{td_view[1]} views, but "
                                   f"the autoencoder's latents are {ae_shape} of {ae.view_height}x{ae.view_width} "
                                   f"views: distil it again from this autoencoder (vidplan train tiny-decoder)")
        for name in ("semantic_view", "centring_view"):
            if not 0 <= getattr(self, name) < 3:
                raise BackendError(f"{name} must be 0, 1 or 2, got {getattr(self, name)}")
        mv = self.map_view_list
        if not mv or any(not 0 <= v < 3 for v in mv) or len(set(mv)) != len(mv):
            raise BackendError(f"map_views must be distinct views among 0, 1, 2, got {list(mv)}")

    def text_dim(self) -> int:
        """Width of the conditioning text embedding (:attr:`conditioner`'s), what the world model and policy read."""
        import torch

        # on the model's device: a backend may already have moved it (a second backend on one bundle, e.g. K=1
        # then K=4 on CUDA, failed here with "index is on cpu")
        c = self.conditioner
        device = next(c.parameters(), torch.zeros(())).device
        with torch.no_grad():
            ids = torch.zeros(1, 2, dtype=torch.long, device=device)
            return int(c.encode_text(input_ids=ids).shape[-1])

    def tokenize(self, instruction: str) -> np.ndarray:
        """Instruction → (1, L) int64 token ids with the scorer's tokenizer."""
        tok = self.scorer.tokenizer
        if tok is None:
            raise BackendError("the semantic model directory has no tokenizer")
        return tokenize(tok, self.scorer.kind, self.scorer.max_text_len, instruction)


def tokenize(tokenizer: Any, kind: str, max_len: int, instruction: str) -> np.ndarray:
    """(1, L) int64 ids, padded as the scorer does (SigLIP: max-length padding)."""
    # max-length padding for both families: SigLIP was trained with it, and a fixed length keeps the exported text
    # graph static (CLIP pools at the EOS token, so its result does not depend on the padding).
    enc = tokenizer([instruction], padding="max_length", truncation=True, max_length=max_len, return_tensors="np")
    return np.asarray(enc["input_ids"], dtype=np.int64)


def frame_key(frame: np.ndarray) -> bytes:
    """Content hash of one history frame (cache key)."""
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16).digest()


class LatentCache:
    """LRU cache of encoded history frames keyed by content hash: each camera frame is encoded once."""

    def __init__(self, size: int = 64):
        self.size = size
        self._d: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.last_encoded = 0

    def encode(self, frames: np.ndarray, encode_fn) -> np.ndarray:
        """frames (T, 3, 3, H, W) float32 → (T, C, h, w); ``encode_fn`` maps (n, 3, 3, H, W) → (n, C, h, w)."""
        keys = [frame_key(f) for f in frames]
        todo = [i for i, k in enumerate(keys) if k not in self._d]
        if todo:
            z = encode_fn(frames[todo])
            for j, i in enumerate(todo):
                self._d[keys[i]] = np.asarray(z[j])
        self.last_encoded = len(todo)
        out = []
        for k in keys:
            self._d.move_to_end(k)
            out.append(self._d[k])
        while len(self._d) > self.size:
            self._d.popitem(last=False)
        return np.stack(out)


def make_noise(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Initial flow-map noise (1, H, C, h, w), float32, identical across runtimes for the same seed."""
    return np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)


def frames_to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] or float [0, 1] frames → float32 [0, 1]."""
    f = np.asarray(frames)
    if f.dtype == np.uint8:
        return f.astype(np.float32) / 255.0
    f = f.astype(np.float32)
    if not np.isfinite(f).all():
        raise BackendError("history frames contain NaN/Inf")
    return f


def random_planner_models(config: str = "tiny", seed: int = 0, image_size: int | None = None,
                          semantic_layers: int = 1, scorer: str = "siglip", tiny_decoder: bool = False
                          ) -> PlannerModels:
    """Randomly initialised models of a named configuration plus a small random semantic scorer: SigLIP
    (``scorer="siglip"``) or the grounded scorer (``"grounded"``: random image tower and projection, the real
    pretrained sentence encoder); with ``tiny_decoder`` also a random tiny decoder for scoring (8 channels).

    For tests and benchmarks: compute does not depend on the weights' values. The scorer's embedding width is the
    world model's ``text_embed_dim`` (so the instruction embedding also conditions the world model).
    """
    import torch
    from transformers import SiglipConfig, SiglipModel

    from vidplan_core.models.configs import PRESETS, build_suite
    from vidplan_core.models.semantic import SemanticScorer
    from vidplan_core.models.siglip import build_tokenizer

    suite = build_suite(config, seed=seed)
    d = suite.flow_map.model.config.text_embed_dim or 32
    torch.manual_seed(seed)
    tiny = None
    if tiny_decoder:
        from vidplan_core.models.tiny_decoder import TinyDecoder

        tiny = TinyDecoder.for_autoencoder(suite.autoencoder, channels=8).eval()
    name = str(config) if str(config) in PRESETS else Path(str(config)).stem
    if scorer == "grounded":
        from vidplan_core.models.grounded import GroundedScorer

        g = GroundedScorer(embed_dim=d, channels=(8, 16, 16)).attach_text_encoder().eval()
        return PlannerModels(suite, g, config_name=name, tiny_decoder=tiny)
    if scorer != "siglip":
        raise ValueError(f"scorer must be 'siglip' or 'grounded', got {scorer!r}")
    tok = build_tokenizer(["pick up the red cube and put it in the bowl", "push the green block"], max_len=12)
    view = suite.autoencoder.config.view_height
    size = image_size or max(16, 16 * round(view / 16))
    common = dict(hidden_size=d, intermediate_size=2 * d, num_hidden_layers=semantic_layers, num_attention_heads=2)
    text = dict(vocab_size=len(tok), max_position_embeddings=12, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **common)
    vision = dict(image_size=size, patch_size=8, **common)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    return PlannerModels(suite, SemanticScorer(model, tok), config_name=name, tiny_decoder=tiny)
