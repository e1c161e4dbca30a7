import math

import numpy as np
import pytest
import scipy.linalg
import torch

from ppgen.data.sprites import load_sprites
from ppgen.companions.quality import FeatureClassifier, classifier_features, frechet_distance, kernel_distance, laplacian_variance, memorisation, mutual_information_gap, prdc, psnr, quality_report, ssim, train_feature_classifier


def _with_moments(n, mean, cov, seed):
    """n points whose sample mean and (n-1)-normalised covariance are exactly mean, cov."""
    x = np.random.default_rng(seed).standard_normal((n, len(mean)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # now exactly white
    return torch.from_numpy(x @ np.linalg.cholesky(cov).T + mean)


# ------------------------------------------------------------------ PSNR / SSIM / blur

def test_psnr_known_values():
    x = torch.zeros(2, 1, 8, 8)
    y = torch.full((2, 1, 8, 8), 0.1)
    assert torch.allclose(psnr(x, y), torch.tensor([20.0, 20.0], dtype=torch.float64))
    assert psnr(y, y).isinf().all()
    assert torch.allclose(psnr(x.flatten(1), y.flatten(1) * 2, image_shape=(1, 8, 8)),
                          torch.tensor(10 * math.log10(1 / 0.04), dtype=torch.float64))


def test_ssim_identical_and_constant_images():
    x = torch.rand(3, 2, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    a, b = 0.3, 0.7  # no variance anywhere: only the luminance term is left
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a ** 2 + b ** 2 + c1)
    got = ssim(torch.full((1, 1, 16, 16), a, dtype=torch.float64), torch.full((1, 1, 16, 16), b, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert ssim(x, 1 - x).mean() < 0.5 < ssim(x, (x + 0.05 * torch.rand_like(x)).clamp(0, 1)).mean()


def test_ssim_matches_a_window_by_window_computation():
    rng = np.random.default_rng(0)
    x, y = rng.random((12, 12)), rng.random((12, 12))
    t = np.arange(11) - 5
    g = np.exp(-t ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    values = []
    for i in range(2):
        for j in range(2):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    got = ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None])
    assert got.item() == pytest.approx(np.mean(values), rel=1e-9)


def test_image_metric_input_errors():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        ssim(x, torch.rand(2, 1, 16, 8))
    with pytest.raises(ValueError, match="wrong channel count"):
        psnr(x, x, image_shape=(3, 16, 16))
    with pytest.raises(ValueError, match="wrong image size"):
        psnr(x, x, image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="image_shape"):
        psnr(x.flatten(1), x.flatten(1))
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="empty"):
        laplacian_variance(torch.rand(0, 1, 8, 8))


def test_laplacian_variance_orders_sharpness():
    flat = torch.full((1, 1, 16, 16), 0.5)
    assert laplacian_variance(flat).item() == pytest.approx(0.0, abs=1e-12)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float()[None, None]
    blurred = torch.nn.functional.avg_pool2d(checker, 3, stride=1, padding=1, count_include_pad=False)
    assert laplacian_variance(checker).item() == pytest.approx(16.0)  # the Laplacian is +-4, half each
    assert laplacian_variance(checker).item() > 10 * laplacian_variance(blurred).item()


# ------------------------------------------------------------------ Frechet distance, KID

def test_frechet_identical_sets_is_zero():
    x = torch.randn(200, 6)
    assert abs(frechet_distance(x, x)) < 1e-8


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -2.0, 0.5, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a = _with_moments(500, mu1, np.diag(var1), 0)
    b = _with_moments(700, mu2, np.diag(var2), 1)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(3)
    m1, m2 = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    a, b = _with_moments(300, mu1, s1, 4), _with_moments(400, mu2, s2, 5)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)


def test_kid_matches_direct_unbiased_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((7, 3)) + 0.5
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = 6  # one subset of min(6, 7) points: all of x and 6 of y
    kid = kernel_distance(torch.from_numpy(x), torch.from_numpy(y[:6]), subsets=1, subset_size=m)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    assert kid["mean"] == pytest.approx(xx + yy - 2 * xy, rel=1e-9) and kid["std"] == 0.0


def test_kid_separates_same_from_shifted_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(600, 8, generator=g), torch.randn(600, 8, generator=g)
    same = kernel_distance(a, b, subsets=10, subset_size=300)
    shifted = kernel_distance(a, b + 1.0, subsets=10, subset_size=300)
    assert abs(same["mean"]) < 3 * same["std"] + 0.01
    assert shifted["mean"] > 10 * abs(same["mean"]) and shifted["mean"] > 0.1


def test_distance_input_errors():
    with pytest.raises(ValueError, match="feature dims differ"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="empty"):
        kernel_distance(torch.randn(0, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="2-D"):
        prdc(torch.randn(10), torch.randn(10))


# ------------------------------------------------------------------ PRDC, memorisation

def test_prdc_identical_sets():
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    out = prdc(x, x.clone(), k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    assert out["density"] == pytest.approx(6 / 5)  # each real ball holds its centre and k others


def test_prdc_far_apart_sets_and_half_overlap():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(200, 4, generator=g)
    far = torch.randn(200, 4, generator=g) + 100.0
    assert prdc(real, far, k=3) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    half = torch.cat([real[:100], far[:100]])
    out = prdc(real, half, k=3)
    assert out["precision"] == pytest.approx(0.5)
    # the copied half covers itself; another real ball misses all copies w.p. about (1/2)^k
    assert 0.85 < out["coverage"] < 1.0
    # each copy lies in its own ball and about k others: density about (1/2)(k+1)/k
    assert out["density"] == pytest.approx(0.5 * 4 / 3, abs=0.1)
    with pytest.raises(ValueError, match="k=300"):
        prdc(real, far, k=300)


def test_memorisation_distances():
    train = torch.arange(20, dtype=torch.float32).reshape(10, 2) * 10  # points 10+ apart
    copies = memorisation(train[:4], train)
    assert copies["min"] == copies["median"] == 0.0 and copies["copies"] == 1.0
    shifted = memorisation(train + torch.tensor([0.0, 0.5]), train)
    assert torch.allclose(shifted["distances"], torch.full((10,), 0.5))
    assert shifted["copies"] == 0.0 and shifted["mean"] == pytest.approx(0.5)


# ------------------------------------------------------------------ MIG

def test_mig_of_the_true_factors_is_one_and_of_noise_near_zero():
    d = load_sprites(n=4000, seed=0)
    factors = d.labels["train"]
    noise = 0.01 * torch.randn(factors.shape, generator=torch.Generator().manual_seed(0))
    perfect = mutual_information_gap(factors.double() + noise, factors)
    assert perfect["mig"] > 0.95 and perfect["mi"].shape == (5, 5)
    random = mutual_information_gap(torch.randn(len(factors), 6, generator=torch.Generator().manual_seed(1)), factors)
    assert random["mig"] < 0.05
    # two codes that both carry the shape factor: no gap for that factor
    codes = torch.stack([factors[:, 0].double(), factors[:, 0].double(), torch.randn(len(factors))], 1)
    assert mutual_information_gap(codes, factors[:, :1])["mig"] < 0.05


def test_mig_input_errors():
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        mutual_information_gap(torch.randn(50, 1), torch.randint(0, 3, (50, 2)))
    with pytest.raises(ValueError, match="N = 50"):
        mutual_information_gap(torch.randn(50, 3), torch.randint(0, 3, (40, 2)))
    with pytest.raises(ValueError, match="constant"):
        mutual_information_gap(torch.randn(50, 3), torch.zeros(50, 2, dtype=torch.long))


# ------------------------------------------------------------------ feature classifier and report

@pytest.fixture(scope="module")
def classifier_and_data():
    d = load_sprites(n=3000, seed=0)
    model, acc = train_feature_classifier(d.train, d.labels["train"][:, [0, 3, 4]], d.image_shape, epochs=3,
                                          channels=(8, 16, 32), feature_dim=32, lr=3e-3, seed=0)
    return model, acc, d


def test_feature_classifier_learns_the_factors(classifier_and_data):
    model, acc, d = classifier_and_data
    assert len(model.heldout_accuracy) == 3 and acc == pytest.approx(np.mean(model.heldout_accuracy))
    chance = np.mean([1 / 3, 1 / 8, 1 / 8])
    assert acc > 2 * chance
    feats = classifier_features(model, d.test[:10])
    assert feats.shape == (10, 32) and torch.isfinite(feats).all()


def test_quality_report_separates_real_from_blank_samples(classifier_and_data):
    model, _, d = classifier_and_data
    real = quality_report(d.val, d.train, d.test, model, kid_subsets=5)
    blank = quality_report(torch.zeros_like(d.val), d.train, d.test, model, kid_subsets=5)
    for key in ("fid", "kid", "prdc", "memorisation", "laplacian_variance"):
        assert set(real[key]) == {"samples", "ceiling"}
    assert real["fid"]["samples"] < 3 * real["fid"]["ceiling"] + 1.0
    assert blank["fid"]["samples"] > 10 * real["fid"]["samples"]
    assert blank["prdc"]["samples"]["coverage"] < 0.05 < real["prdc"]["samples"]["coverage"]
    assert blank["laplacian_variance"]["samples"] == 0.0 < real["laplacian_variance"]["samples"]
    assert real["memorisation"]["ceiling"]["median"] > 0
    copies = quality_report(d.train[:300], d.train, d.test, model, kid_subsets=2)
    assert copies["memorisation"]["samples"]["copies"] == 1.0


def test_report_and_classifier_input_errors(classifier_and_data):
    model, _, d = classifier_and_data
    with pytest.raises(ValueError, match="samples have 4096 features"):
        quality_report(torch.rand(20, 64 * 64), d.train, d.test, model)
    with pytest.raises(ValueError, match="wrong channel count"):
        quality_report(torch.rand(20, 3, 32, 32), d.train, d.test, model)
    with pytest.raises(ValueError, match="held-out data are empty"):
        quality_report(d.val, d.train, d.test[:0], model)
    with pytest.raises(ValueError, match="integer labels"):
        train_feature_classifier(d.train[:20], torch.rand(20), d.image_shape)
    with pytest.raises(ValueError, match="at least 2 classes"):
        FeatureClassifier(d.image_shape, 1)
