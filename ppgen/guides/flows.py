"""An amortized normalizing-flow guide (inverse autoregressive flow, Kingma et al., 2016)."""
from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
from torch import nn
from torch.nn.functional import softplus

from .amortized import AmortizedGuide


class IAFGuide(AmortizedGuide):
    """q(z | x): z = f_K o ... o f_1(eps), eps ~ N(mu(x), diag sigma(x)^2), site "z", where each
    f_k is an affine autoregressive transform conditioned on the encoder features h(x)
    (Pyro's ``ConditionalAffineAutoregressive``). Sampling and scoring its own samples are
    one pass each (IAF direction), which is what the ELBO needs; scoring arbitrary z would
    need the slow inverse."""

    def __init__(self, x_dim: int, z_dim: int, num_flows: int = 2, flow_hidden: int = 64, **kwargs):
        super().__init__(x_dim, z_dim, 2 * z_dim, **kwargs)
        context = self.encoder.out_features
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(z_dim, context, hidden_dims=[flow_hidden, flow_hidden])
            for _ in range(num_flows)
        )

    def posterior(self, x):
        h = self.encoder(x)
        loc, raw_scale = self.head(h).chunk(2, dim=-1)
        base = dist.Normal(loc, softplus(raw_scale) + 1e-4).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(h) for flow in self.flows])
