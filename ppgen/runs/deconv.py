"""Restoration nets as a run (``ppgen train deconv --task sr2|sr4|denoise``): trained by
:func:`ppgen.companions.deconv.train_restoration` on a dataset's unit-scale images, evaluated by PSNR
and SSIM on the test split against the task's fixed baselines (nearest and bicubic
upsampling; the noisy input and a 3x3 box filter)."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..companions.sample_quality import unit_images
from ..companions.deconv import TASKS, degrade, evaluate_restoration, train_restoration
from ..nn.device import resolve_device
from ..figures.images import show_images
from .files import family_config, load_state, start_run, update_metrics

DEFAULTS = {"task": "sr2", "width": 64, "epochs": 10, "batch_size": 64, "lr": 1e-3, "seed": 0}
SSIM_WINDOW = 11  # ppgen.companions.quality.ssim's default Gaussian window


def load_dataset(spec: str):
    """An image dataset large enough for SSIM's 11x11 window (sprites, not the 8x8 digits)."""
    dataset = data_mod.load(spec)
    if dataset.image_shape is None or min(dataset.image_shape[1:]) < SSIM_WINDOW:
        raise ValueError(f"deconv needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (SSIM's window); "
                         f"{dataset.name!r} has image_shape {dataset.image_shape} (try --data sprites)")
    return dataset


def build(config: dict, image_shape):
    if config["task"] not in TASKS:
        raise ValueError(f"unknown restoration task {config['task']!r}; choose one of: {', '.join(TASKS)}")
    torch.manual_seed(config["seed"])
    return TASKS[config["task"]].make_model(channels=image_shape[0], width=config["width"])


def train_run(config: dict, out, *, resume: bool = False, device: str = "auto", progress: bool = True,
              iwae_k: int = 1000) -> dict:
    """Train, then write metrics.json (PSNR/SSIM of the net and the baselines on the test
    split, dB gain over the best baseline, time) and samples.png (before/after)."""
    cfg = family_config(config, DEFAULTS)
    dataset = load_dataset(cfg["data"])
    net = build(cfg, dataset.image_shape)
    out = start_run(out, cfg, resume)
    result = train_restoration(unit_images(dataset, "train"), dataset.image_shape, cfg["task"], model=net,
                               epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"], device=device,
                               seed=cfg["seed"], checkpoint=out / "checkpoint.pt", resume=resume, progress=progress)
    hist = result["history"]
    metrics = {**scores(result["model"], dataset, cfg["task"]), "final_train_mse": hist["loss"][-1],
               "epochs": hist["epoch"][-1], "train_seconds": round(sum(hist["seconds"]), 3),
               "device": str(resolve_device(device)), "model": "deconv", "task": cfg["task"], "data": cfg["data"]}
    update_metrics(out, metrics)
    save_figures(result["model"], dataset, cfg["task"], out)
    return metrics


def scores(net, dataset, task: str) -> dict:
    """``psnr_<method>`` (dB) and ``ssim_<method>`` for the net and each baseline, and
    ``psnr_gain_db``: the net's PSNR minus the best baseline's."""
    result = evaluate_restoration(net, unit_images(dataset, "test"), dataset.image_shape, task)
    flat = {f"{metric}_{method}": v[metric] for method, v in result.items() for metric in ("psnr", "ssim")}
    best = max(v["psnr"] for method, v in result.items() if method != "net")
    return {**flat, "psnr_gain_db": result["net"]["psnr"] - best}


def load_run(run_dir, config: dict, device: str = "auto"):
    """(net in eval mode, None, dataset, config)."""
    cfg = family_config(config, DEFAULTS)
    dataset = load_dataset(cfg["data"])
    net = build(cfg, dataset.image_shape)
    net.load_state_dict(load_state(run_dir)["model"])
    net.task = cfg["task"]  # what ``sample`` degrades test images with
    return net.to(resolve_device(device)).eval(), None, dataset, config


def eval_run(run_dir, *, device: str = "auto", iwae_k: int = 1000) -> dict:
    from .files import read_json

    config = read_json(Path(run_dir) / "config.json")
    net, _, dataset, config = load_run(run_dir, config, device)
    return update_metrics(run_dir, {**scores(net, dataset, config["task"]), "device": str(resolve_device(device))})


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


def save_figures(net, dataset, task: str, run_dir) -> Path:
    path = Path(run_dir) / "samples.png"
    show_images(before_after(net, dataset, task), dataset.image_shape, path=path)
    return path


def sample(model, n: int, out_path, dataset, length=None) -> Path:
    """A restoration net draws no samples: ``ppgen sample`` shows ``n`` test images restored
    (``model.task`` is set by :func:`load_run`)."""
    show_images(before_after(model, dataset, model.task, n), dataset.image_shape, path=out_path)
    return Path(out_path)
