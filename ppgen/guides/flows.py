"""An amortized normalizing-flow guide (inverse autoregressive flow, Kingma et al., 2016)."""
from __future__ import annotations

import pyro.distributions as dist
import pyro.distributions.transforms as T
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn

from ..nn.device import full_precision
from ..nn.mlp import gaussian_params
from .amortized import AmortizedGuide


class _Float32ARN(ConditionalAutoRegressiveNN):
    """Pyro's conditional MADE (the network of one IAF step) whose (mean, log-scale) outputs
    are float32 even when it runs in bfloat16 (:func:`full_precision`), so the flow's
    transform and its log-Jacobian, part of log q(z|x), are computed in float32. Same
    parameters, names and initialisation as the plain network; a no-op under fp32."""

    def forward(self, inputs, context):
        return tuple(full_precision(t) for t in super().forward(inputs, context))


def _conditional_iaf_step(z_dim: int, context: int, hidden: int) -> T.ConditionalAffineAutoregressive:
    """One IAF step as ``T.conditional_affine_autoregressive(z_dim, context, [hidden, hidden])``
    builds it, with the float32-output network."""
    return T.ConditionalAffineAutoregressive(_Float32ARN(z_dim, context, [hidden, hidden]))


class IAFGuide(AmortizedGuide):
    """q(z | x): z = f_K o ... o f_1(eps), eps ~ N(mu(x), diag sigma(x)^2), site "z", where each
    f_k is an affine autoregressive transform conditioned on the encoder features h(x)
    (Pyro's ``ConditionalAffineAutoregressive``). Sampling and scoring its own samples are
    one pass each (IAF direction), which is what the ELBO needs; scoring arbitrary z would
    need the slow inverse."""

    def __init__(self, x_dim: int, z_dim: int, num_flows: int = 2, flow_hidden: int = 64, **kwargs):
        super().__init__(x_dim, z_dim, 2 * z_dim, **kwargs)
        context = self.encoder.out_features
        self.flows = nn.ModuleList(_conditional_iaf_step(z_dim, context, flow_hidden) for _ in range(num_flows))

    def posterior(self, x):
        h = self.encoder(x)
        base = dist.Normal(*gaussian_params(self.head(h))).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(h) for flow in self.flows])
