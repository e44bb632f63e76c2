"""Export of the planner graphs: ONNX (with action gradients) and its manifest.

See :mod:`.onnx_export` (``export_planner``), :mod:`.grad_graph`, :mod:`.compact`. What an export writes and a
runtime reads — the manifest (:mod:`vidplan_core.runtime.manifest`) and TensorRT engines
(:mod:`vidplan_core.runtime.tensorrt_engines`) — lives in the runtime, below this package.
"""
