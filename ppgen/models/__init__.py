"""Pyro models p(x, z). Each is an ``nn.Module`` whose ``forward(x)`` is the Pyro model; its
sample sites and densities are written in its class docstring."""
from .vae import VAE
from .sparse_vae import SparseVAE
from .vrnn import VRNN
from .conv_vae import ConvVAE
from .vaegan import VAEGAN
from .hvae import HierarchicalVAE

MODELS = {
    "vae": VAE,
    "sparse_vae": SparseVAE,
    "vrnn": VRNN,
    "conv_vae": ConvVAE,
    "vaegan": VAEGAN,
    "hvae": HierarchicalVAE,
}

__all__ = ["MODELS", "VAE", "SparseVAE", "VRNN", "ConvVAE", "VAEGAN", "HierarchicalVAE"]
