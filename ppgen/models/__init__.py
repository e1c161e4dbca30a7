"""Pyro models p(x, z). Each is an ``nn.Module`` whose ``forward(x)`` is the Pyro model; its
latent sample sites are listed in its docstring and in ``latent_sites``."""
from .vae import VAE
from .sparse_vae import SparseVAE

MODELS = {
    "vae": VAE,
    "sparse_vae": SparseVAE,
}

__all__ = ["MODELS", "VAE", "SparseVAE"]
