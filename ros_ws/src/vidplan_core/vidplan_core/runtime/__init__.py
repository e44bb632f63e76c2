"""Runtimes for the planner's models behind one :class:`~vidplan_core.runtime.base.Backend` protocol.

* :mod:`.base` — ``Backend``, ``PlanningContext``, ``RolloutOutput``, ``BackendError``;
* :mod:`.torch_backend` — ``TorchBackend`` (eager; torch.compile; CUDA graphs and bf16 on GPU);
* :mod:`.ort_backend` — ``OnnxRuntimeBackend`` (CPU / CUDA / TensorRT execution providers);
* :mod:`.tensorrt_backend` — ``TensorRTBackend`` (native engines; needs TensorRT + GPU);
* :mod:`.graphs`, :mod:`.bundle` — the graphs every runtime computes, and the model bundle;
* :mod:`.manifest`, :mod:`.tensorrt_engines` — what an export writes and a runtime reads: the manifest of graphs
  and hashes, TensorRT engines built for the GPU at hand and cached;
* :mod:`.loader` — the one loader of a model directory (its index ``bundle.json`` names every part):
  ``load_planner_backend`` for the planner node, eval sim, eval-bag and the demo.

Import the submodules directly; this package imports nothing heavy.
"""
