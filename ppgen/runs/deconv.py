"""Restoration nets as a run (``ppgen train deconv --task sr2|sr4|denoise``): trained by
:func:`ppgen.companions.deconv.train_restoration` on a dataset's unit-scale images, evaluated by PSNR
and SSIM on the test split against the task's fixed baselines (nearest and bicubic
upsampling; the noisy input and a 3x3 box filter)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from .. import data as data_mod
from ..companions.deconv import TASKS, RestorationConfig, degrade, evaluate_restoration, train_restoration
from ..companions.sample_quality import unit_images
from ..figures.images import show_images
from .family import Family

#: train_restoration's settings and the net's width
DEFAULTS = {**{k: v for k, v in asdict(RestorationConfig()).items() if k != "image_shape"}, "width": 64}
SSIM_WINDOW = 11  # ppgen.companions.quality.ssim's default Gaussian window


def load_dataset(spec: str):
    """An image dataset large enough for SSIM's 11x11 window (sprites, not the 8x8 digits)."""
    dataset = data_mod.load_in_memory(spec)
    if dataset.image_shape is None or min(dataset.image_shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"deconv needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (SSIM's window); "
                         f"{dataset.name!r} has image_shape {dataset.image_shape} (try --data sprites)")
    return dataset


def build(config: dict, dataset) -> dict:
    if config["task"] not in TASKS:
        raise ValueError(f"unknown restoration task {config['task']!r}; choose one of: {', '.join(TASKS)}")
    return {"model": TASKS[config["task"]].make_model(channels=dataset.image_shape[0], width=config["width"])}


def train(parts, dataset, config, **loop) -> dict:
    settings = {k: config[k] for k in DEFAULTS if k not in ("task", "width")}
    return train_restoration(unit_images(dataset, "train"), dataset.image_shape, config["task"], model=parts["model"],
                             **loop, **settings)["history"]


def scores(parts, dataset, config, k=None, progress: bool = False) -> dict:
    """``psnr_<method>`` (dB) and ``ssim_<method>`` for the net and each baseline on the test
    split, and ``psnr_gain_db``: the net's PSNR minus the best baseline's. ``k`` and
    ``progress`` are unused: one pass over the test images takes seconds."""
    result = evaluate_restoration(parts["model"], unit_images(dataset, "test"), dataset.image_shape, config["task"])
    flat = {f"{metric}_{method}": v[metric] for method, v in result.items() for metric in ("psnr", "ssim")}
    best = max(v["psnr"] for method, v in result.items() if method != "net")
    return {**flat, "psnr_gain_db": result["net"]["psnr"] - best}


@torch.no_grad()
def before_after(net, dataset, task: str, n: int = 16, seed: int = 0) -> dict:
    """Panels for a figure: each baseline's estimate from the degraded input (nearest
    upsampling shows the low-resolution input itself), the net's and the clean target."""
    clean = unit_images(dataset, "test")[:n].reshape(-1, *dataset.image_shape)
    dev = next(net.parameters()).device
    inputs, target = degrade(clean.to(dev), task, generator=torch.Generator().manual_seed(seed))
    panels = {name: f(inputs) for name, f in TASKS[task].baselines.items()}
    panels["net"] = net.eval()(inputs)
    panels["clean"] = target
    return {name: x.clamp(0, 1).flatten(1) for name, x in panels.items()}


def save_figures(parts, dataset, config, run_dir) -> Path:
    path = Path(run_dir) / "samples.png"
    show_images(before_after(parts["model"], dataset, config["task"]), dataset.image_shape, path=path)
    return path


def sample(parts, n: int, out_path, dataset, config, length=None) -> list[Path]:
    """A restoration net draws no samples: ``ppgen sample`` shows ``n`` test images restored."""
    show_images(before_after(parts["model"], dataset, config["task"], n), dataset.image_shape, path=out_path)
    return [Path(out_path)]


DECONV = Family("deconv", DEFAULTS, load_data=load_dataset, build=build, train=train, metrics=scores,
                figures=save_figures, sample=sample, last={"final_train_mse": "loss"})
