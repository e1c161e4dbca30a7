
import numpy as np
import pytest
import torch

from ppgen import data, likelihoods
from ppgen.models import VAE


def test_digits_split_and_range(digits):
    assert digits.train.shape == (1000, 64)
    assert digits.val.shape == (350, 64)
    assert digits.test.shape == (447, 64)
    all_x = torch.cat([digits.train, digits.val, digits.test])
    assert all_x.min() == 0 and all_x.max() == 16
    assert torch.equal(all_x, all_x.round())
    assert digits.likelihood == "categorical" and digits.likelihood_kwargs == {"levels": 17}
    assert digits.labels["test"].shape == (447,)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 4, 5), dtype=np.uint8)
    path = data.write_idx(tmp_path / name, images)
    if name.endswith(".gz"):
        with open(path, "rb") as f:
            assert f.read(2) == b"\x1f\x8b"
    np.testing.assert_array_equal(data.read_idx(path), images)


def test_idx_directory_with_labels(tmp_path):
    rng = np.random.default_rng(1)
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 6, 6), dtype=np.uint8))
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 60, dtype=np.uint8))
    data.write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 6, 6), dtype=np.uint8))
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 12, dtype=np.uint8))
    ds = data.load(str(tmp_path))
    assert ds.train.shape == (50, 36) and ds.val.shape == (10, 36) and ds.test.shape == (12, 36)
    assert ds.likelihood == "bernoulli" and set(ds.train.unique().tolist()) <= {0.0, 1.0}
    assert ds.image_shape == (1, 6, 6)
    assert ds.labels["train"].shape == (50,) and ds.labels["test"].shape == (12,)
    grey = data.load_idx(tmp_path, binarize=False)
    assert grey.likelihood == "continuous_bernoulli" and 0 <= grey.train.min() and grey.train.max() <= 1


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        data.read_idx(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(bad)
    truncated = tmp_path / "short"
    data.write_idx(truncated, np.zeros((3, 2, 2), np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:-2])
    with pytest.raises(ValueError, match="bytes follow"):
        data.read_idx(truncated)
    with pytest.raises(FileNotFoundError, match="t10k-images"):
        data.load_idx(tmp_path)


def test_load_unknown_name_or_path():
    with pytest.raises(FileNotFoundError, match="no dataset named 'nope'.*digits"):
        data.load("nope")


def test_as_dataset_accepts_arrays_and_images():
    x = np.random.default_rng(0).integers(0, 2, size=(100, 3, 4)).astype(np.float32)
    ds = data.as_dataset(x, name="toy")
    assert ds.image_shape == (1, 3, 4) and ds.x_dim == 12
    assert ds.train.shape[0] + ds.val.shape[0] + ds.test.shape[0] == 100
    assert ds.likelihood == "bernoulli"
    real = data.as_dataset(torch.randn(50, 3))
    assert real.likelihood == "normal"


@pytest.mark.parametrize("bad, error, message", [
    (torch.zeros(5), ValueError, "2 dimensions"),
    (torch.zeros(0, 4), ValueError, "empty"),
    (torch.tensor([[0.0, float("nan")]]), ValueError, "non-finite"),
    (np.array([["a", "b"]], dtype=object), TypeError, "numeric"),
    ([[1, 2]], TypeError, "torch.Tensor or numpy"),
])
def test_check_tensor_errors(bad, error, message):
    with pytest.raises(error, match=message):
        data.check_tensor(bad)


@pytest.mark.parametrize("lik, x, message", [
    (likelihoods.Categorical(2, levels=17), torch.tensor([[3.0, 17.0]]), r"support \{0, ..., 16\}.*17-level.*17"),
    (likelihoods.Categorical(2, levels=17), torch.tensor([[3.0, 2.5]]), "outside the support"),
    (likelihoods.Bernoulli(2), torch.tensor([[1.0, 0.5]]), r"Bernoulli.*0\.5"),
    (likelihoods.Binomial(2, total_count=16), torch.tensor([[-1.0, 0.0]]), "Binomial"),
    (likelihoods.ContinuousBernoulli(2), torch.tensor([[1.5, 0.0]]), r"outside \[0, 1\]"),
    (likelihoods.Normal(2), torch.tensor([[float("inf"), 0.0]]), "non-finite"),
])
def test_support_errors(lik, x, message):
    with pytest.raises(ValueError, match=message):
        lik.check(x)


def test_model_rejects_wrong_shape(digits):
    vae = VAE.for_data(digits)
    with pytest.raises(ValueError, match=r"shape \[N, 64\]"):
        vae.check_data(torch.zeros(3, 10))
