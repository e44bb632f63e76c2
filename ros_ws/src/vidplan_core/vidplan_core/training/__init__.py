"""Training of every vidplan model on HF ``accelerate`` (``vidplan train KIND --config FILE``).

- :mod:`.config`: the YAML schema (pydantic) and the resume rules.
- :mod:`.trainer`: the generic loop (checkpoints, resume, logs, validation, NaN stop).
- :mod:`.recipes`: what each kind trains (vae, world-model, flow-map, heads, semantic).
- :mod:`.siglip`: the small SigLIP model, its tokenizer and the sigmoid loss.
- ``configs/``: bundled configs (``tiny-*`` for tests, ``demo-*`` for the demo models).

Import submodules explicitly; this package imports nothing heavy.
"""
