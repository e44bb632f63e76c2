"""Samplers and training losses, apart from the networks (as diffusers keeps schedulers apart from models).

``edm``: the teacher's EDM sampler (Euler/Heun over a Karras σ schedule) and its training loss (Eq. 2).
``flow_map``: the flow map's time grids, K-step rollout and progressive self-distillation loss (Algorithm 2).

The networks (:mod:`vidplan_core.models`) only evaluate: ``WorldModel.denoise`` (D(x; σ)) and ``FlowMap.jump``
(X_{s,t}). Functions here take the model as their first argument and hold no state of their own.
"""

from .edm import edm_loss, edm_sample
from .flow_map import flow_map_sample, initial_noise, psd_loss, time_grid

__all__ = ["edm_loss", "edm_sample", "flow_map_sample", "initial_noise", "psd_loss", "time_grid"]
