
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


# -- every real dtype, converted once to the model's dtype ----------------------------------------
COUNTS = np.random.default_rng(0).integers(0, 17, size=(60, 5))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                   np.uint64, np.float16, np.float32, np.float64, np.longdouble, ">f8", ">i4"])
def test_counts_of_any_dtype_become_model_dtype_and_stay_counts(dtype):
    ds = data.as_dataset(COUNTS.astype(dtype))
    for split in (ds.train, ds.val, ds.test):
        assert split.dtype == torch.get_default_dtype()
    assert ds.likelihood == "categorical" and ds.likelihood_kwargs == {"levels": 17}
    every = torch.cat([ds.train, ds.val, ds.test]).sort(0).values
    assert torch.equal(every, torch.from_numpy(np.sort(COUNTS, 0)).float())


def test_bool_and_float_arrays_keep_their_likelihood():
    bits = np.random.default_rng(1).random((40, 6)) < 0.5
    assert data.as_dataset(bits).likelihood == "bernoulli"
    assert data.as_dataset(torch.from_numpy(bits)).train.dtype == torch.float32
    unit = data.as_dataset(np.random.default_rng(2).random((40, 6)))          # float64 in [0, 1]
    assert unit.likelihood == "continuous_bernoulli" and unit.train.dtype == torch.float32
    wide = data.as_dataset(torch.randn(40, 3, dtype=torch.float64) * 100)
    assert wide.likelihood == "normal" and wide.train.dtype == torch.float32
    # the guess sees the exact values: 1 - 1e-12 is not a count, though float32 rounds it to 1
    near = np.where(np.random.default_rng(3).random((40, 6)) < 0.5, 0.0, 1 - 1e-12)
    assert data.as_dataset(near).likelihood == "continuous_bernoulli"


@pytest.mark.parametrize("bad, message", [
    (np.ones((10, 3), dtype=np.complex128), "real-valued"),
    (torch.ones(10, 3, dtype=torch.complex64), "real-valued"),
    (np.array([[{}, {}]] * 10, dtype=object), "numeric"),
    (np.array([["a", "b"]] * 10), "numeric"),
])
def test_complex_object_and_string_arrays_are_refused(bad, message):
    with pytest.raises(TypeError, match=message):
        data.as_dataset(bad)


def test_float64_npy_trains_a_vae(tmp_path):
    from ppgen.guides import DiagonalNormalGuide
    from ppgen.infer import fit

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((120, 8)))                   # float64, as np.save writes
    ds = data.load(str(path))
    assert ds.train.dtype == torch.float32
    model = VAE.for_data(ds, z_dim=2, hidden=8)
    guide = DiagonalNormalGuide.for_model(model, hidden=8)
    history = fit(model, guide, ds.train, ds.val, epochs=1, batch_size=50, progress=False, device="cpu")
    assert history.epoch == [1] and np.isfinite(history.train_elbo[-1]) and np.isfinite(history.val_elbo[-1])


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.uint16, bool])
def test_npz_and_idx_of_other_dtypes(tmp_path, dtype):
    rng = np.random.default_rng(4)
    x = (rng.random((30, 4)) < 0.5).astype(dtype)
    np.savez(tmp_path / "s.npz", train=x, test=x[:5])
    ds = data.load(str(tmp_path / "s.npz"))
    assert ds.train.dtype == torch.float32 and ds.likelihood == "bernoulli" and ds.test.shape == (5, 4)
    np.savez(tmp_path / "one.npz", x)                                              # a single array: like .npy
    assert data.load(str(tmp_path / "one.npz")).x_dim == 4
    idx = data.write_idx(tmp_path / "imgs-idx3", (x.reshape(30, 2, 2) * 200).astype(np.uint8))
    assert data.load(str(idx)).train.dtype == torch.float32


# -- bad files: one clear error that names the file --------------------------------------------------
def _write_npy_bytes(path, content):
    path.write_bytes(content)


