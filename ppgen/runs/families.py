"""Every model family a run can hold, by the name ``ppgen train MODEL`` takes."""
from __future__ import annotations

from .conv_vae import CONV_VAE
from .deconv import DECONV
from .family import Family
from .gan import GAN
from .hvae import HVAE
from .vae import SPARSE_VAE, VAE
from .vaegan import VAEGAN
from .vrnn import VRNN_FAMILY

FAMILIES: dict[str, Family] = {f.name: f for f in (VAE, SPARSE_VAE, HVAE, VRNN_FAMILY, CONV_VAE, GAN, VAEGAN, DECONV)}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(FAMILIES)}")
    return FAMILIES[name]
