"""The Ladder VAE's inference model (Sønderby et al., 2016) for a hierarchical VAE."""
from __future__ import annotations

from typing import Sequence

import pyro
import torch
from torch import nn

from ..distributions.fast import ReparamNormal
from ..models.interfaces import TopDown
from ..nn.device import full_precision
from ..nn.mlp import MLP, Scale, gaussian_params


def precision_weighted(loc_up, scale_up, loc_down, scale_down) -> tuple[torch.Tensor, torch.Tensor]:
    """The product of two diagonal Gaussians, renormalised: N(m, s^2) with 1/s^2 = 1/s_up^2 +
    1/s_down^2 and m = s^2 (m_up / s_up^2 + m_down / s_down^2), the Ladder VAE's merge of the
    bottom-up estimate from x with the generative model's top-down p(z_l | z_{l+1})."""
    prec_up, prec_down = scale_up.pow(-2), scale_down.pow(-2)
    var = 1.0 / (prec_up + prec_down)
    return var * (loc_up * prec_up + loc_down * prec_down), var.sqrt()


class LadderGuide(nn.Module):
    """q(z_1, .., z_L | x) = q(z_L | x) prod_{l<L} q(z_l | z_{l+1}, x), sites "zL" .. "z1" (top first):

        d_1 = f_1(x), d_l = f_l(d_{l-1})                 deterministic bottom-up pass (self.bottom_up)
        (m_l, s_l) = head_l(d_l)                         the bottom-up estimate of layer l (self.heads)
        q(z_L | x) = N(m_L, diag s_L^2)
        q(z_l | z_{l+1}, x) = N(m, s^2) merging N(m_l, s_l^2) with the model's p(z_l | z_{l+1})
                                                         (:func:`precision_weighted`)

    The top-down half is the generative model's own :meth:`HierarchicalVAE.conditional`, held
    as a plain reference (``self.conditional``), not a submodule: the guide's state holds its
    bottom-up networks only, and the gradient of log q reaches the shared top-down networks
    all the same. With linear bottom-up maps and a linear-Gaussian model whose posterior
    factorises so, q is the exact posterior (tests/test_hvae.py checks it against the closed form).

    ``posterior(x)`` is q(z_L | x), the top layer's (the VampPrior of the top layer reads it).
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], conditional, *, bottom_up: Sequence[nn.Module] | None = None,
                 heads: Sequence[nn.Module] | None = None, hidden: int = 256, input_scale: float = 1.0):
        super().__init__()
        self.x_dim, self.z_dims = int(x_dim), tuple(int(d) for d in z_dims)
        self.conditional = conditional
        if bottom_up is None:
            first = nn.Sequential(Scale(input_scale), nn.Linear(self.x_dim, hidden), nn.ReLU())
            bottom_up = [first] + [nn.Sequential(MLP(hidden, [], hidden), nn.ReLU()) for _ in self.z_dims[1:]]
            heads = [nn.Linear(hidden, 2 * size) for size in self.z_dims]
        if heads is None or len(bottom_up) != len(self.z_dims) or len(heads) != len(self.z_dims):
            raise ValueError(f"{len(self.z_dims)} layers need as many bottom-up networks and heads, got "
                             f"{len(bottom_up)} and {0 if heads is None else len(heads)}")
        self.bottom_up, self.heads = nn.ModuleList(bottom_up), nn.ModuleList(heads)

    @property
    def z_dim(self) -> int:
        return self.z_dims[-1]

    @classmethod
    def for_model(cls, model, **kwargs) -> "LadderGuide":
        """A ladder guide for a :class:`ppgen.models.HierarchicalVAE` (its sizes, its top-down pass and
        the likelihood's input scale)."""
        cls.check_model(model)
        kwargs.setdefault("input_scale", getattr(model.likelihood, "input_scale", 1.0))
        return cls(model.x_dim, model.z_dims, model.conditional, **kwargs)

    @staticmethod
    def check_model(model) -> None:
        """The ladder guide needs a hierarchy with a top-down pass (:class:`ppgen.models.interfaces.TopDown`)."""
        if not isinstance(model, TopDown):
            raise ValueError(f"the ladder guide needs a hierarchical model (ppgen.models.HierarchicalVAE, sites z1..zL "
                             f"with a top-down pass); {type(model).__name__} is not one")

    def bottom_up_params(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(m_l, s_l) for every layer, bottom to top, from one deterministic pass over x."""
        out, d = [], x
        for net, head in zip(self.bottom_up, self.heads):
            d = net(d)
            out.append(gaussian_params(head(d)))
        return out

    def forward(self, x: torch.Tensor) -> None:
        estimates = self.bottom_up_params(x)
        top = len(self.z_dims) - 1
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(f"z{top + 1}", ReparamNormal(*estimates[top]).to_event(1))
            for layer in reversed(range(top)):
                down = self.conditional(layer, z)
                z = pyro.sample(f"z{layer + 1}", ReparamNormal(*precision_weighted(*estimates[layer], *down)).to_event(1))

    def posterior(self, x: torch.Tensor):
        """q(z_L | x), batch shape [N], event shape [z_dims[-1]]."""
        d = x
        for net in self.bottom_up:
            d = net(d)
        return ReparamNormal(*gaussian_params(full_precision(self.heads[-1](d)))).to_event(1)
