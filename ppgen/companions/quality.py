"""Sample-quality metrics that run offline, on features ppgen trains itself.

Likelihood-free models (the GAN) and likelihood models alike are compared here by what
their samples look like. Distribution distances (Frechet distance, KID, precision / recall /
density / coverage) are computed on the penultimate features of a small conv classifier
trained on the dataset's own labels or generative factors (:class:`FeatureClassifier`), not
on downloaded Inception weights, so the numbers are comparable within ppgen only. Every
distance is reported beside its ceiling: the same metric for held-out real data, the value
a perfect model would reach with the same number of samples.

Image metrics (PSNR, SSIM, Laplacian variance) take images ``[N, C, H, W]`` or flat
``[N, C*H*W]`` with ``image_shape``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..nn.conv import ConvEncoder
from ..nn.device import resolve_device


# --------------------------------------------------------------------------- input checks

def _as_images(x, image_shape=None, what: str = "images") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
    if x.dim() == 2:
        if shape is None:
            raise ValueError(f"{what} are flat {tuple(x.shape)}; pass image_shape=(C, H, W) to read them as images")
        if x.shape[1] != math.prod(shape):
            raise ValueError(f"{what} have {x.shape[1]} features but image_shape {shape} needs {math.prod(shape)}")
        x = x.reshape(-1, *shape)
    elif x.dim() == 4:
        if shape is not None and tuple(x.shape[1:]) != shape:
            part = "channel count" if x.shape[1] != shape[0] else "image size"
            raise ValueError(f"{what} have shape {tuple(x.shape[1:])} but image_shape is {shape} (wrong {part})")
    else:
        raise ValueError(f"{what} must be [N, C, H, W] or flat [N, C*H*W] with image_shape, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} are empty")
    return x if x.is_floating_point() else x.float()


def _as_features(x, what: str, min_rows: int = 1) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a 2-D feature matrix [N, features], got {got}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{what} need at least {min_rows} rows, got {x.shape[0]}"
                         + (" (empty set)" if x.shape[0] == 0 else ""))
    x = x.detach().double()
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contain non-finite values")
    return x


def _pair(a, b, names=("first set", "second set"), min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_features(a, names[0], min_rows), _as_features(b, names[1], min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {names[0]} has {a.shape[1]}, {names[1]} has {b.shape[1]}")
    return a, b.to(a.device)


def _check_same_shape(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images to compare must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


# --------------------------------------------------------------------------- image metrics

def psnr(x, y, data_range: float = 1.0, image_shape=None) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(range^2 / MSE)`` in dB (inf where
    the images are identical)."""
    x, y = _as_images(x, image_shape, "estimate"), _as_images(y, image_shape, "reference")
    _check_same_shape(x, y)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.arange(size, dtype=torch.float64, device=like.device) - (size - 1) / 2
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size)


def ssim(x, y, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, image_shape=None) -> torch.Tensor:
    """Structural similarity per image (Wang et al., 2004): local means, variances and the
    covariance under an 11x11 Gaussian window (sigma 1.5, population moments), constants
    C1 = (K1 L)^2 and C2 = (K2 L)^2 with K1 = 0.01, K2 = 0.03, the map averaged over the
    valid window positions and the channels. 1 means identical."""
    x, y = _as_images(x, image_shape, "estimate"), _as_images(y, image_shape, "reference")
    _check_same_shape(x, y)
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the SSIM window "
                         f"({window_size}); pass a smaller window_size")
    x, y = x.double(), y.double()
    w = _gaussian_window(window_size, sigma, x.shape[1], x)
    blur = lambda t: F.conv2d(t, w, groups=x.shape[1])  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return smap.flatten(1).mean(1)


def laplacian_variance(images, image_shape=None) -> torch.Tensor:
    """Variance of the 3x3 Laplacian response per image (mean over channels): a blur
    measure, lower for blurrier images (VAE means are typically blurrier than data)."""
    x = _as_images(images, image_shape).double()
    if min(x.shape[-2:]) < 3:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for a 3x3 Laplacian")
    kernel = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=x.dtype, device=x.device)
    response = F.conv2d(x, kernel.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])
    return response.flatten(2).var(-1, unbiased=False).mean(1)


