"""Torch backend: the planner graphs run eagerly (CPU or CUDA), optionally compiled, CUDA-graphed and in bf16.

* eager fp32 — the reference every other runtime is verified against (tested here);
* ``compile=True`` — ``torch.compile`` of the rollout, heads, semantic and value graphs (works on CPU, slow to warm);
* ``cuda_graphs=True`` — ``torch.compile(mode="reduce-overhead")``, which captures CUDA graphs (GPU only);
* ``bf16=True`` — ``torch.autocast("cuda", dtype=torch.bfloat16)`` around the graphs (GPU only).
The GPU paths cannot run on the development machines (no GPU): they are guarded (clear error without CUDA) and
exercised by ``bench/gpu_plan_cycle.py`` on an H100/H200.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch

from vidplan_core.runtime.base import BackendError, PlanningContext, RolloutOutput, check_actions
from vidplan_core.runtime.bundle import LatentCache, PlannerModels, frames_to_float, make_noise
from vidplan_core.runtime.frame_scorer import FrameScorer
from vidplan_core.runtime.graphs import (
    DecodeGraph,
    EncodeGraph,
    HeadsGraph,
    ObjectiveConfig,
    RolloutGraph,
    SemanticGraph,
    TextGraph,
    TextProjectionGraph,
    ValueGradGraph,
    freeze,
)

__all__ = ["TorchBackend", "build_graphs"]


def build_graphs(models: PlannerModels, flow_steps: int, objective: ObjectiveConfig | None = None
                 ) -> dict[str, torch.nn.Module]:
    """The planner graphs (see :mod:`vidplan_core.runtime.graphs`) over frozen copies-by-reference of the models."""
    s = models.suite
    for m in models.modules():
        freeze(m)
    rollout = RolloutGraph(s.flow_map, flow_steps)
    heads = HeadsGraph(s.uq_head, s.reward_head)
    graphs = {"encode": EncodeGraph(s.autoencoder), "decode": DecodeGraph(s.autoencoder),
              "rollout": rollout, "heads": heads,
              "semantic": SemanticGraph(models.scoring_decoder, models.scorer, models.semantic_view,
                                        models.map_view_list),
              "text": TextGraph(models.scorer), "value_grad": ValueGradGraph(rollout, heads, objective)}
    if models.scorer.kind == "grounded":  # exported without the frozen sentence encoder (see TextProjectionGraph)
        graphs["text_proj"] = TextProjectionGraph(models.scorer)
    if models.text_conditioner is not None:  # the world model's and policy's own text input (PlannerModels)
        graphs["cond_text"] = TextGraph(models.text_conditioner)
        if models.text_conditioner.kind == "grounded":
            graphs["cond_text_proj"] = TextProjectionGraph(models.text_conditioner)
    for g in graphs.values():  # the wrappers too (the models already are): the exporter traces in eval mode
        g.eval()
    return graphs


class TorchBackend:
    """:class:`~vidplan_core.runtime.base.Backend` running the models in torch.

    Args:
        models: :class:`PlannerModels`.
        flow_steps: K, flow-map steps per rollout.
        objective: refinement objective parameters.
        device: "cpu" or "cuda[:i]".
        compile: wrap the graphs in ``torch.compile``.
        cuda_graphs: CUDA graphs through ``torch.compile(mode="reduce-overhead")`` (needs CUDA).
        bf16: bf16 autocast (needs CUDA).
        max_batch: candidates per call (larger N is split, bounding memory). None: 64 on CUDA, 4 on CPU — on a
            CPU, large batches run out of cache: the demo config's N=32 rollout took 16.1 s in one call and 8.7 s
            in calls of 4 (N=1: 0.26 s), measured with 1 thread on this project's 2-core machines.
    """

    name = "torch"

    def __init__(self, models: PlannerModels, flow_steps: int = 1, objective: ObjectiveConfig | None = None,
                 device: str = "cpu", compile: bool = False, cuda_graphs: bool = False, bf16: bool = False,
                 max_batch: int | None = None):
        models.check()
        self.device = torch.device(device)
        if (cuda_graphs or bf16 or self.device.type == "cuda") and not torch.cuda.is_available():
            raise BackendError("CUDA graphs / bf16 / device 'cuda' requested but torch sees no CUDA device "
                               f"(torch {torch.__version__}, cuda {torch.version.cuda})")
        self.models, self.flow_steps = models, int(flow_steps)
        self.objective = objective or ObjectiveConfig()
        self.horizon, self.num_history = models.horizon, models.num_history
        self.normalizer = models.suite.flow_map.model.normalizer
        self.latent_shape = tuple(models.suite.autoencoder.latent_shape)
        self.max_batch = int(max_batch) if max_batch else (64 if self.device.type == "cuda" else 4)
        for m in models.modules():  # the tiny decoder too: left on the CPU, every CUDA plan held (found on an H200)
            m.to(self.device)
        g = build_graphs(models, self.flow_steps, self.objective)
        self.graphs = g
        self._bf16 = bf16
        self._cuda_graphs = bool(cuda_graphs)
        mode = "reduce-overhead" if cuda_graphs else None
        wrap = (lambda f: torch.compile(f, mode=mode)) if (compile or cuda_graphs) else (lambda f: f)
        self._rollout, self._heads, self._semantic = wrap(g["rollout"]), wrap(g["heads"]), wrap(g["semantic"])
        self._value = wrap(g["value_grad"].value)
        self._cache = LatentCache()
        self._text_cache: dict[tuple[str, str], torch.Tensor] = {}
        self.frame_scorer = FrameScorer(models.scorer)  # the scorer on observed frames (a put's grasp)
        # (history latents, history actions, noise, the scorer's text embedding, the world model's text embedding)
        self._ctx: tuple[torch.Tensor, ...] | None = None

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self._bf16 else contextlib.nullcontext()

    def _run(self, fn: Any, *args: torch.Tensor) -> Any:
        """Call a (possibly compiled) graph. With CUDA graphs, a new step is marked first and the outputs are cloned:
        torch.compile's CUDA graph trees hand out outputs whose memory the next replay reuses, and the backend holds
        a rollout's latents across the heads and semantic graphs (on an H200: "accessing tensor output of CUDAGraphs
        that has been overwritten by a subsequent run"). NOT YET RUN ON A GPU after this change."""
        if not self._cuda_graphs:
            return fn(*args)
        torch.compiler.cudagraph_mark_step_begin()
        out = fn(*args)
        return tuple(o.clone() for o in out) if isinstance(out, tuple) else out.clone()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def centring_view(self) -> int:
        """View (0 left, 1 right, 2 wrist) of the semantic map (the first of :attr:`map_views`)."""
        return self.map_views[0]

    @property
    def map_views(self) -> tuple[int, ...]:
        """Views whose semantic maps the semantic graph stacks (vertically, in this order)."""
        return self.models.map_view_list

    @property
    def view_geometry(self) -> dict:
        """Camera geometry of the model's views (:meth:`PlannerModels.view_geometry`)."""
        if getattr(self, "_geometry", None) is None:
            self._geometry = self.models.view_geometry()
        return self._geometry

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, np.float32), device=self.device)

    def text_embedding(self, instruction: str) -> torch.Tensor:
        """(1, D) text embedding of the instruction that the semantic scorer scores with (cached)."""
        return self._embed("text", instruction)

    def conditioning_embedding(self, instruction: str) -> torch.Tensor:
        """(1, D) text embedding of the instruction that the world model conditions on (cached): the bundle's
        ``text_conditioner``'s when it has one, else :meth:`text_embedding`."""
        return self._embed("cond_text" if "cond_text" in self.graphs else "text", instruction)

    def _embed(self, graph: str, instruction: str) -> torch.Tensor:
        key = (graph, instruction)
        if key not in self._text_cache:
            ids = torch.as_tensor(self.models.tokenize(instruction), device=self.device)
            with torch.no_grad():
                self._text_cache[key] = self.graphs[graph](ids).float()
        return self._text_cache[key]

    # ------------------------------------------------------------------ Backend protocol
    def set_context(self, ctx: PlanningContext) -> float:
        t0 = time.perf_counter()
        if ctx.history_frames.shape[0] != self.num_history:
            raise BackendError(f"the world model needs {self.num_history} history frames, got "
                               f"{ctx.history_frames.shape[0]}")
        frames = frames_to_float(ctx.history_frames)

        def enc(f: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.graphs["encode"](self._t(f)).float().cpu().numpy()

        lat = self._cache.encode(frames, enc)
        text, cond = self.text_embedding(ctx.scoring_text), self.conditioning_embedding(ctx.instruction)
        noise = make_noise(ctx.seed, (self.horizon, *self.latent_shape))
        self._ctx = (self._t(lat[None]), self._t(ctx.history_actions[None]), self._t(noise), text, cond)
        self._sync()
        return time.perf_counter() - t0

    def _need_ctx(self):
        if self._ctx is None:
            raise BackendError("set_context() must be called before rollout()/value_and_grad()")
        return self._ctx

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        a_all = check_actions(actions, self.horizon)
        hl, ha, nz, text, cond = self._need_ctx()
        parts: list[dict[str, np.ndarray]] = []
        timings = {"rollout": 0.0, "heads": 0.0, "semantic": 0.0}
        for i in range(0, len(a_all), self.max_batch):
            a = self._t(a_all[i:i + self.max_batch])
            with torch.no_grad(), self._autocast():
                t = time.perf_counter()
                lat = self._run(self._rollout, hl, ha, a, nz, *self._text_args(cond))
                self._sync()
                timings["rollout"] += time.perf_counter() - t
                parts.append(self._score_batch(lat, a, text, timings))
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return RolloutOutput(timings=timings, **cat)

    def _score_batch(self, lat: torch.Tensor, a: torch.Tensor, text: torch.Tensor, timings: dict[str, float],
                     frames: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """Heads + semantic reward of one batch of latents (N, H, C, h, w) → the RolloutOutput arrays (numpy);
        adds the stage times to ``timings``. ``frames`` (N, H, 3, 3, H_img, W_img): the semantic scorer reads these
        instead of the decoded latents (the ladder's pixel diagnostic). Called inside no_grad/autocast."""
        t = time.perf_counter()
        uq_map, h_bar, value, value_ent = self._run(self._heads, lat, a)
        self._sync()
        timings["heads"] += time.perf_counter() - t
        t = time.perf_counter()
        if frames is None:
            score, sem_map = self._run(self._semantic, lat, text)
        else:
            score, sem_map = self.graphs["semantic"].score_frames(frames, text)
        self._sync()
        timings["semantic"] += time.perf_counter() - t
        return {k: v.float().cpu().numpy() for k, v in dict(
            h_bar=h_bar, uq_map=uq_map, value=value, value_entropy=value_ent, semantic_score=score,
            semantic_map=sem_map, latents=lat).items()}

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """(n, 3 views, 3, H_img, W_img) frames (uint8 or [0, 1]) → (n, C, h, w) latents (the history encoder; the
        oracle world model of the closed-loop ladder encodes true future frames with it)."""
        with torch.no_grad():
            return self.graphs["encode"](self._t(frames_to_float(frames))).float().cpu().numpy()

    def predict_latents(self, actions: np.ndarray) -> np.ndarray:
        """(N, H, 7) raw future EE poses → (N, H, C, h, w) predicted latents (the world model alone, no scoring)."""
        a_all = check_actions(actions, self.horizon)
        hl, ha, nz, _text, cond = self._need_ctx()
        out = []
        for i in range(0, len(a_all), self.max_batch):
            with torch.no_grad(), self._autocast():
                out.append(self._run(self._rollout, hl, ha, self._t(a_all[i:i + self.max_batch]), nz,
                                     *self._text_args(cond)).float().cpu().numpy())
        return np.concatenate(out)

    def score_latents(self, latents: np.ndarray, actions: np.ndarray, frames: np.ndarray | None = None
                      ) -> RolloutOutput:
        """Heads + semantic reward on given future latents (N, H, C, h, w) of the candidates ``actions``
        (N, H, 7): :meth:`rollout` without the world model (the ladder's oracle scores true futures with it).
        ``frames`` (N, H, 3 views, 3, H_img, W_img), uint8 or [0, 1]: the semantic scorer reads them instead of the
        decoded latents (``oracle+learned-pixels``: the reward without the VAE's losses)."""
        a_all = check_actions(actions, self.horizon)
        text = self._need_ctx()[3]
        lat_all = np.asarray(latents, np.float32)
        px = None if frames is None else frames_to_float(np.asarray(frames))
        parts: list[dict[str, np.ndarray]] = []
        timings = {"heads": 0.0, "semantic": 0.0}
        for i in range(0, len(a_all), self.max_batch):
            a, lat = self._t(a_all[i:i + self.max_batch]), self._t(lat_all[i:i + self.max_batch])
            f = None if px is None else self._t(px[i:i + self.max_batch])
            with torch.no_grad(), self._autocast():
                parts.append(self._score_batch(lat, a, text, timings, f))
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return RolloutOutput(timings=timings, **cat)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(H, C, h, w) predicted latents of one candidate → (H, 3 views, 3, H_img, W_img) frames in [0, 1]
        (debug pictures)."""
        with torch.no_grad(), self._autocast():
            return self.graphs["decode"](self._t(np.asarray(latents, np.float32))).float().cpu().numpy()

    def _text_args(self, cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The world model's text input (the conditioning embedding), when it reads one."""
        return (cond,) if self.models.uses_text else ()

    def value_and_grad(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a_all = check_actions(actions, self.horizon)
        hl, ha, nz, _text, cond = self._need_ctx()
        js, gs = [], []
        for i in range(0, len(a_all), self.max_batch):
            a = self._t(a_all[i:i + self.max_batch]).requires_grad_(True)
            with torch.enable_grad(), self._autocast():
                j = self._run(self._value, hl, ha, a, nz, *self._text_args(cond))
                (g,) = torch.autograd.grad(j.float().sum(), a)
            js.append(j.detach().float().cpu().numpy())
            gs.append(g.float().cpu().numpy())
        self._sync()
        return np.concatenate(js), np.concatenate(gs)
