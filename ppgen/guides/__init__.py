"""Pyro guides q(z | x). Each is an ``nn.Module`` with the model's call signature that
samples the model's latent sites; ``GUIDES[name].for_model(model)`` builds one sized for a
model. :func:`check_sites` verifies that a guide's sites match a model's."""
from .amortized import AmortizedGuide, DiagonalNormalGuide, LowRankNormalGuide, conv_guide
from .flows import IAFGuide
from .ladder import LadderGuide
from .sites import SiteMismatchError, check_sites, latent_sites
from .spike_slab import SpikeAndSlabGuide
from .vrnn import FilteringGuide, SmoothingGuide

GUIDES = {
    "diag_normal": DiagonalNormalGuide,
    "lowrank_normal": LowRankNormalGuide,
    "iaf": IAFGuide,
    "spike_and_slab": SpikeAndSlabGuide,
    "vrnn_filtering": FilteringGuide,
    "vrnn_smoothing": SmoothingGuide,
    "ladder": LadderGuide,
}

__all__ = ["GUIDES", "AmortizedGuide", "conv_guide", "DiagonalNormalGuide", "LowRankNormalGuide", "IAFGuide", "SpikeAndSlabGuide", "LadderGuide",
           "SiteMismatchError", "check_sites", "latent_sites"]