# --------------------------------------------------------------------------- distribution distances

def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets:
    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (FID on ppgen's features).

    The trace of the matrix square root is taken as ``Tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})``
    from symmetric eigendecompositions, which is real and stable where ``sqrtm(S_a S_b)``
    can return complex noise. Biased upwards for small sets: compare values at equal sizes.
    """
    a, b = _pair(feats_a, feats_b, ("features a", "features b"), min_rows=2)
    a, b = a.cpu().numpy(), b.cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _sqrtm_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    tr_root = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_root)


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased estimate of MMD^2 with the cubic kernel ``k(x, y) = (x.y/d + 1)^3``."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def kernel_distance(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> dict:
    """Kernel Inception Distance on ppgen features (Binkowski et al., 2018): the unbiased
    MMD^2 with the cubic polynomial kernel, averaged over ``subsets`` random subsets of
    ``min(subset_size, N_a, N_b)`` points from each set. Unbiased, so it can be slightly
    negative when the sets match. Returns ``{"mean", "std"}`` over subsets."""
    a, b = _pair(feats_a, feats_b, ("features a", "features b"), min_rows=2)
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[torch.from_numpy(rng.choice(a.shape[0], m, replace=False)).to(a.device)],
                            b[torch.from_numpy(rng.choice(b.shape[0], m, replace=False)).to(b.device)])
              for _ in range(int(subsets))]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _distances(x: torch.Tensor, y: torch.Tensor, chunk: int = 1024):
    """Euclidean distances ``[len(x), len(y)]`` in row chunks of ``x`` (yielded)."""
    for i in range(0, x.shape[0], chunk):
        yield i, torch.cdist(x[i:i + chunk], y)


def _knn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point."""
    return torch.cat([d.kthvalue(k + 1, dim=1).values for _, d in _distances(x, x)])


def prdc(real, fake, k: int = 5) -> dict:
    """Precision, recall (Kynkaanniemi et al., 2019), density and coverage (Naeem et al.,
    2020) of ``fake`` features against ``real`` ones, from k-NN balls.

    precision: fraction of fakes inside some real point's k-NN ball (fidelity);
    recall: fraction of reals inside some fake point's k-NN ball (diversity);
    density: mean number of real balls containing a fake, divided by k ((k+1)/k for two
    copies of one set; can exceed 1); coverage: fraction of real balls that contain a fake.
    Score against held-out real data: copies of the training set look perfect against it.
    """
    real, fake = _pair(real, fake, ("real features", "fake features"))
    if not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise ValueError(f"k={k} needs more than k points in each set (real {real.shape[0]}, fake {fake.shape[0]})")
    real_r, fake_r = _knn_radius(real, k), _knn_radius(fake, k)
    in_real_balls = torch.zeros(fake.shape[0], dtype=torch.float64, device=real.device)
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    real_recalled = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for i, d in _distances(real, fake):  # d[i, j] = |real_i - fake_j|
        inside = d <= real_r[i:i + d.shape[0], None]
        in_real_balls += inside.sum(0)
        real_covered[i:i + d.shape[0]] = inside.any(1)
        real_recalled[i:i + d.shape[0]] = (d <= fake_r[None, :]).any(1)
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(in_real_balls.sum() / (k * fake.shape[0])),
        "coverage": float(real_covered.double().mean()),
    }


def memorisation(samples, train, threshold: float = 1e-6) -> dict:
    """Euclidean distance (in data space) from each sample to its nearest training image.

    Returns the per-sample ``distances`` and their ``min``, ``median`` and ``mean``, and
    ``copies``: the fraction of samples within ``threshold`` of a training image. Read it
    beside the same numbers for held-out data: samples much closer to the training set than
    held-out images are, are memorised rather than generated.
    """
    s, t = _pair(samples, train, ("samples", "training data"))
    nearest = torch.cat([d.min(1).values for _, d in _distances(s, t)])
    return {"distances": nearest.float(), "min": float(nearest.min()), "median": float(nearest.median()),
            "mean": float(nearest.mean()), "copies": float((nearest <= threshold).double().mean())}


