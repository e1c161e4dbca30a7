"""The VRNN's deterministic recurrence h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}): the cell, one
pass of it over a batch of frames (:class:`StatePath`), and the hand-over of a guide's pass to
the model (:class:`GuideStates`).

Why the hand-over: the guide must run the model's recurrence to draw z_t ~ q(z_t | ., h_{t-1}),
and the model, replayed on the guide's draws, would run the same recurrence again on the same
inputs. Reusing the guide's states halves the RNN work of an SVI step (BENCHMARKS.md,
"Speed-ups on private internals"). The reuse changes no number: a state is taken only while
it is provably the same computation (the guard reads ``Tensor._version``, through
:mod:`ppgen.distributions.fast`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..distributions.fast import unchanged_since, version_stamp
from ..distributions.site_sequence import stack_steps


def cat_features(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate feature vectors whose leading (particle, batch) dims broadcast."""
    lead = [t.shape[:-1] for t in tensors]
    if any(s != lead[0] for s in lead[1:]):  # checked first: broadcasting costs more than the cat
        shape = torch.broadcast_shapes(*lead)
        tensors = [t.expand(*shape, t.shape[-1]) for t in tensors]
    return torch.cat(tensors, dim=-1)


RNN_CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}


class Recurrence(nn.Module):
    """h_t = f([phi_x(x_t), phi_z(z_t)], h_{t-1}): a GRU or LSTM cell with a learned initial state.

    A state is a tuple, ``(h,)`` for a GRU and ``(h, c)`` for an LSTM; inputs and states may
    carry any leading (particle, batch) dims, which broadcast."""

    def __init__(self, kind: str, input_size: int, hidden: int):
        super().__init__()
        if kind not in RNN_CELLS:
            raise ValueError(f"unknown rnn {kind!r}; choose one of: {', '.join(RNN_CELLS)}")
        self.kind = kind
        self.cell = RNN_CELLS[kind](input_size, hidden)
        self.init = nn.Parameter(torch.zeros(2 if kind == "lstm" else 1, hidden))

    def initial(self) -> tuple[torch.Tensor, ...]:
        """The state before the first frame, h_0 (unbatched ``[hidden]`` tensors)."""
        return tuple(self.init.unbind(0))

    def forward(self, inputs: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        lead = inputs.shape[:-1]
        if len(lead) == 1 and all(s.shape[:-1] == lead for s in state):  # [B, F]: the cell's own layout
            out = self.cell(inputs, state[0] if self.kind == "gru" else state)
            return (out,) if self.kind == "gru" else out
        flat = tuple(s.expand(*lead, s.shape[-1]).reshape(-1, s.shape[-1]) for s in state)
        out = self.cell(inputs.reshape(-1, inputs.shape[-1]), flat[0] if self.kind == "gru" else flat)
        out = (out,) if self.kind == "gru" else out
        return tuple(o.reshape(*lead, o.shape[-1]) for o in out)


class StatePath:
    """The states of ``model``'s recurrence along one pass over frames x ``[B, T, x_dim]``,
    extended one step at a time as the z_t arrive (:meth:`advance`)::

        fx_t = phi_x(x_t),  fz_t = phi_z(z_t),  h_t = f(fx_t, fz_t, h_{t-1}),  h_0 learned

    ``model`` supplies ``phi_x``, ``phi_z``, ``prior``, ``next_state`` and ``rnn.initial()``.

    A path may *follow* an earlier, complete path over the same frames (a guide's, through
    :class:`GuideStates`): it takes that path's phi_x(x) and, while each z_t is the very tensor
    that path drew, its phi_z(z_t) and h_t; at the first z_t that differs it computes its own
    from there on. Following, the prior parameters of all steps come from one batched call.
    """

    def __init__(self, model, x: torch.Tensor, follow: "StatePath | None" = None):
        self.model, self.follow = model, follow
        self.fx = follow.fx if follow is not None else model.phi_x(x)  # [..., B, T, hidden]
        self._fx = self.fx.unbind(-2)
        self.states = [model.rnn.initial()]
        self.z: list = []
        self.fz: list = []
        self._prior_ahead = None

    def h_before(self, t: int) -> torch.Tensor:
        """h_{t-1}, the state that z_t and x_t are drawn from (h_0 for t = 0)."""
        return self.states[t][0]

    def prior(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(z_t | h_{t-1}) under the model's prior."""
        if self.follow is None:
            return self.model.prior(self.h_before(t))
        if self._prior_ahead is None:  # the followed path knows every h_{t-1} in advance
            loc, scale = self.model.prior(self.follow.h_before_each())
            self._prior_ahead = list(zip(loc.unbind(-2), scale.unbind(-2)))
        return self._prior_ahead[t]

    def advance(self, t: int, z: torch.Tensor) -> tuple:
        """Take z_t and return h_t (the state tuple)."""
        f = self.follow
        if f is not None and z is f.z[t]:  # same frames, parameters and z_{<=t}: the same h_t
            fz, state = f.fz[t], f.states[t + 1]
        else:
            self.follow = None
            fz = self.model.phi_z(z)
            state = self.model.next_state(self._fx[t], fz, self.states[-1])
        self.z.append(z)
        self.fz.append(fz)
        self.states.append(state)
        return state

    def h_before_each(self) -> torch.Tensor:
        """h_{t-1} for every step taken, stacked: ``[..., B, T, hidden]``."""
        if self.follow is not None and len(self.z) == len(self.follow.z):
            return self.follow.h_before_each()
        if "_h_before" not in self.__dict__ or self._h_before.shape[-2] != len(self.z):
            self._h_before = stack_steps([s[0] for s in self.states[:len(self.z)]])
        return self._h_before

    def fz_each(self) -> torch.Tensor:
        """phi_z(z_t) for every step taken, stacked: ``[..., B, T, hidden]``."""
        return stack_steps(self.fz)


class GuideStates:
    """The last :class:`StatePath` a guide ran with a model's recurrence, kept for the model's
    next call. :meth:`take` hands it over only while reusing it is provably the same
    computation: the same ``x`` and ``mask`` objects, unchanged, no recurrence parameter changed
    in place since (an optimiser step), and the same grad mode. It is handed over at most once."""

    def __init__(self):
        self._offer = None

    def offer(self, path: StatePath, x: torch.Tensor, mask: torch.Tensor, params) -> None:
        self._offer = (path, version_stamp((x, mask, *params)), torch.is_grad_enabled())

    def take(self, x: torch.Tensor, mask: torch.Tensor, params) -> StatePath | None:
        offer, self._offer = self._offer, None
        if offer is None:
            return None
        path, stamp, grad = offer
        if grad != torch.is_grad_enabled() or not unchanged_since(stamp, (x, mask, *params)):
            return None
        return path

    @property
    def pending(self) -> bool:
        return self._offer is not None

    def clear(self) -> None:
        self._offer = None

    def __getstate__(self):
        # a pending path holds autograd graphs, which neither copy nor pickle
        return {"_offer": None}
