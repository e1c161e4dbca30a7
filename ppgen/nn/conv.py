"""Convolutional encoder and transposed-convolution decoder on flat image vectors.

Both take and return flat vectors (``[..., C*H*W]``, any leading batch dims such as the
``[K, B]`` of importance samples), so they drop into the same slots as an MLP: an encoder
that maps x to the parameters of q(z|x), a decoder that maps z to the raw parameters of
p(x|z) (or, in a GAN, to the generator's image).

The spatial plan is read off the image shape: stride-2 layers halve the height and width
while both are even and at least 8, so 8x8 -> 4x4 (1 layer), 28x28 -> 7x7 (2), 32x32 ->
4x4 (3), 64x64 -> 4x4 (4). The decoder mirrors the same plan upwards.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from .mlp import Scale

LeakyReLU = partial(nn.LeakyReLU, 0.2)


def spatial_plan(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(n_layers, h, w)``: how many stride-2 layers the image shape allows and the size
    of the smallest feature map. Raises ``ValueError`` for shapes that allow none."""
    if len(image_shape) != 3 or any(int(s) < 1 for s in image_shape):
        raise ValueError(f"image_shape must be (channels, height, width) with positive sizes, got {tuple(image_shape)}")
    _, h, w = (int(s) for s in image_shape)
    n = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
        h, w, n = h // 2, w // 2, n + 1
    if n == 0:
        raise ValueError(
            f"image size {image_shape[1]}x{image_shape[2]} is not supported by the conv nets: "
            "height and width must be even and at least 8 (e.g. 8, 28, 32, 64)"
        )
    return n, h, w


def _widths(channels: Sequence[int], n: int, pad_front: bool) -> list[int]:
    """``n`` layer widths from ``channels``, repeating the widest end when too few are given."""
    channels = [int(c) for c in channels]
    if not channels or min(channels) < 1:
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}")
    if pad_front:
        return ([channels[0]] * n + channels)[-n:]
    return (channels + [channels[-1]] * n)[:n]


def _check_flat(x: torch.Tensor, image_shape: tuple, what: str) -> None:
    c, h, w = image_shape
    d = c * h * w
    if x.dim() < 1 or x.shape[-1] != d:
        got = x.shape[-1] if x.dim() else None
        hint = ""
        if got and got % (h * w) == 0:
            hint = f" (that is {got // (h * w)} channel(s) of {h}x{w}, but the net expects {c})"
        raise ValueError(f"{what} expects flat images [..., {c}*{h}*{w} = {d}], got shape {tuple(x.shape)}{hint}")


class ConvEncoder(nn.Module):
    """Flat images ``[..., C*H*W]`` -> ``[..., out_features]``.

    Stride-2 4x4 convolutions (no batch norm, so each datapoint's output depends on that
    datapoint alone, as an amortized q(z|x) requires), then an optional hidden linear
    layer, then a linear head. :meth:`features` returns the penultimate activations (what a
    GAN discriminator or a feature classifier exposes for FID and PRDC).
    ``spectral_norm=True`` constrains every layer's spectral norm (Miyato et al., 2018), the
    usual choice for a GAN discriminator.
    """

    def __init__(self, image_shape: Sequence[int], out_features: int,
                 channels: Sequence[int] = (32, 64, 128, 256), hidden: int | None = None,
                 activation: Callable[[], nn.Module] = LeakyReLU, spectral_norm: bool = False):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        n, h, w = spatial_plan(self.image_shape)
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        widths = [self.image_shape[0], *_widths(channels, n, pad_front=False)]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, stride=2, padding=1)), activation()]
        layers.append(nn.Flatten())
        flat = widths[-1] * h * w
        if hidden is not None:
            layers += [sn(nn.Linear(flat, hidden)), activation()]
            flat = hidden
        self.body = nn.Sequential(*layers)
        self.head = sn(nn.Linear(flat, out_features))
        self.feature_dim, self.out_features = flat, int(out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[..., feature_dim]``."""
        _check_flat(x, self.image_shape, type(self).__name__)
        lead = x.shape[:-1]
        out = self.body(x.reshape(-1, *self.image_shape))
        return out.reshape(*lead, out.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DeconvDecoder(nn.Module):
    """``[..., in_features]`` -> raw flat outputs ``[..., C*H*W*k]`` with
    ``k = out_channels_per_pixel``.

    Linear -> ``channels[0] x h x w`` map -> stride-2 4x4 transposed convolutions that double
    the size up to HxW. The outputs are unconstrained (logits, locations, ...): the caller's
    likelihood p(x|z) interprets them.

    Layout with ``k > 1``: the flat output is ``[..., C, H, W, k]`` flattened, i.e. the ``k``
    parameters of one pixel are adjacent. That is what a likelihood reading ``raw`` as
    ``[..., x_dim, k]`` expects (17-level categorical logits, or (loc, log-scale) pairs of
    an amortized Normal), with ``x_dim = C*H*W`` in the same order as the flat data.
    """

    def __init__(self, in_features: int, image_shape: Sequence[int], out_channels_per_pixel: int = 1,
                 channels: Sequence[int] = (256, 128, 64, 32), activation: Callable[[], nn.Module] = nn.ReLU,
                 batch_norm: bool = False):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        if int(out_channels_per_pixel) < 1:
            raise ValueError(f"out_channels_per_pixel must be >= 1, got {out_channels_per_pixel}")
        self.k = int(out_channels_per_pixel)
        n, h, w = spatial_plan(self.image_shape)
        widths = _widths(channels, n, pad_front=True)
        self.start = (widths[0], h, w)
        self.in_features = int(in_features)
        self.stem = nn.Sequential(nn.Linear(in_features, widths[0] * h * w), activation())
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
            layers += [nn.BatchNorm2d(b)] if batch_norm else []
            layers += [activation()]
        layers.append(nn.ConvTranspose2d(widths[-1], self.image_shape[0] * self.k, 4, stride=2, padding=1))
        self.body = nn.Sequential(*layers)
        self.out_features = self.k * self.image_shape[0] * self.image_shape[1] * self.image_shape[2]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() < 1 or z.shape[-1] != self.in_features:
            raise ValueError(f"DeconvDecoder expects inputs [..., {self.in_features}], got shape {tuple(z.shape)}")
        lead = z.shape[:-1]
        out = self.body(self.stem(z.reshape(-1, self.in_features)).reshape(-1, *self.start))
        c, h, w = self.image_shape
        # channel index c*k + j -> [C, H, W, k], so one pixel's k parameters are adjacent
        out = out.reshape(-1, c, self.k, h, w).permute(0, 1, 3, 4, 2)
        return out.reshape(*lead, self.out_features)


def conv_channels(width: int, n: int = 4) -> tuple[int, ...]:
    """DCGAN widths: ``width`` channels at full resolution, doubling as the maps halve."""
    if int(width) < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    return tuple(int(width) * 2 ** i for i in range(n))


def conv_encoder(image_shape: Sequence[int], hidden: int = 256, *, width: int = 32,
                 input_scale: float = 1.0) -> nn.Module:
    """x -> features h for an amortized guide: stride-2 convolutions, a hidden layer of
    ``hidden`` units and a LeakyReLU (the guide adds its own linear head on top).

    Drop it into any amortized guide: ``GUIDES[name].for_model(model, encoder=conv_encoder(...))``.
    ``input_scale`` divides x first (digits counts 0..16 -> 0..1), as the MLP encoder does."""
    net = nn.Sequential(Scale(input_scale), ConvEncoder(image_shape, hidden, conv_channels(width)),
                        nn.LeakyReLU(0.2))
    net.out_features = int(hidden)
    return net