def _pickled_objects(path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _raw_pickle(path):
    import pickle

    path.write_bytes(pickle.dumps([[1.0, 2.0]]))


def _truncated_npy(path):
    np.save(path, np.zeros((100, 10)))
    path.write_bytes(path.read_bytes()[:300])


def _truncated_npz(path):
    np.savez(path, train=np.zeros((100, 10)), test=np.zeros((10, 10)))
    path.write_bytes(path.read_bytes()[:700])


def _complex_npy(path):
    np.save(path, np.ones((10, 2), dtype=complex))


def _nan_npy(path):
    np.save(path, np.array([[0.0, np.inf], [np.nan, 1.0]] * 10))


def _rank_one_npy(path):
    np.save(path, np.arange(20.0))


def _npz_without_splits(path):
    np.savez(path, a=np.zeros((5, 2)), b=np.zeros((5, 2)))


def _object_npz(path):
    np.savez(path, train=np.array([{}] * 5, dtype=object), test=np.zeros((2, 2)))


@pytest.mark.parametrize("name, write, error, message", [
    ("empty.npy", lambda p: p.write_bytes(b""), ValueError, r"is empty \(0 bytes\), not a valid \.npy file"),
    ("noise.npy", lambda p: p.write_bytes(np.random.default_rng(0).bytes(300)), ValueError,
     r"is not a valid \.npy file: it does not start with the NumPy header"),
    ("objects.npy", _pickled_objects, ValueError, r"array of Python objects.*refuses to unpickle"),
    ("pickle.npy", _raw_pickle, ValueError, r"is a Python pickle, not a \.npy file; ppgen never unpickles"),
    ("short.npy", _truncated_npy, ValueError, r"is truncated: .*\(100, 10\).*8000 bytes.*only 172 bytes follow"),
    ("short.npz", _truncated_npz, ValueError, r"is not a valid \.npz file \(BadZipFile"),
    ("complex.npy", _complex_npy, TypeError, "complex numbers"),
    ("nan.npy", _nan_npy, ValueError, r"train data contains 20 non-finite values \(NaN or inf\)"),
    ("flat.npy", _rank_one_npy, ValueError, r"got shape \(20,\); a single feature per row needs shape \[N, 1\]"),
    ("splits.npz", _npz_without_splits, ValueError, r"must hold arrays 'train' and 'test'.*holds \['a', 'b'\]"),
    ("objects.npz", _object_npz, ValueError, r"\(array 'train'\) holds an array of Python objects"),
    ("text.npz", lambda p: p.write_text("1,2,3\n"), ValueError, r"is not a valid \.npz file: it does not start"),
    ("noise.idx", lambda p: p.write_bytes(b"hello world"), ValueError, r"is not an IDX file.*ppgen reads"),
])
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, monkeypatch, name, write, error, message):
    # np.load would unpickle through pickle.loads: make any attempt fail loudly
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a data file was unpickled"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("a data file was unpickled"))
    path = tmp_path / name
    write(path)
    with pytest.raises(error, match=message) as raised:
        data.load(str(path))
    assert type(raised.value) is error and str(path) in str(raised.value)


def test_truncated_gzip_idx_and_folder_without_idx(tmp_path):
    path = data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((50, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz is not a valid IDX file \((EOFError|BadGzip)"):
        data.read_idx(path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match=r"folder must contain train-images.*holds \['notes\.txt'\]"):
        data.load(str(folder))


@pytest.mark.parametrize("spec", ["missing.npy", "missing.npz", "missing-idx", "jsb:missing.mat",
                                  "jsb:missing.pickle", "missing.mat"])
def test_missing_files_name_the_path(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)) as raised:
        data.load(spec)
    assert "missing" in str(raised.value)


def test_missing_files_for_direct_loaders(tmp_path):
    from ppgen.data.midi import read_midi

    for load in (data.load_numpy, data.load_idx, data.read_idx, data.load_polyphonic, read_midi):
        with pytest.raises(FileNotFoundError, match="gone"):
            load(tmp_path / "gone")


def test_a_file_that_is_not_midi_is_named(tmp_path):
    from ppgen.data.midi import read_midi

    path = tmp_path / "song.mid"
    path.write_bytes(b"not a midi file at all")
    with pytest.raises(ValueError, match=r"song\.mid is not a valid MIDI file"):
        read_midi(path)


# -- specs that work from any folder ---------------------------------------------------------------
def test_resolve_spec_makes_paths_absolute(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    assert data.resolve_spec("x.npy") == str(tmp_path / "x.npy")
    assert data.resolve_spec("sub/../x.npz") == str(tmp_path / "x.npz")
    assert data.resolve_spec("jsb:rel/path.mat") == f"jsb:{tmp_path / 'rel/path.mat'}"
    assert data.resolve_spec("chorales:cache") == f"chorales:{tmp_path / 'cache'}"
    assert data.resolve_spec("~/d.npy") == os.path.join(os.path.expanduser("~"), "d.npy")
    for unchanged in ("digits", "sprites:64", "synthetic:real", "jsb", "/abs/x.npy", "jsb:/abs/J.mat"):
        assert data.resolve_spec(unchanged) == unchanged


def test_a_resolved_spec_loads_the_same_data_from_another_folder(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "x.npy", np.random.default_rng(0).random((30, 3)))
    monkeypatch.chdir(tmp_path / "a")
    spec = data.resolve_spec("x.npy")
    first = data.load(spec)
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(FileNotFoundError):
        data.load("x.npy")
    assert torch.equal(data.load(spec).train, first.train)


def test_load_vectors_refuses_sequence_data():
    assert data.load_vectors("digits").x_dim == 64
    with pytest.raises(ValueError, match="holds sequences.*ppgen train vrnn"):
        data.load_vectors("synthetic")
