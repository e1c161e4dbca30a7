"""Guides for the VRNN: q(z_{1:T} | x_{1:T}) factorised over steps along the model's own recurrence."""
from __future__ import annotations

import pyro
import torch
from torch import nn

from ..models.recurrence import StatePath, cat_features
from ..models.vrnn import VRNN, sequence_length
from ..nn.mlp import gaussian_params
from ..nn import MLP
from ..distributions.site_sequence import SiteSequence, normal
from .sites import SiteMismatchError


class FilteringGuide(nn.Module):
    """q(z_{1:T} | x_{1:T}) = prod_t q(z_t | x_t, h_{t-1}), the VRNN paper's encoder::

        q(z_t | x_t, h_{t-1}) = N(mu, diag sigma^2)(head(phi_x(x_t), h_{t-1}))   site "z_{t}"

    in the plate "data", masked like the model. h_{t-1} is the model's own state, which
    depends on x_{<t} and on the z_{<t} this guide sampled: the guide runs the model's
    recurrence with the model's phi_x, phi_z and rnn, which it uses but does not own (they are
    not in ``guide.parameters()``); its own parameters are the head. After each run it hands
    its pass over the data to the model (``model.guide_states``) so that the model, replayed
    on this trace, need not run the RNN again.
    """

    def __init__(self, model: VRNN, hidden: int | None = None):
        super().__init__()
        if not isinstance(model, VRNN):
            raise TypeError(f"{type(self).__name__} guides a VRNN, got {type(model).__name__}")
        object.__setattr__(self, "model", model)  # a plain reference: the model's weights stay the model's
        hidden = hidden or model.hidden
        self.head = MLP(self.context_features + model.hidden, [hidden], 2 * model.z_dim)

    @classmethod
    def for_model(cls, model: VRNN, **kwargs):
        return cls(model, **kwargs)

    @property
    def context_features(self) -> int:
        return self.model.hidden

    def check_model(self, model) -> None:
        if model is not self.model:
            raise SiteMismatchError(f"{type(self).__name__} was built for another model instance; "
                                    f"build it with {type(self).__name__}.for_model(model)")

    def context(self, fx: torch.Tensor, mask: torch.Tensor):
        """What q(z_t | ...) sees of the data at step t besides h_{t-1}: phi_x(x_t)."""
        return fx.unbind(1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        model = self.model
        T = sequence_length(mask)
        mask_t = mask[:, :T]
        h = StatePath(model, x[:, :T])
        context = self.context(h.fx, mask_t)
        q = SiteSequence(normal, mask_t, (model.z_dim,))
        with pyro.plate("data", x.shape[0], dim=-1):
            for t in pyro.markov(range(T)):
                loc, scale = gaussian_params(self.head(cat_features(context[t], h.h_before(t))))
                z = pyro.sample(f"z_{t}", q.step(t, loc, scale))   # z_t ~ q(z_t | ., h_{t-1})
                h.advance(t, q.record(z))                          # the model's h_t, with this z_t
        model.guide_states.offer(h, x, mask, model.recurrence_parameters())


class SmoothingGuide(FilteringGuide):
    """q(z_{1:T} | x_{1:T}) = prod_t q(z_t | x_{t:T}, h_{t-1}), a structured inference network in
    the spirit of Krishnan et al.'s DMM::

        b_t = backward GRU over phi_x(x_L), ..., phi_x(x_t)   (L: the sequence's last real frame)
        q(z_t | x_{t:T}, h_{t-1}) = N(mu, diag sigma^2)(head(b_t, h_{t-1}))      site "z_{t}"

    h_{t-1} (the model's state, through x_{<t} and z_{<t}) carries the past, b_t the present
    and future. Each sequence is reversed within its own length, so the backward pass starts
    at its last real frame and padding never enters b_t. Own parameters: the backward GRU and
    the head; phi_x, phi_z and rnn are the model's, as for :class:`FilteringGuide`.
    """

    def __init__(self, model: VRNN, hidden: int | None = None):
        super().__init__(model, hidden)
        self.backward_rnn = nn.GRU(model.hidden, model.hidden, batch_first=True)

    def context(self, fx, mask):
        lengths = mask.sum(-1)
        b, _ = self.backward_rnn(reverse_padded(fx, lengths))
        return reverse_padded(b, lengths).unbind(1)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``x [B, T, F]`` within its first ``lengths[b]`` frames; padding stays put."""
    t = torch.arange(x.shape[1], device=x.device)
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx[..., None].expand_as(x))
