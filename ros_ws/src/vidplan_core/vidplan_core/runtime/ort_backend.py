"""onnxruntime backend: runs the exported planner graphs (``vidplan export``) with any execution provider.

Execution providers are chosen by configuration: ``"cpu"`` (tested here), ``"cuda"`` (onnxruntime-gpu) or
``"tensorrt"`` (onnxruntime's TensorRT EP with fp16 and its own engine cache). A provider that is not installed is
a start-up error naming the providers that are. Graphs are traced per candidate batch size; a call with N
candidates is split over the exported sizes (padding the last chunk by repeating its final candidate).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vidplan_core.runtime.base import BackendError, PlanningContext, RolloutOutput, check_actions
from vidplan_core.runtime.bundle import LatentCache, frames_to_float, make_noise, tokenize
from vidplan_core.runtime.manifest import Manifest, load_manifest
from vidplan_core.spaces import ActionNormalizer

__all__ = ["OnnxRuntimeBackend", "ort_providers"]

ProviderName = Literal["cpu", "cuda", "tensorrt"]


def ort_providers(kind: ProviderName | str, cache_dir: str | Path | None = None, fp16: bool = True
                  ) -> list[Any]:
    """onnxruntime provider list for a configuration name; raises BackendError if it is not available."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if kind == "cpu":
        want: list[Any] = ["CPUExecutionProvider"]
    elif kind == "cuda":
        want = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif kind == "tensorrt":
        opts: dict[str, Any] = {"trt_fp16_enable": bool(fp16), "trt_engine_cache_enable": True}
        if cache_dir is not None:
            opts["trt_engine_cache_path"] = str(cache_dir)
        want = [("TensorrtExecutionProvider", opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        raise BackendError(f"unknown onnxruntime provider configuration {kind!r}; use 'cpu', 'cuda' or 'tensorrt'")
    first = want[0][0] if isinstance(want[0], tuple) else want[0]
    if first not in avail:
        raise BackendError(f"onnxruntime execution provider {first} is not available in this installation "
                           f"(onnxruntime {ort.__version__} has {avail}); install onnxruntime-gpu with matching "
                           "CUDA/TensorRT libraries or choose provider 'cpu'")
    return want


class OnnxRuntimeBackend:
    """:class:`~vidplan_core.runtime.base.Backend` over an export directory.

    Args:
        export_dir: directory written by ``vidplan export`` (manifest.json + ONNX files + tokenizer/).
        flow_steps: K; must be one of the exported rollout step counts (default: the first exported).
        provider: "cpu", "cuda" or "tensorrt".
        threads: intra-op threads (None = onnxruntime's default).
        verify_hashes: check every file's sha256 against the manifest at start-up.
        require_grad: fail at start-up when the value-and-grad graph is missing (False: forward-only use, e.g.
            CEM; ``value_and_grad`` then raises).
    """

    name = "onnxruntime"
    #: the semantic scorer on observed frames (:class:`~vidplan_core.runtime.frame_scorer.FrameScorer`): the export has
    #: no graph for it; :func:`~vidplan_core.runtime.loader.load_planner_backend` sets the bundle's torch scorer here
    frame_scorer: Any = None

    def __init__(self, export_dir: str | Path, flow_steps: int | None = None, provider: ProviderName = "cpu",
                 threads: int | None = None, verify_hashes: bool = True, trt_cache_dir: str | Path | None = None,
                 require_grad: bool = True):
        import onnxruntime as ort

        self.manifest: Manifest = load_manifest(export_dir, verify_hashes=verify_hashes)
        m = self.manifest.model
        ks = sorted(m["flow_steps"])
        self.flow_steps = int(flow_steps if flow_steps is not None else ks[0])
        if self.flow_steps not in ks:
            raise BackendError(f"flow_steps={self.flow_steps} was not exported (available K: {ks}); re-export with "
                               f"--flow-steps {self.flow_steps}")
        self.horizon, self.num_history = int(m["horizon"]), int(m["num_history"])
        self.latent_shape = tuple(m["latent_shape"])
        self.uses_text = bool(m["uses_text"])
        self.normalizer = ActionNormalizer.from_state_dict(m["action_stats"])
        self.objective = m.get("objective", {})
        self._providers = ort_providers(provider, trt_cache_dir)
        so = ort.SessionOptions()
        if threads is not None:
            so.intra_op_num_threads = int(threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._sessions: dict[str, Any] = {}
        self._batches: dict[str, list[int]] = {}
        for name, g in self.manifest.graphs.items():
            base = re.sub(r"_n\d+$", "", name)
            if base.startswith(("rollout_k", "value_grad_k")) and not base.endswith(f"_k{self.flow_steps}"):
                continue
            self._sessions[name] = ort.InferenceSession(str(self.manifest.path(name)), so,
                                                        providers=self._providers)
            if g.batch is not None:
                self._batches.setdefault(re.sub(r"_k\d+$", "", base), []).append(int(g.batch))
        self.grounded = m.get("semantic_kind") == "grounded"
        text_graph = "text_proj" if self.grounded else "text"
        self._cond_graph = ("cond_" + text_graph) if m.get("text_conditioner") else text_graph
        for need in ("encode", text_graph, self._cond_graph, "rollout", "heads", "semantic") + (
                ("value_grad",) if require_grad else ()):
            if need not in self._batches and need not in self._sessions:
                raise BackendError(f"export at {export_dir} lacks the '{need}' graph for K={self.flow_steps}")
        for v in self._batches.values():
            v.sort()
        from transformers import AutoTokenizer

        tok_dir = Path(export_dir) / "tokenizer"
        if not tok_dir.is_dir():
            raise BackendError(f"export at {export_dir} has no tokenizer/ directory")
        self._tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        self._cache = LatentCache()
        self._text_cache: dict[tuple[str, str], np.ndarray] = {}
        self._ctx: dict[str, np.ndarray] | None = None

    @property
    def centring_view(self) -> int:
        """View (0 left, 1 right, 2 wrist) whose semantic map the exported ``semantic`` graph returns for the
        centring term; exports made before the option existed computed it on the scored view (usually left) —
        re-export for the wrist view."""
        m = self.manifest.model
        return int(m.get("centring_view", m.get("semantic_view", 0)))

    @property
    def map_views(self) -> tuple[int, ...]:
        """Views whose semantic maps the exported semantic graph stacks (older exports: the centring view)."""
        m = self.manifest.model
        return tuple(int(v) for v in m.get("map_views") or [self.centring_view])

    @property
    def view_geometry(self) -> dict:
        """Camera geometry of the model's views (normalised intrinsics; older exports: the default calibration)."""
        g = self.manifest.model.get("view_geometry")
        if g is None:
            from vidplan_core.models.action_maps import normalised_view_geometry

            g = normalised_view_geometry(None)
        return g

    @property
    def providers(self) -> list[str]:
        """Providers the sessions actually use."""
        return next(iter(self._sessions.values())).get_providers()

    # ------------------------------------------------------------------ helpers
    def _graph_name(self, kind: str, n: int) -> str:
        k = f"_k{self.flow_steps}" if kind in ("rollout", "value_grad") else ""
        return f"{kind}{k}_n{n}"

    def batch_plan(self, n: int, kind: str = "rollout") -> list[int]:
        """Exported batch sizes called, in order, for ``n`` candidates of graph ``kind`` ("rollout", "heads",
        "semantic", "value_grad"): greedily the largest exported size that fits what is left, else the smallest
        size (padded by repeating the last candidate). ``sum(plan) - n`` candidates are padding, computed and dropped.
        """
        sizes = self._batches[kind]
        plan: list[int] = []
        left = int(n)
        while left > 0:
            fit = [b for b in sizes if b <= left]
            plan.append(max(fit) if fit else min(sizes))
            left -= min(plan[-1], left)
        return plan

    def batching_note(self, n: int) -> str | None:
        """A warning when ``n`` candidates per call would waste more than a quarter of the forward work on padding
        (the export lacks a batch size that fits), else None. Shown at start-up by the planner node."""
        plan = self.batch_plan(n, "rollout")
        if sum(plan) <= 1.25 * n:
            return None
        return (f"{n} candidates per plan cycle run as exported batch(es) {plan} of the rollout/heads/semantic graphs "
                f"(exported sizes {self._batches['rollout']}): {sum(plan) / n:.1f}x the forward work is computed, "
                f"the padding is dropped. Re-export with --batch {n} (vidplan export ... --batch 1,{n},16) to avoid it")

    def _run_batched(self, kind: str, batched: dict[str, np.ndarray], shared: dict[str, np.ndarray]
                     ) -> list[np.ndarray]:
        """Run a per-candidate graph over N candidates using the exported batch sizes (:meth:`batch_plan`)."""
        n_total = len(next(iter(batched.values())))
        outs: list[list[np.ndarray]] = []
        i = 0
        for b in self.batch_plan(n_total, kind):
            take = min(b, n_total - i)
            feed = dict(shared)
            for k, v in batched.items():
                chunk = v[i:i + take]
                if take < b:  # pad by repeating the last candidate; padded outputs are dropped
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - take, 0)])
                feed[k] = chunk
            res = self._sessions[self._graph_name(kind, b)].run(None, feed)
            outs.append([r[:take] for r in res])
            i += take
        return [np.concatenate([o[j] for o in outs]) for j in range(len(outs[0]))]

    def _sentence_encoder(self) -> Any:
        """The grounded scorer's frozen sentence encoder (the installed all-MiniLM-L6-v2; loaded on first use, one
        copy per process: :meth:`~vidplan_core.models.grounded.SentenceEncoder.shared`, also the observed-frame
        scorer's)."""
        if getattr(self, "_sentence", None) is None:
            from vidplan_core.models.grounded import TEXT_ENCODER_NAME, SentenceEncoder

            name = self.manifest.model.get("text_encoder")
            if name != TEXT_ENCODER_NAME:
                raise BackendError(f"the export's grounded scorer was trained on text encoder {name!r}; only "
                                   f"{TEXT_ENCODER_NAME} is installed")
            self._sentence = SentenceEncoder.shared(max_len=int(self.manifest.model["text_length"]))
        return self._sentence

    def text_embedding(self, instruction: str) -> np.ndarray:
        """(1, D) text embedding of the instruction that the semantic graph scores with (cached)."""
        return self._embed("text_proj" if self.grounded else "text", instruction)

    def conditioning_embedding(self, instruction: str) -> np.ndarray:
        """(1, D) text embedding the world model conditions on (cached): the export's ``cond_text(_proj)`` graph
        when the bundle had a text_conditioner, else :meth:`text_embedding`."""
        return self._embed(self._cond_graph, instruction)

    def _embed(self, graph: str, instruction: str) -> np.ndarray:
        key = (graph, instruction)
        if key not in self._text_cache:
            m = self.manifest.model
            ids = tokenize(self._tokenizer, m["semantic_kind"], int(m["text_length"]), instruction)
            if self.grounded:  # the frozen sentence encoder runs in torch, once per instruction
                import torch

                with torch.no_grad():  # token ids (1, L) → (1, 384) float32
                    sent = self._sentence_encoder()(torch.as_tensor(ids)).numpy().astype(np.float32)
                self._text_cache[key] = self._sessions[graph].run(None, {"sentence_embeds": sent})[0]
            else:
                self._text_cache[key] = self._sessions[graph].run(None, {"input_ids": ids})[0]
        return self._text_cache[key]

    # ------------------------------------------------------------------ Backend protocol
    def set_context(self, ctx: PlanningContext) -> float:
        t0 = time.perf_counter()
        if ctx.history_frames.shape[0] != self.num_history:
            raise BackendError(f"the world model needs {self.num_history} history frames, got "
                               f"{ctx.history_frames.shape[0]}")
        frames = frames_to_float(ctx.history_frames)
        lat = self._cache.encode(frames, self.encode_frames)
        self._ctx = {"history_latents": lat[None].astype(np.float32),
                     "history_actions": ctx.history_actions[None].astype(np.float32),
                     "noise": make_noise(ctx.seed, (self.horizon, *self.latent_shape))}
        self._text = self.text_embedding(ctx.scoring_text)
        if self.uses_text:
            self._ctx["text_embeds"] = self.conditioning_embedding(ctx.instruction)
        return time.perf_counter() - t0

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """(n, 3 views, 3, H_img, W_img) frames (uint8 or [0, 1]) → (n, C, h, w) latents (history encoder)."""
        f = frames_to_float(frames)
        sess = self._sessions["encode"]
        t_exp = self.manifest.graphs["encode"].inputs["frames"][0]
        out = []
        for i in range(0, len(f), t_exp):  # the encode graph takes a fixed number of frames
            c = f[i:i + t_exp]
            pad = t_exp - len(c)
            if pad:
                c = np.concatenate([c, np.repeat(c[-1:], pad, 0)])
            out.append(sess.run(None, {"frames": c})[0][: t_exp - pad])
        return np.concatenate(out)

    def predict_latents(self, actions: np.ndarray) -> np.ndarray:
        """(N, H, 7) raw future EE poses → (N, H, C, h, w) predicted latents (the world model alone, no scoring)."""
        a = check_actions(actions, self.horizon)
        (lat,) = self._run_batched("rollout", {"actions": a}, self._need_ctx())
        return lat

    def score_latents(self, latents: np.ndarray, actions: np.ndarray) -> RolloutOutput:
        """Heads + semantic reward on given future latents (N, H, C, h, w) of the candidates ``actions``
        (N, H, 7): :meth:`rollout` without the world model (the ladder's oracle scores true futures with it)."""
        a = check_actions(actions, self.horizon)
        self._need_ctx()
        lat = np.ascontiguousarray(latents, dtype=np.float32)
        t1 = time.perf_counter()
        uq_map, h_bar, value, value_ent = self._run_batched("heads", {"latents": lat, "actions": a}, {})
        t2 = time.perf_counter()
        score, sem_map = self._run_batched("semantic", {"latents": lat}, {"text_embeds": self._text})
        t3 = time.perf_counter()
        return RolloutOutput(h_bar=h_bar, uq_map=uq_map, value=value, value_entropy=value_ent,
                             semantic_score=score, semantic_map=sem_map, latents=lat,
                             timings={"heads": t2 - t1, "semantic": t3 - t2})

    def _need_ctx(self) -> dict[str, np.ndarray]:
        if self._ctx is None:
            raise BackendError("set_context() must be called before rollout()/value_and_grad()")
        return self._ctx

    def rollout(self, actions: np.ndarray) -> RolloutOutput:
        a = check_actions(actions, self.horizon)
        t = time.perf_counter()
        lat = self.predict_latents(a)
        t_roll = time.perf_counter() - t
        out = self.score_latents(lat, a)
        out.timings["rollout"] = t_roll
        return out

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """(H, C, h, w) predicted latents of one candidate → (H, 3 views, 3, H_img, W_img) frames in [0, 1]
        (debug pictures). Raises :class:`BackendError` for an export without the ``decode`` graph (exports
        before it existed): re-export to get it."""
        if "decode" not in self._sessions:
            raise BackendError(f"the export at {self.manifest.directory} has no 'decode' graph (older vidplan export); "
                               "re-export with `vidplan export` to get the planner's debug pictures")
        lat = np.ascontiguousarray(latents, dtype=np.float32)
        want = tuple(self.manifest.graphs["decode"].inputs["latents"])
        if lat.shape != want:
            raise BackendError(f"decode: latents must be {want} (H, C, h, w), got {lat.shape}")
        return self._sessions["decode"].run(None, {"latents": lat})[0]

    def value_and_grad(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = check_actions(actions, self.horizon)
        if "value_grad" not in self._batches:
            raise BackendError(f"this export has no value_grad_k{self.flow_steps} graph (forward-only backend)")
        j, g = self._run_batched("value_grad", {"actions": a}, self._need_ctx())
        return j, g