# --------------------------------------------------------------------------- disentanglement

def mutual_information_gap(codes, factors, bins: int = 20) -> dict:
    """MIG (Chen et al., 2018): for each ground-truth factor, the gap between the two code
    dimensions sharing the most mutual information with it, divided by the factor's entropy;
    averaged over factors. 1 = each factor captured by exactly one code dimension.

    ``codes`` ``[N, L]`` (e.g. posterior means, L >= 2) are discretised into ``bins``
    equal-width bins per dimension; ``factors`` ``[N, K]`` are integer labels. MI by
    plug-in histograms (``sklearn.metrics.mutual_info_score``, nats), which is biased
    upwards by about (bins - 1)(levels - 1) / 2N. Constant factors are skipped (NaN).
    Returns ``{"mig", "per_factor", "mi"}`` with the ``[L, K]`` MI matrix.
    """
    from sklearn.metrics import mutual_info_score

    codes = _as_features(codes, "codes").cpu().numpy()
    factors = np.asarray(factors.cpu() if isinstance(factors, torch.Tensor) else factors)
    factors = factors.reshape(len(factors), -1) if factors.ndim == 1 else factors
    if factors.ndim != 2 or factors.shape[0] != codes.shape[0]:
        raise ValueError(f"factors must be [N, K] with N = {codes.shape[0]} (the number of codes), "
                         f"got shape {factors.shape}")
    if codes.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions, got {codes.shape[1]}")
    binned = [np.digitize(c, np.histogram_bin_edges(c, bins)[:-1]) for c in codes.T]
    mi = np.array([[mutual_info_score(f, c) for f in factors.T] for c in binned])
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    if not (entropy > 0).any():
        raise ValueError("every factor is constant; MIG is undefined")
    top = -np.sort(-mi, axis=0)
    per_factor = np.where(entropy > 0, (top[0] - top[1]) / np.where(entropy > 0, entropy, 1), np.nan)
    return {"mig": float(np.nanmean(per_factor)), "per_factor": per_factor.tolist(), "mi": mi}


# --------------------------------------------------------------------------- feature network

class FeatureClassifier(nn.Module):
    """A conv classifier of one or more label columns (e.g. the sprite factors). Its
    penultimate activations (:meth:`features`) are the embedding FID, KID and PRDC use."""

    def __init__(self, image_shape: Sequence[int], n_classes: int | Sequence[int], feature_dim: int = 128,
                 channels: Sequence[int] = (32, 64, 128)):
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.n_classes = [int(n_classes)] if isinstance(n_classes, int) else [int(n) for n in n_classes]
        if not self.n_classes or min(self.n_classes) < 2:
            raise ValueError(f"every label column needs at least 2 classes, got {self.n_classes}")
        self.encoder = ConvEncoder(self.image_shape, sum(self.n_classes), channels, hidden=feature_dim)
        self.feature_dim = int(feature_dim)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits per label column, each ``[..., n_classes[k]]``."""
        return list(self.encoder(x).split(self.n_classes, dim=-1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(x)


@torch.no_grad()
def classifier_features(classifier: FeatureClassifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features ``[N, feature_dim]`` of flat images, in eval mode and batches."""
    was_training = classifier.training
    classifier.eval()
    dev = next(classifier.parameters()).device
    out = torch.cat([classifier.features(x[i:i + batch_size].to(dev)) for i in range(0, x.shape[0], batch_size)])
    classifier.train(was_training)
    return out


