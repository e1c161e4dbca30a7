"""The variational recurrent neural network (Chung et al., 2015) as a Pyro model of sequences."""
from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from torch import nn

from .. import likelihoods
from ..nn.mlp import MLP, eval_mode
from ..priors import STEP_PRIORS
from ..distributions.site_sequence import SiteSequence, normal, stack_steps


def cat_features(*tensors: torch.Tensor) -> torch.Tensor:
    """Concatenate feature vectors whose leading (particle, batch) dims broadcast."""
    lead = [t.shape[:-1] for t in tensors]
    if any(s != lead[0] for s in lead[1:]):  # checked first: broadcasting costs more than the cat
        shape = torch.broadcast_shapes(*lead)
        tensors = [t.expand(*shape, t.shape[-1]) for t in tensors]
    return torch.cat(tensors, dim=-1)


def sequence_length(mask: torch.Tensor) -> int:
    """Frames up to the last real one in the batch: later steps are padding everywhere and
    would contribute nothing, so models and guides skip them."""
    return int(mask.sum(-1).max())


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


@dataclass
class FilteredPass:
    """A guide's run of the model's recurrence over data ``(x, mask)``: phi_x(x_t), the sampled
    z_t, phi_z(z_t) and the states h_0..h_T, with the parameter versions it was computed under."""

    x: torch.Tensor
    mask: torch.Tensor
    data_versions: tuple
    fx: tuple
    z: list
    fz: list
    states: list
    versions: tuple
    grad: bool


