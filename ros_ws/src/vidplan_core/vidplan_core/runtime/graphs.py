"""The planner's computation as a few ``nn.Module`` graphs with tensor-only signatures.

The same modules run eagerly in the torch backend and are exported to ONNX (then TensorRT) by
:mod:`vidplan_core.export`, so every runtime computes exactly the same function. Shapes (N candidates, T history
frames, H future frames, latent frame (C, h, w), views of H_img × W_img):

=================  ==========================================================  ================================
graph              inputs                                                      outputs
=================  ==========================================================  ================================
``encode``         frames (T, 3, 3, H_img, W_img) in [0, 1]                    history_latents (T, C, h, w)
``rollout_k{K}``   history_latents (1, T, C, h, w), history_actions (1, T, 7),  latents (N, H, C, h, w)
                   actions (N, H, 7), noise (1, H, C, h, w)
                   [, text_embeds (1, D) when the world model uses text]
``heads``          latents (N, H, C, h, w), actions (N, H, 7)                  uq_map (N, H, h, w), h_bar (N, H),
                                                                               value (N, H), value_entropy (N, H)
``semantic``       latents (N, H, C, h, w), text_embeds (1, D)                 semantic_score (N, H),
                                                                               semantic_map (N, H, Hp, Wp)
``text``           input_ids (1, L) int64                                      text_embeds (1, D)
``decode``         latents (H, C, h, w) of one candidate                       frames (H, 3, 3, H_img, W_img)
                                                                               in [0, 1] (debug pictures)
``value_grad_k{K}`` as rollout                                                  objective (N,), grad (N, H, 7)
=================  ==========================================================  ================================

Actions are raw EE poses (the models normalise internally); the K-step time grid is fixed per graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from vidplan_core.objective import WeightKind, entropy_weighted_value
from vidplan_core.sampling import time_grid as time_grid_of

__all__ = ["DecodeGraph", "EncodeGraph", "HeadsGraph", "ObjectiveConfig", "RolloutGraph", "SemanticGraph", "TextGraph",
           "TextProjectionGraph", "ValueGradGraph", "freeze"]


@dataclass(frozen=True)
class ObjectiveConfig:
    """Parameters of the refinement objective baked into the value-and-grad graph (recorded in the manifest)."""

    weighting: WeightKind = "exp"
    kappa: float = 3.0
    beta: float = 1.0


def freeze(module: nn.Module) -> nn.Module:
    """eval() and requires_grad=False on every parameter (gradients flow to the action inputs only)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class EncodeGraph(nn.Module):
    """History frames → latents (VAE encoder, posterior mode, scaled)."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.ae = autoencoder

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.ae.encode(frames)


class DecodeGraph(nn.Module):
    """Predicted latents of one candidate → its frames, all three views (the planner node's debug pictures; the
    planner itself never needs pixels outside the semantic graph)."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.ae = autoencoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(latents)


