"""Companions beside the Pyro models: the DCGAN, deconvolution restoration nets, VAE-GAN
training, and sample-quality metrics."""
