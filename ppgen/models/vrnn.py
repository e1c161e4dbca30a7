"""The variational recurrent neural network (Chung et al., 2015) as a Pyro model of sequences."""
from __future__ import annotations

import pyro
import torch
from torch import nn

from .. import likelihoods
from ..nn.mlp import MLP, eval_mode
from ..priors import STEP_PRIORS, Prior, StepPrior
from ..distributions.site_sequence import SiteSequence, normal
from .recurrence import GuideStates, Recurrence, StatePath, cat_features


def sequence_length(mask: torch.Tensor) -> int:
    """Frames up to the last real one in the batch: later steps are padding everywhere and
    would contribute nothing, so models and guides skip them."""
    return int(mask.sum(-1).max())


_OWN = object()  # check_prior's default: the model's own prior


class VRNN(nn.Module):
    """Variational RNN over sequences x_1..x_T of ``x_dim``-vectors (a piano roll: 88 keys)::

        z_t ~ p(z_t | h_{t-1})                    site "z_{t}", event [z_dim]    (self.prior)
        x_t ~ p(x_t | z_t, h_{t-1}) = lik(dec(phi_z(z_t), h_{t-1}))   site "x_{t}", observed
        h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})  deterministic, GRU or LSTM  (self.rnn)

    for each sequence in the plate "data" (dim -1), t = 0..T-1 in ``pyro.markov``. Priors
    (:data:`STEP_PRIORS`, a name or an instance; swap in one line:
    ``vrnn.prior = priors.StandardNormalStep(vrnn.z_dim)``):
    ``"learned"`` p(z_t | h_{t-1}) = N(mu(h_{t-1}), diag sigma(h_{t-1})^2) (the paper's) and
    ``"standard"`` p(z_t) = N(0, I). Likelihoods: ``"bernoulli"`` (binary piano rolls, keys
    independent given z_t and h_{t-1}, as in the paper), ``"autoregressive_bernoulli"`` (binary,
    p(x_t|z_t,h_{t-1}) = prod_k p(x_{t,k} | x_{t,<k}, z_t, h_{t-1}), so the notes of a chord stay
    dependent; see :mod:`ppgen.nn.made`) or ``"normal"`` (real values, one learned scale per
    dimension). Default sizes z_dim 16, hidden 128 (JSB Chorales results: BENCHMARKS.md).

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
    running the RNN a second time (:mod:`ppgen.models.recurrence`; same numbers).

    Assigning a prior checks it (:meth:`check_prior`): it must be a :class:`ppgen.priors.StepPrior`
    with this model's z_dim (and hidden size, if it reads h_{t-1}).
    """

    def __init__(self, x_dim: int = 88, z_dim: int = 16, hidden: int = 128, *, rnn: str = "gru",
                 prior: "str | StepPrior" = "learned", likelihood: str = "bernoulli", likelihood_kwargs: dict | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout}")
        if isinstance(prior, str) and prior not in STEP_PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose one of: {', '.join(STEP_PRIORS)}")
        if likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of: {', '.join(likelihoods.LIKELIHOODS)}")
        self.x_dim, self.z_dim, self.hidden = int(x_dim), int(z_dim), int(hidden)
        self.likelihood = likelihoods.LIKELIHOODS[likelihood](x_dim, **(likelihood_kwargs or {}))
        self.phi_x = nn.Sequential(MLP(x_dim, [hidden], hidden), nn.ReLU(), nn.Dropout(dropout))
        self.phi_z = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU())
        self.prior = STEP_PRIORS[prior](z_dim, hidden) if isinstance(prior, str) else prior
        self.decoder_dropout = nn.Dropout(dropout)
        self.decoder = MLP(2 * hidden, [hidden], self.likelihood.out_features)
        self.rnn = Recurrence(rnn, 2 * hidden, hidden)
        self.guide_states = GuideStates()  # a guide's pass over the data, for the next model call

    @classmethod
    def for_data(cls, data, **kwargs) -> "VRNN":
        """Build with the key count and likelihood of a :class:`ppgen.data.SequenceDataset`."""
        kwargs.setdefault("likelihood", data.likelihood)
        return cls(data.x_dim, **kwargs)

    def __setattr__(self, name, value):
        if name == "prior":
            self.check_prior(value)
        super().__setattr__(name, value)

    def check_prior(self, prior=_OWN) -> None:
        """Raise ``ValueError`` naming what fits unless ``prior`` (default: the model's) is a
        per-step prior p(z_t | h_{t-1}) over this model's z_t and h_{t-1}."""
        prior = self.prior if prior is _OWN else prior
        fits = (f"priors.StandardNormalStep({self.z_dim}) or priors.LearnedStepPrior({self.z_dim}, {self.hidden}) "
                f"(priors.STEP_PRIORS)")
        if not isinstance(prior, StepPrior):
            what = "a prior p(z) over one latent vector" if isinstance(prior, Prior) else "not a step prior"
            raise ValueError(f"VRNN needs a per-step prior p(z_t | h_(t-1)) such as {fits}; "
                             f"got {type(prior).__name__}, {what}")
        if prior.z_dim != self.z_dim or prior.hidden not in (None, self.hidden):
            raise ValueError(f"VRNN has z_dim {self.z_dim} and hidden {self.hidden}; its prior must match, "
                             f"e.g. {fits}; got {type(prior).__name__} with z_dim {prior.z_dim}, hidden {prior.hidden}")

    # -- the Pyro model ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        guide_pass = self.guide_states.take(x, mask, self.recurrence_parameters())
        T = sequence_length(mask)
        x, mask = x[:, :T], mask[:, :T]
        h = StatePath(self, x, follow=guide_pass)  # reuses the guide's h_t while they are provably equal
        zs = SiteSequence(normal, mask, (self.z_dim,))
        with pyro.plate("data", x.shape[0], dim=-1):
            for t in pyro.markov(range(T)):
                z = pyro.sample(f"z_{t}", zs.step(t, *h.prior(t)))    # z_t ~ p(z_t | h_{t-1})
                h.advance(t, zs.record(z))                           # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
            # x_t ~ p(x_t | z_t, h_{t-1}); given observed x they do not feed back, so one batched decode
            xs = SiteSequence(self.likelihood, mask, (self.x_dim,), reparameterized=False,
                              batched=(self.decode(h.fz_each(), h.h_before_each()),))
            frames = x.unbind(1)
            for t in pyro.markov(range(T)):
                pyro.sample(f"x_{t}", xs.step(t), obs=xs.record(frames[t]))

    def decode(self, fz: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """The raw parameters of p(x_t | z_t, h_{t-1}) from phi_z(z_t) and h_{t-1}."""
        return self.decoder(self.decoder_dropout(cat_features(fz, h_prev)))

    def next_state(self, fx_t: torch.Tensor, fz_t: torch.Tensor, state: tuple) -> tuple:
        """h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}) from the features of x_t and z_t."""
        return self.rnn(cat_features(fx_t, fz_t), state)

    def recurrence_parameters(self) -> list:
        """The parameters that h_t depends on (phi_x, phi_z, rnn): a guide's states stay
        reusable only while none of them changed."""
        return [*self.phi_x.parameters(), *self.phi_z.parameters(), *self.rnn.parameters()]

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