def train_feature_classifier(x: torch.Tensor, y: torch.Tensor, image_shape: Sequence[int], *,
                             heldout_fraction: float = 0.1, epochs: int = 5, batch_size: int = 128,
                             lr: float = 1e-3, feature_dim: int = 128, channels: Sequence[int] = (32, 64, 128),
                             device="auto", seed: int = 0, progress: bool = False) -> tuple[FeatureClassifier, float]:
    """Train a :class:`FeatureClassifier` on flat images ``x`` and integer labels ``y``
    (``[N]`` or ``[N, K]`` columns such as the sprite factors; loss = summed cross-entropy).

    Holds out ``heldout_fraction`` of the rows (seeded permutation) and returns
    ``(model, accuracy)``: the held-out accuracy averaged over label columns (per column in
    ``model.heldout_accuracy``). Feed the network data on the scale it was trained on.
    """
    image_shape = tuple(int(s) for s in image_shape)
    x = _as_images(x, image_shape, "x").reshape(x.shape[0], -1)
    if not isinstance(y, torch.Tensor) or y.dim() not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be integer labels [N] or [N, K] with N = {x.shape[0]}, "
                         f"got {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    if y.is_floating_point() or (y < 0).any():
        raise ValueError("y must hold non-negative integer labels")
    y = y.long().reshape(x.shape[0], -1)
    n = x.shape[0]
    n_held = max(1, int(round(n * heldout_fraction)))
    if n - n_held < 2:
        raise ValueError(f"{n} rows are too few to train a classifier and hold out {n_held}")

    dev = resolve_device(device)
    torch.manual_seed(seed)
    perm = torch.randperm(n)
    held, fit = perm[:n_held], perm[n_held:]
    x, y = x.to(dev), y.to(dev)
    model = FeatureClassifier(image_shape, (y.max(0).values + 1).clamp(min=2).tolist(), feature_dim, channels).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = math.ceil(len(fit) / batch_size)
    with tqdm(total=epochs * steps, desc="feature classifier", unit="step", disable=not progress, leave=False) as bar:
        for _ in range(epochs):  # a bar of steps: an epoch of a large set takes long on a CPU
            model.train()
            order = fit[torch.randperm(len(fit))].to(dev)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                loss = sum(F.cross_entropy(logits, y[idx, k]) for k, logits in enumerate(model(x[idx])))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update()
    model.eval()
    with torch.no_grad():
        held = held.to(dev)
        logits = [torch.cat(parts) for parts in zip(*(model(x[held[i:i + 512]]) for i in range(0, len(held), 512)))]
        model.heldout_accuracy = [float((lg.argmax(-1) == y[held, k]).float().mean()) for k, lg in enumerate(logits)]
    return model, float(np.mean(model.heldout_accuracy))


# --------------------------------------------------------------------------- report

def quality_report(samples: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor,
                   classifier: FeatureClassifier, *, k: int = 5, kid_subsets: int = 20,
                   kid_subset_size: int = 1000, seed: int = 0, batch_size: int = 512) -> dict:
    """Every metric for flat ``samples`` against real data, each beside its ceiling.

    ``samples``: metric of the samples against ``heldout``. ``ceiling``: the same metric for
    a random subset of ``train`` of the same size (a perfect model's draws) against
    ``heldout``. Memorisation compares nearest-training-image distances of the samples with
    those of the held-out images; Laplacian variance compares sharpness. Plain floats only.
    """
    shape = classifier.image_shape
    samples = _as_images(samples, shape, "samples").flatten(1)
    train = _as_images(train, shape, "training data").flatten(1)
    heldout = _as_images(heldout, shape, "held-out data").flatten(1)
    n = samples.shape[0]
    pick = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    stand_in = train[pick.to(train.device)]
    feats = {name: classifier_features(classifier, x, batch_size).double()
             for name, x in (("samples", samples), ("ceiling", stand_in), ("heldout", heldout))}
    ref = feats["heldout"]
    report = {"n_samples": n, "n_heldout": heldout.shape[0], "n_train": train.shape[0]}
    report["fid"] = {who: frechet_distance(feats[who], ref) for who in ("samples", "ceiling")}
    report["kid"] = {who: kernel_distance(feats[who], ref, kid_subsets, kid_subset_size, seed)
                     for who in ("samples", "ceiling")}
    report["prdc"] = {who: prdc(ref, feats[who], k) for who in ("samples", "ceiling")}
    mem = {"samples": memorisation(samples, train), "ceiling": memorisation(heldout, train)}
    report["memorisation"] = {who: {key: v for key, v in m.items() if key != "distances"} for who, m in mem.items()}
    report["laplacian_variance"] = {"samples": float(laplacian_variance(samples, shape).mean()),
                                    "ceiling": float(laplacian_variance(heldout, shape).mean())}
    return report