class VRNN(nn.Module):
    """Variational RNN over sequences x_1..x_T of ``x_dim``-vectors (a piano roll: 88 keys)::

        z_t ~ p(z_t | h_{t-1})                    site "z_{t}", event [z_dim]    (self.prior)
        x_t ~ p(x_t | z_t, h_{t-1}) = lik(dec(phi_z(z_t), h_{t-1}))   site "x_{t}", observed
        h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})  deterministic, GRU or LSTM  (self.rnn)

    for each sequence in the plate "data" (dim -1), t = 0..T-1 in ``pyro.markov``. Priors
    (:data:`STEP_PRIORS`, swap in one line: ``vrnn.prior = priors.StandardNormalStep(vrnn.z_dim)``):
    ``"learned"`` p(z_t | h_{t-1}) = N(mu(h_{t-1}), diag sigma(h_{t-1})^2) (the paper's) and
    ``"standard"`` p(z_t) = N(0, I). Likelihoods: ``"bernoulli"`` (binary piano rolls, keys
    independent given z_t and h_{t-1}, as in the paper), ``"autoregressive_bernoulli"`` (binary,
    p(x_t|z_t,h_{t-1}) = prod_k p(x_{t,k} | x_{t,<k}, z_t, h_{t-1}), so the notes of a chord stay
    dependent; see :mod:`ppgen.nn.made`) or ``"normal"`` (real values, one learned scale per
    dimension). The default sizes (z_dim 16, hidden 128) did best on JSB Chorales among those we
    tried without dropout: larger RNNs overfit sooner.

    ``dropout`` (default 0) regularises the deterministic path, which is what overfits on small
    corpora such as JSB: in training mode it drops units of phi_x(x_t) (the input to the
    recurrence and to the guides) and of the decoder's input [phi_z(z_t), h_{t-1}]. Each
    training step then scores a randomly thinned network; evaluation, sampling and
    continuation run in eval mode, where dropout is off and the model is the full one.

    ``forward(x, mask)`` scores observed sequences: x ``[B, T, x_dim]``, mask ``[B, T]`` bool,
    True on real frames, padding at the end. Padded steps are masked out of every site; steps
    after the batch's longest sequence are skipped. Latent sites are sampled first and the
    emissions are scored afterwards in one batched call (given observed x they do not feed
    back into the recurrence). When the model is replayed against a guide trace of the same
    data, it reuses the h_t that the guide computed with this model's networks rather than
    running the RNN a second time (see :meth:`remember_filtering`).
    """

    def __init__(self, x_dim: int = 88, z_dim: int = 16, hidden: int = 128, *, rnn: str = "gru",
                 prior: str = "learned", likelihood: str = "bernoulli", likelihood_kwargs: dict | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout}")
        if prior not in STEP_PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of: {', '.join(STEP_PRIORS)}")
        if likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of: {', '.join(likelihoods.LIKELIHOODS)}")
        self.x_dim, self.z_dim, self.hidden = int(x_dim), int(z_dim), int(hidden)
        self.likelihood = likelihoods.LIKELIHOODS[likelihood](x_dim, **(likelihood_kwargs or {}))
        self.phi_x = nn.Sequential(MLP(x_dim, [hidden], hidden), nn.ReLU(), nn.Dropout(dropout))
        self.phi_z = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU())
        self.prior = STEP_PRIORS[prior](z_dim, hidden)
        self.decoder_dropout = nn.Dropout(dropout)
        self.decoder = MLP(2 * hidden, [hidden], self.likelihood.out_features)
        self.rnn = Recurrence(rnn, 2 * hidden, hidden)
        self._filtered: FilteredPass | None = None

    @classmethod
    def for_data(cls, data, **kwargs) -> "VRNN":
        """Build with the key count and likelihood of a :class:`ppgen.data.SequenceDataset`."""
        kwargs.setdefault("likelihood", data.likelihood)
        return cls(data.x_dim, **kwargs)

    # -- the Pyro model ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        filtered = self._take_filtered(x, mask)
        T = sequence_length(mask)
        x, mask = x[:, :T], mask[:, :T]
        fx = filtered.fx if filtered is not None else self.phi_x(x).unbind(1)
        h_prev_all = stack_steps([s[0] for s in filtered.states[:T]]) if filtered is not None else None
        zs = SiteSequence(normal, mask, (self.z_dim,),
                          batched=self.prior(h_prev_all) if filtered is not None else None)
        state, h_prev, fz = self.rnn.initial(), [], []
        with pyro.plate("data", x.shape[0], dim=-1):
            for t in pyro.markov(range(T)):
                h = state[0]
                step = zs.step(t) if filtered is not None else zs.step(t, *self.prior(h))
                z = zs.record(pyro.sample(f"z_{t}", step))
                if filtered is not None and z is filtered.z[t]:  # same data, params, z: same h_t
                    f, state = filtered.fz[t], filtered.states[t + 1]
                else:
                    filtered = None
                    f = self.phi_z(z)
                    state = self.next_state(fx[t], f, state)
                h_prev.append(h)
                fz.append(f)
            if filtered is None:
                h_prev_all = stack_steps(h_prev)
            raw = self.decode(stack_steps(fz), h_prev_all)
            xs = SiteSequence(self.likelihood, mask, (self.x_dim,), batched=(raw,), reparameterized=False)
            frames = x.unbind(1)
            for t in pyro.markov(range(T)):
                pyro.sample(f"x_{t}", xs.step(t), obs=xs.record(frames[t]))

    def decode(self, fz: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """The raw parameters of p(x_t | z_t, h_{t-1}) from phi_z(z_t) and h_{t-1}."""
        return self.decoder(self.decoder_dropout(cat_features(fz, h_prev)))

    def next_state(self, fx_t: torch.Tensor, fz_t: torch.Tensor, state: tuple) -> tuple:
        """h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}) from the features of x_t and z_t."""
        return self.rnn(cat_features(fx_t, fz_t), state)

    # -- sharing the recurrence with a guide --------------------------------------------------
    def recurrence_versions(self) -> tuple:
        """(parameter, version) for every parameter that h_t depends on."""
        params = [*self.phi_x.parameters(), *self.phi_z.parameters(), *self.rnn.parameters()]
        return tuple((p, p._version) for p in params)

    def remember_filtering(self, x, mask, fx, z, fz, states) -> None:
        """Called by a guide that ran this model's recurrence over ``(x, mask)`` with its own z_t.

        The next model call reuses these h_t only while it is provably the same computation:
        the same ``x`` and ``mask`` objects, unchanged, the same z_t objects at every step (as under
        ``poutine.replay`` of that guide's trace), no parameter changed in place since (the
        version counters), and the same grad mode. At the first z_t that differs the model
        computes its own states from there on. The record is used at most once."""
        self._filtered = FilteredPass(x, mask, (x._version, mask._version), tuple(fx), z, fz, states,
                                      self.recurrence_versions(), torch.is_grad_enabled())

    def _take_filtered(self, x, mask) -> FilteredPass | None:
        f, self._filtered = self._filtered, None
        if (f is None or f.x is not x or f.mask is not mask or f.data_versions != (x._version, mask._version)
                or f.grad != torch.is_grad_enabled()):
            return None
        now = self.recurrence_versions()
        if len(now) != len(f.versions) or any(p is not q or v != w for (p, v), (q, w) in zip(now, f.versions)):
            return None
        return f

    def __getstate__(self):
        # a pending guide record holds autograd graphs, which neither copy nor pickle
        return {**self.__dict__, "_filtered": None}

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def states(self, x: torch.Tensor, z: list) -> list:
        """The states h_0..h_T of the recurrence over frames x ``[B, T, x_dim]`` with latents
        z (a list of T tensors ``[..., B, z_dim]``), computed in eval mode."""
        with eval_mode(self):
            fx = self.phi_x(x).unbind(1)
            state = self.rnn.initial()
            out = [state]
            for t in range(len(z)):
                state = self.next_state(fx[t], self.phi_z(z[t]), state)
                out.append(state)
        return out

    @torch.no_grad()
    def generate(self, state: tuple, steps: int, mean: bool = False) -> torch.Tensor:
        """Run the model forward from ``state`` (tensors ``[..., hidden]``): z_t ~ p(z_t|h_{t-1}),
        x_t ~ p(x_t|z_t,h_{t-1}), h_t = f(...). Returns frames ``[..., steps, x_dim]`` (the
        means of p(x_t|z_t,h_{t-1}) when ``mean``; the sampled x_t always drive the state).
        Runs in eval mode: generation uses the full model, never a dropout-thinned one."""
        frames = []
        with eval_mode(self):
            for _ in range(steps):
                h = state[0]
                loc, scale = self.prior(h)
                z = loc + scale * torch.randn_like(loc)
                fz = self.phi_z(z)
                raw = self.decode(fz, h)
                x = self.likelihood(raw).sample()
                frames.append(self.likelihood.mean(raw) if mean else x)
                state = self.next_state(self.phi_x(x), fz, state)
        return torch.stack(frames, dim=-2)

    @torch.no_grad()
    def sample(self, n: int, T: int, mean: bool = False) -> torch.Tensor:
        """``n`` new sequences of ``T`` frames from p(x_{1:T}): ``[n, T, x_dim]``."""
        state = tuple(s.expand(n, -1) for s in self.rnn.initial())
        return self.generate(state, T, mean=mean)

    @torch.no_grad()
    def continue_sequences(self, guide, x_prefix: torch.Tensor, mask_prefix: torch.Tensor, steps: int,
                           num_continuations: int = 1, particles: int = 64, mean: bool = False) -> torch.Tensor:
        """Sample ``num_continuations`` continuations of ``steps`` frames after each prefix:
        ``[num, B, steps, x_dim]``, each starting right after its sequence's last real frame,
        from the states of :meth:`states_after_prefix`."""
        state = self.states_after_prefix(guide, x_prefix, mask_prefix, num_continuations, particles)
        return self.generate(state, steps, mean=mean)

    @torch.no_grad()
    def states_after_prefix(self, guide, x_prefix: torch.Tensor, mask_prefix: torch.Tensor, num: int = 1,
                            particles: int = 64) -> tuple:
        """``num`` draws of the state h_L after each prefix's L real frames (tensors ``[num, B, hidden]``).

        The future depends on the prefix only through h_L, which depends on z_{1:L}. We draw
        ``particles`` z_{1:L} ~ q from ``guide`` run on the prefix alone, weight each by
        p(x_{1:L}, z_{1:L}) / q(z_{1:L} | x), and resample (sampling-importance-resampling):
        as ``particles`` grows the states approach draws under the model's own posterior
        p(z_{1:L} | x_{1:L}), whatever the guide's quality."""
        from ..evaluate.sequences import stepwise_log_weights

        draws = stepwise_log_weights(self, guide, x_prefix, mask_prefix, num_particles=particles)
        T = draws.log_w.shape[-1]
        states = self.states(x_prefix[:, :T], draws.z)
        lengths = mask_prefix[:, :T].sum(-1)
        B = x_prefix.shape[0]
        batch = torch.arange(B, device=x_prefix.device)
        pick = torch.distributions.Categorical(logits=draws.log_w.sum(-1).T).sample((num,))  # [num, B]
        out = []
        for i in range(len(states[0])):
            per_step = stack_steps([s[i].expand(particles, B, -1) for s in states], dim=-2)  # [K, B, T+1, H]
            out.append(per_step[:, batch, lengths][pick, batch])                             # [num, B, H]
        return tuple(out)

    # -- data checks --------------------------------------------------------------------------
    def check_data(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the problem if ``(x, mask)`` cannot be scored."""
        if not isinstance(x, torch.Tensor) or not isinstance(mask, torch.Tensor):
            raise ValueError("VRNN data must be a pair of tensors (x [N, T, x_dim], mask [N, T])")
        if x.dim() != 3:
            raise ValueError(f"VRNN expects x of shape [N, T, {self.x_dim}], got {tuple(x.shape)}")
        if x.shape[-1] != self.x_dim:
            raise ValueError(f"VRNN was built for {self.x_dim} keys per frame but x has {x.shape[-1]}")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match x's [N, T] = {tuple(x.shape[:2])}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor (True on real frames), got dtype {mask.dtype}")
        if not torch.isfinite(x).all():
            raise ValueError(f"x contains {int((~torch.isfinite(x)).sum())} non-finite values (NaN or inf), "
                             "padding included: pad with zeros")
        empty = (~mask.any(-1)).nonzero().flatten()
        if len(empty):
            raise ValueError(f"{len(empty)} sequences have no real frames (e.g. index {int(empty[0])})")
        holes = (mask[:, 1:] & ~mask[:, :-1]).any(-1).nonzero().flatten()
        if len(holes):
            raise ValueError(f"mask must mark real frames first and padding after; sequence {int(holes[0])} "
                             "has a real frame after padding")
        self.likelihood.check(x[mask])
