"""Pyro models p(x, z). Each is an ``nn.Module`` whose ``forward(x)`` is the Pyro model; its
latent sample sites are listed in its docstring and in ``latent_sites``."""
from .vae import VAE
from .sparse_vae import SparseVAE
from .vrnn import VRNN
from .conv_vae import ConvVAE
from .vaegan import VAEGAN

MODELS = {
    "vae": VAE,
    "sparse_vae": SparseVAE,
    "vrnn": VRNN,
    "conv_vae": ConvVAE,
    "vaegan": VAEGAN,
}

__all__ = ["MODELS", "VAE", "SparseVAE"]
