"""A VAE whose prior encourages sparse codes."""
from __future__ import annotations

from .. import priors
from .vae import VAE


class SparseVAE(VAE):
    """Generative model (the VAE's, with a sparsity-inducing prior)::

        z_n ~ p(z)          site "z": spike-and-slab by default, or Laplace
        x_n ~ p(x | z_n)    site "x", observed

    Two ways to sparse codes, with different trade-offs:

    * ``priors.SpikeAndSlab(z_dim, alpha)`` -- Variational Sparse Coding (Tonolini et al.,
      2020): p(z_d) = alpha N(0, 1) + (1 - alpha) delta_0. Codes are *exactly* zero, and the
      matching :class:`ppgen.guides.SpikeAndSlabGuide` learns per-datapoint on-probabilities,
      so different inputs use different dimensions (interpretable, input-dependent support).
      Cost: the spike indicator is discrete; its gradient goes through a straight-through
      relaxation (biased), so training is noisier and a little slower to converge, and the
      KL to the point mass is infinite for guides that can reach exact zeros only there.
    * ``priors.Laplace(z_dim)`` -- a continuous density with a sharp peak at 0: any
      Normal-family guide pairs with it and gradients are unbiased, but posterior means are
      only *shrunk* towards zero, never exactly zero, so "sparsity" needs a threshold.

    The share of code entries that are (near) zero is measured by
    :func:`ppgen.evaluate.code_sparsity`, for any model whose prior is sparse.
    """

    def check_prior(self) -> None:
        if not getattr(self.prior, "sparse", False):
            names = ", ".join(name for name, cls in priors.PRIORS.items() if cls.sparse)
            raise ValueError(f"SparseVAE needs a sparsity-inducing prior ({names}); got {self.prior.name!r}")

    @staticmethod
    def default_prior(z_dim: int) -> priors.Prior:
        return priors.SpikeAndSlab(z_dim)
