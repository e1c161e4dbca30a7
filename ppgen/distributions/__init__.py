"""Custom distributions: spike-and-slab, the autoregressive Bernoulli and categorical, and the per-step
distributions of a sequence scored in one batched call (:class:`SiteSequence`)."""
from .autoregressive import AutoregressiveBernoulli, AutoregressiveCategorical
from .site_sequence import SiteSequence, Step, normal, stack_steps
from .spike_slab import SpikeAndSlab

__all__ = ["SpikeAndSlab", "AutoregressiveBernoulli", "AutoregressiveCategorical", "SiteSequence", "Step", "normal",
           "stack_steps"]
