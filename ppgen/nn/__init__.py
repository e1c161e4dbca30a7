"""Network building blocks shared by models, guides and companions: MLPs, conv encoders and
deconv decoders, DCGAN nets, masked autoregressive nets; and the device rule."""
from .conv import ConvEncoder, DeconvDecoder, conv_channels, conv_encoder, spatial_plan
from .dcgan import Discriminator, Generator
from .device import resolve_device
from .made import MaskedAutoregressiveNet
from .mlp import MLP, Scale, eval_mode

__all__ = ["MLP", "Scale", "eval_mode", "ConvEncoder", "DeconvDecoder", "conv_channels", "conv_encoder",
           "spatial_plan", "Generator", "Discriminator", "MaskedAutoregressiveNet", "resolve_device"]