class RolloutGraph(nn.Module):
    """K-step flow-map rollout of N candidates from one shared history and one shared initial noise."""

    def __init__(self, flow_map: nn.Module, num_steps: int, time_grid: list[float] | None = None):
        super().__init__()
        self.fm = flow_map
        self.num_steps = int(num_steps)
        self.grid = [float(t) for t in (time_grid if time_grid is not None else time_grid_of(flow_map, num_steps))]
        if len(self.grid) != self.num_steps + 1:
            raise ValueError(f"time grid {self.grid} does not have K + 1 = {self.num_steps + 1} entries")

    def forward(self, history_latents: torch.Tensor, history_actions: torch.Tensor, actions: torch.Tensor,
                noise: torch.Tensor, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        n = actions.shape[0]
        hist = history_latents.expand(n, *history_latents.shape[1:])
        acts = torch.cat([history_actions.expand(n, *history_actions.shape[1:]).to(actions.dtype), actions], dim=1)
        # sampling.flow_map_sample's K-step loop, written out with python-float times so that tracing/export sees no
        # data-dependent checks on a time-grid tensor (same math: x_{t0} = (1 − t0)·noise, then X_{t_k, t_k+1}).
        te = None if text_embeds is None else text_embeds.expand(n, text_embeds.shape[-1])
        tokens = self.fm.encode_actions(acts, te)
        x = (1.0 - self.grid[0]) * noise.expand(n, *noise.shape[1:])
        for k in range(self.num_steps):
            x = self.fm.jump(x, self.grid[k], self.grid[k + 1], hist, acts, tokens=tokens)
        return x


class HeadsGraph(nn.Module):
    """UQ head (per-pixel normalised entropy, mean over channels) and reward head (expected value, entropy)."""

    def __init__(self, uq_head: nn.Module, reward_head: nn.Module):
        super().__init__()
        self.uq, self.rw = uq_head, reward_head

    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.uq.uncertainty(latents)["h"]  # (N, H, C, h, w)
        uq_map = h.mean(dim=2)
        v = self.rw.value(latents, actions)
        return uq_map, uq_map.mean(dim=(-2, -1)), v["value"], v["h"]


class SemanticGraph(nn.Module):
    """Decode predicted latents and score every frame against the instruction's text embedding.

    ``decoder``: anything with ``decode(latents) → views`` — the bundle's tiny decoder for scoring when it has one
    (:attr:`~vidplan_core.runtime.bundle.PlannerModels.scoring_decoder`), else the autoencoder.

    ``scorer`` is the models' :class:`~vidplan_core.models.semantic.SemanticScorer`: one vision pass gives the
    per-frame image–text cosine score and the patch similarity map (the planner computes the centroid itself,
    after suppressing the map by the uncertainty map). The score is taken on ``view``, the map on ``map_view``
    (the centring term's view; a second vision pass when they differ).
    """

    def __init__(self, decoder: nn.Module, scorer: nn.Module, view: int = 0,
                 map_view: int | tuple[int, ...] | None = None):
        super().__init__()
        self.ae, self.scorer, self.view = decoder, scorer, int(view)
        mv = (self.view,) if map_view is None else (map_view,) if isinstance(map_view, int) else tuple(map_view)
        self.map_views = tuple(int(v) for v in mv)

    def forward(self, latents: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """→ score (N, H) on ``view``; map (N, H, V·gh, gw): the maps of ``map_views`` stacked vertically."""
        return self.score_frames(self.ae.decode(latents), text_embeds)

    def score_frames(self, decoded: torch.Tensor, text_embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on frames (N, H, 3 views, 3, H_img, W_img) in [0, 1] instead of latents."""
        n, f = decoded.shape[:2]
        t = text_embeds.reshape(-1)
        score, sim = self.scorer.score_and_map(decoded[:, :, self.view].flatten(0, 1), t)  # (B,), (B, gh, gw)
        maps = []
        for v in self.map_views:  # the centring maps (default: the wrist camera's alone)
            maps.append(sim if v == self.view else self.scorer.score_and_map(decoded[:, :, v].flatten(0, 1), t)[1])
        sim = torch.cat(maps, dim=-2)
        return score.reshape(n, f), sim.reshape(n, f, *sim.shape[-2:])


class TextGraph(nn.Module):
    """Instruction tokens → unit-norm text embedding of the semantic scorer (``scorer.encode_text``)."""

    def __init__(self, scorer: nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.scorer.encode_text(input_ids=input_ids)


class TextProjectionGraph(nn.Module):
    """Grounded scorer: sentence embedding of the frozen pretrained encoder (computed once per instruction, outside
    the exported graphs, so bundles do not carry its 90 MB) → the scorer's unit-norm text embedding."""

    def __init__(self, scorer: nn.Module):
        super().__init__()
        self.scorer = scorer

    def forward(self, sentence_embeds: torch.Tensor) -> torch.Tensor:
        return self.scorer.project_text(sentence_embeds)


class ValueGradGraph(nn.Module):
    """Refinement objective J (entropy-weighted expected value) and dJ/dactions through heads and flow map.

    Exported by tracing the autograd call into plain ops (:func:`vidplan_core.export.grad_graph.trace_grad_graph`).
    """

    def __init__(self, rollout: RolloutGraph, heads: HeadsGraph, objective: ObjectiveConfig | None = None):
        super().__init__()
        self.rollout, self.heads = rollout, heads
        self.objective = objective or ObjectiveConfig()

    def value(self, history_latents: torch.Tensor, history_actions: torch.Tensor, actions: torch.Tensor,
              noise: torch.Tensor, text_embeds: torch.Tensor | None = None) -> torch.Tensor:
        lat = self.rollout(history_latents, history_actions, actions, noise, text_embeds)
        _, h_bar, value, value_ent = self.heads(lat, actions)
        o = self.objective
        return entropy_weighted_value(value, h_bar, value_ent, o.weighting, o.kappa, o.beta)

    def forward(self, history_latents: torch.Tensor, history_actions: torch.Tensor, actions: torch.Tensor,
                noise: torch.Tensor, text_embeds: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a = actions.detach().requires_grad_(True)
        with torch.enable_grad():
            j = self.value(history_latents, history_actions, a, noise, text_embeds)
            (g,) = torch.autograd.grad(j.sum(), a)  # candidates are independent: d(ΣJ)/da_n = dJ_n/da_n
        return j.detach(), g


def graph_io(graph: str, **shapes: Any) -> tuple[list[str], list[str]]:
    """Input and output names of a graph (the ONNX names)."""
    io = {
        "encode": (["frames"], ["history_latents"]),
        "rollout": (["history_latents", "history_actions", "actions", "noise", "text_embeds"], ["latents"]),
        "heads": (["latents", "actions"], ["uq_map", "h_bar", "value", "value_entropy"]),
        "semantic": (["latents", "text_embeds"], ["semantic_score", "semantic_map"]),
        "text": (["input_ids"], ["text_embeds"]),
        "text_proj": (["sentence_embeds"], ["text_embeds"]),
        "cond_text": (["input_ids"], ["text_embeds"]),
        "cond_text_proj": (["sentence_embeds"], ["text_embeds"]),
        "decode": (["latents"], ["frames"]),
        "value_grad": (["history_latents", "history_actions", "actions", "noise", "text_embeds"],
                       ["objective", "grad"]),
    }
    return io[graph.split("_k")[0] if graph.startswith(("rollout_k", "value_grad_k")) else graph]
