"""Export of the planner graphs: ONNX (with action gradients), manifest, TensorRT engine cache.

See :mod:`.onnx_export` (``export_planner``), :mod:`.grad_graph`, :mod:`.manifest`, :mod:`.tensorrt`.
"""
