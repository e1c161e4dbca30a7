"""Restoration companions built from transposed convolutions: super-resolution (x2, x4) and
denoising, each with its degradation, a short pixel-loss training loop and an evaluation
against fixed (non-learned) baselines.

These are regression nets, not generative models: trained with a squared pixel loss they
estimate the posterior mean E[x | degraded x], which is why their outputs look smoother
than any single clean image. All nets take images ``[..., C, H, W]``; the loops take the
flat data of a :class:`ppgen.data.Dataset` with its ``image_shape``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.base import check_images
from ..infer import distributed
from ..infer.precision import check_precision
from ..infer.loop import Step, train
from .quality import psnr, ssim


def _per_image(net: Callable, x: torch.Tensor) -> torch.Tensor:
    """Apply an image-to-image net to ``[..., C, H, W]`` by folding the leading dims."""
    if x.dim() < 3:
        raise ValueError(f"expected images [..., C, H, W], got shape {tuple(x.shape)}")
    out = net(x.reshape(-1, *x.shape[-3:]))
    return out.reshape(*x.shape[:-3], *out.shape[-3:])


class SuperResolution(nn.Module):
    """Low-resolution ``[..., C, h, w]`` -> ``[..., C, s*h, s*w]`` for ``scale`` s in {2, 4}.

    Output = bilinear upsampling + a learned residual made by stride-2 transposed
    convolutions (one per factor of 2). The residual's last layer starts at zero, so the
    untrained net is exactly bilinear upsampling and training can only add detail to it.
    """

    def __init__(self, scale: int = 2, channels: int = 1, width: int = 64):
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale!r}")
        self.scale, self.channels = int(scale), int(channels)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(int(math.log2(scale))):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
        last = nn.Conv2d(width, channels, 3, padding=1)
        nn.init.zeros_(last.weight), nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)

    def _forward(self, low: torch.Tensor) -> torch.Tensor:
        _check_channels(low, self.channels, type(self).__name__)
        base = F.interpolate(low, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return base + self.residual(low)

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        return _per_image(self._forward, low)


class Denoiser(nn.Module):
    """Noisy ``[..., C, H, W]`` -> clean estimate of the same shape (H, W even).

    A small encoder-decoder: full-resolution features, one stride-2 convolution down, one
    stride-2 transposed convolution back up, a skip connection at full resolution, and a
    residual output (the net predicts minus the noise; zero-initialised, so it starts as the
    identity).
    """

    def __init__(self, channels: int = 1, width: int = 64):
        super().__init__()
        self.channels = int(channels)
        self.inp = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU())
        self.out = nn.Conv2d(2 * width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight), nn.init.zeros_(self.out.bias)

    def _forward(self, noisy: torch.Tensor) -> torch.Tensor:
        _check_channels(noisy, self.channels, type(self).__name__)
        if noisy.shape[-1] % 2 or noisy.shape[-2] % 2:
            raise ValueError(f"Denoiser needs even height and width, got {tuple(noisy.shape[-2:])}")
        h = self.inp(noisy)
        return noisy + self.out(torch.cat([self.up(self.down(h)), h], dim=1))

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return _per_image(self._forward, noisy)


def downsample(images: torch.Tensor, scale: int, generator=None) -> torch.Tensor:
    """Average-pool by ``scale``: each low-res pixel is the mean of an s x s block."""
    if images.shape[-1] % scale or images.shape[-2] % scale:
        raise ValueError(f"image size {tuple(images.shape[-2:])} is not divisible by the scale {scale}")
    return _per_image(partial(F.avg_pool2d, kernel_size=scale), images)


def add_noise(images: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + std * eps, eps ~ N(0, I); a CPU ``generator`` fixes the noise (for evaluation)."""
    if generator is None:
        eps = torch.randn_like(images)
    else:
        eps = torch.randn(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return images + std * eps


@dataclass(frozen=True)
class Task:
    """A restoration task: how inputs are made from clean images, the net that inverts
    that, and the fixed baselines it must beat (each maps inputs to an estimate)."""

    degrade: Callable
    make_model: Callable
    baselines: dict


def _upsampling_baselines(scale: int) -> dict:
    return {mode: partial(_per_image, partial(F.interpolate, scale_factor=scale, mode=mode,
                                               **({} if mode == "nearest" else {"align_corners": False})))
            for mode in ("nearest", "bicubic")}


TASKS = {
    "sr2": Task(partial(downsample, scale=2), partial(SuperResolution, 2), _upsampling_baselines(2)),
    "sr4": Task(partial(downsample, scale=4), partial(SuperResolution, 4), _upsampling_baselines(4)),
    "denoise": Task(partial(add_noise, std=0.3), Denoiser, {
        "noisy": lambda x: x,
        "box3": partial(_per_image, partial(F.avg_pool2d, kernel_size=3, stride=1, padding=1,
                                            count_include_pad=False)),
    }),
}


def degrade(images: torch.Tensor, task: str, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` for a task in :data:`TASKS` from clean images ``[..., C, H, W]``:
    average pooling for ``sr2``/``sr4``, additive Gaussian noise (std 0.3) for ``denoise``."""
    return _task(task).degrade(images, generator=generator), images


@dataclass
class RestorationConfig:
    """What shapes a run; saved in the checkpoint and compared on resume."""

    task: str = "sr2"
    image_shape: tuple = (1, 32, 32)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    precision: str = "fp32"

    def __post_init__(self):
        _task(self.task)
        check_precision(self.precision)
        self.image_shape = tuple(int(s) for s in self.image_shape)
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and lr > 0")


def restoration_step(net: nn.Module, optimizer, task: str, batch: tuple, t: int, apply) -> dict:
    """One step of the loop: degrade clean images ``[B, C, H, W]`` afresh (new noise each time
    for ``denoise``) and update the net on the squared error of its output against them."""
    inputs, target = degrade(batch[0], task)
    loss = F.mse_loss(net(inputs), target)
    return {"loss": apply(loss, optimizer, "pixel loss")}


def train_restoration(data: torch.Tensor, image_shape: Sequence[int], task: str, *, model: nn.Module | None = None,
                      width: int = 64, device="auto", checkpoint: str | Path | None = None, resume: bool = False,
                      progress: bool = True, **settings) -> dict:
    """Fit a restoration net for ``task`` on clean flat images ``data`` ``[N, C*H*W]``
    (values in [0, 1]) by mean squared error between the net's output and the clean image;
    ``settings`` are the other fields of :class:`RestorationConfig` (``epochs``,
    ``batch_size``, ``lr``, ``seed``).

    The net is ``TASKS[task].make_model`` with ``width`` channels unless ``model`` is given.
    Returns ``{"model", "history"}`` (history: per-epoch ``epoch``, ``loss``, ``seconds``).
    Trained by the one loop (:func:`ppgen.infer.loop.train`): checkpoints, exact resume,
    device and the non-finite stop.
    """
    cfg = RestorationConfig(task, image_shape, **settings)
    images = check_images(data, cfg.image_shape).reshape(-1, *cfg.image_shape)

    def make_step(dev) -> Step:
        net = model if model is not None else TASKS[task].make_model(channels=cfg.image_shape[0], width=width)
        net.to(dev)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        # under torchrun DDP averages the net's gradients over the processes; the part stays the plain net
        return Step(partial(restoration_step, distributed.data_parallel(net), optimizer, task),
                    {"model": net, "optimizer": optimizer})

    step, history = train(make_step, images, asdict(cfg), device=device, checkpoint=checkpoint, resume=resume,
                          progress=progress, desc=task)
    return {"model": step.parts["model"], "history": history}


@torch.no_grad()
def evaluate_restoration(model: nn.Module, data: torch.Tensor, image_shape: Sequence[int], task: str = "sr2",
                         *, seed: int = 0, batch_size: int = 256) -> dict:
    """Mean PSNR (dB) and SSIM on held-out flat images ``data`` for the net and the task's
    baselines (``nearest``/``bicubic`` upsampling for super-resolution, the ``noisy`` input
    and a 3x3 ``box3`` filter for denoising): ``{method: {"psnr", "ssim"}}``.

    Degradations are drawn with a CPU generator seeded by ``seed``, so every method sees the
    same inputs; every estimate is clipped to the data range [0, 1] before scoring, and a
    per-image PSNR is capped at 100 dB so that an exact reconstruction does not make the
    mean infinite.
    """
    spec = _task(task)
    image_shape = tuple(int(s) for s in image_shape)
    data = check_images(data, image_shape, "held-out data")
    dev = next(model.parameters()).device
    images = data.to(dev).reshape(-1, *image_shape)
    gen = torch.Generator().manual_seed(seed)
    methods = {"net": model, **spec.baselines}
    sums = {name: {"psnr": 0.0, "ssim": 0.0} for name in methods}
    was_training = model.training
    model.eval()
    for i in range(0, images.shape[0], batch_size):
        inputs, target = degrade(images[i:i + batch_size], task, generator=gen)
        for name, method in methods.items():
            estimate = method(inputs).clamp(0, 1)
            sums[name]["psnr"] += psnr(estimate, target).clamp(max=100.0).sum().item()
            sums[name]["ssim"] += ssim(estimate, target).sum().item()
    model.train(was_training)
    n = images.shape[0]
    return {name: {k: v / n for k, v in s.items()} for name, s in sums.items()}


def _task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"unknown restoration task {task!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


def _check_channels(x: torch.Tensor, channels: int, who: str) -> None:
    if x.shape[-3] != channels:
        raise ValueError(f"{who} was built for {channels} channel(s), got images with {x.shape[-3]} "
                         f"(shape {tuple(x.shape)})")
