"""Sequence datasets: JSB Chorales from .mat, the pickle layout, music21 chorales, synthetic sets."""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ppgen.data import DATASETS, SequenceDataset, load
from ppgen.data.polyphonic import (load_chorales, load_polyphonic, load_synthetic, notes_to_roll, pad_sequences,
                                   score_to_roll, unpad, _save_splits)

JSB = Path(__file__).resolve().parents[2] / "shared/data/polyphonic/JSB_Chorales.mat"


def test_jsb_from_the_shared_mat_file():
    data = load(f"jsb:{JSB}")
    assert isinstance(data, SequenceDataset) and data.name == "jsb" and data.likelihood == "bernoulli"
    for split, n in (("train", 229), ("val", 76), ("test", 77)):
        x, mask = getattr(data, split)
        assert x.shape[0] == n and x.shape[2] == 88 and mask.shape == x.shape[:2]
        assert mask.dtype == torch.bool and x.dtype == torch.float32
        lengths = mask.sum(-1)
        assert lengths.min() >= 25 and lengths.max() == x.shape[1]
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert torch.all(x[~mask] == 0)
    assert data.x_dim == 88 and data.frames("train") == 13807 and data.frames("test") == 4725


def test_jsb_needs_a_path():
    with pytest.raises(ValueError, match="jsb:PATH"):
        load("jsb")
    with pytest.raises(FileNotFoundError):
        load("jsb:/nonexistent/JSB.mat")


def test_pad_and_unpad_round_trip():
    seqs = [np.eye(88)[:3], np.ones((5, 88))]
    x, mask = pad_sequences(seqs)
    assert x.shape == (2, 5, 88) and mask.sum(-1).tolist() == [3, 5]
    back = unpad(x, mask)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(seqs, back))


@pytest.mark.parametrize("seqs, message", [
    ([np.zeros((4, 87))], "88 keys"),
    ([np.zeros((0, 88))], "empty sequence"),
    ([np.full((2, 88), 0.5)], "binary"),
    ([np.zeros(88)], "2-d array"),
    ([np.full((2, 88), np.nan)], "non-finite"),
    ([], "no sequences"),
])
def test_bad_sequences_are_named(seqs, message):
    with pytest.raises(ValueError, match=message):
        pad_sequences(seqs)


def write_pickle(path, data, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_layout_with_note_numbers(tmp_path, protocol):
    data = {"train": [[[60, 64, 67], [], (62.0,)]], "valid": [[{21, 108}]], "test": [[[60]] * 4, [[72]]]}
    ds = load_polyphonic(write_pickle(tmp_path / "tiny.pickle", data, protocol))
    x, mask = ds.train
    assert x.shape == (1, 3, 88)
    assert np.nonzero(x[0, 0].numpy())[0].tolist() == [39, 43, 46] and x[0, 1].sum() == 0 and x[0, 2, 41] == 1
    assert ds.val[0][0, 0, [0, 87]].tolist() == [1.0, 1.0]
    assert ds.test[1].sum(-1).tolist() == [4, 1]


def test_pickle_refuses_anything_but_plain_data(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = write_pickle(tmp_path / "evil.pickle", {"train": [Evil()], "valid": [], "test": []})
    with pytest.raises(ValueError, match=r"evil\.pickle: refusing to load .*system \(nothing was run\)"):
        load_polyphonic(path)
    path = write_pickle(tmp_path / "arr.pickle", {"train": [np.zeros((2, 88))], "valid": [], "test": []})
    with pytest.raises(ValueError, match="refusing"):
        load_polyphonic(path)


def test_pickle_with_bad_notes_or_keys(tmp_path):
    with pytest.raises(ValueError, match="not a piano key"):
        load_polyphonic(write_pickle(tmp_path / "a.pickle", {"train": [[[12]]], "valid": [[[60]]], "test": [[[60]]]}))
    with pytest.raises(ValueError, match="expected a dict with keys"):
        load_polyphonic(write_pickle(tmp_path / "b.pickle", {"training": []}))
    with pytest.raises(ValueError, match="empty sequence"):
        load_polyphonic(write_pickle(tmp_path / "c.pickle", {"train": [[]], "valid": [[[60]]], "test": [[[60]]]}))


def test_notes_to_roll():
    roll = notes_to_roll([[21], [108, 60]])
    assert roll.shape == (2, 88) and roll.sum() == 3 and roll[1, 87] == 1 and roll[1, 39] == 1


def test_synthetic_sets():
    binary, real = load("synthetic"), load("synthetic:real")
    assert binary.x_dim == 88 and binary.likelihood == "bernoulli"
    assert real.x_dim == 8 and real.likelihood == "normal"
    x, mask = binary.train
    assert x.shape[0] == 72 and set(x.unique().tolist()) == {0.0, 1.0}
    assert mask.sum(-1).min() >= 16 and torch.all(x[~mask] == 0)
    assert not torch.equal(load_synthetic(seed=1).train[0], x[:, :load_synthetic(seed=1).train[0].shape[1]])
    assert torch.equal(load_synthetic().train[0], x)  # fixed by its seed
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        load("synthetic:audio")


def test_chorales_without_music21_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    with pytest.raises(ImportError, match=r"ppgen\[music\]"):
        load_chorales(cache=str(tmp_path))


def test_chorales_load_from_the_cache_without_music21(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "music21", None)
    rng = np.random.default_rng(0)
    splits = {s: [(rng.random((L, 88)) < 0.05).astype(np.float32) for L in (5, 9)] for s in ("train", "val", "test")}
    _save_splits(tmp_path / "chorales.npz", splits)
    monkeypatch.setenv("PPGEN_CACHE", str(tmp_path))
    ds = DATASETS["chorales"]()
    assert ds.name == "chorales" and ds.train[0].shape == (2, 9, 88)
    assert np.array_equal(ds.test[0][0, :5].numpy(), splits["test"][0])


class _Pitch:
    def __init__(self, midi):
        self.midi = midi


class _Note:
    def __init__(self, offset, length, *midi):
        self.offset, self.quarterLength, self.pitches = offset, length, [_Pitch(m) for m in midi]


class _Score:
    """The few music21 attributes score_to_roll reads."""

    highestTime = 4.0

    def flatten(self):
        return self

    @property
    def notes(self):
        return [_Note(0, 2, 60, 64), _Note(2, 0.5, 67), _Note(2.5, 1.5, 65), _Note(0, 4, 10)]


def test_score_to_roll_samples_each_beat():
    roll = score_to_roll(_Score())
    assert roll.shape == (4, 88)
    on = {t: (np.nonzero(roll[t])[0] + 21).tolist() for t in range(4)}
    assert on == {0: [60, 64], 1: [60, 64], 2: [67], 3: [65]}  # note 10 is below the piano


# -- transposition (training-data augmentation) ---------------------------------------------------
def test_transposed_moves_notes_and_drops_copies_that_leave_the_keyboard():
    from ppgen.data import transposed

    x = torch.zeros(3, 4, 88)
    x[0, 0, 40] = x[0, 2, 44] = 1      # middle of the keyboard: every shift fits
    x[1, 1, 1] = 1                     # near the bottom: a shift of -2 would leave the keyboard
    x[2, 3, 86] = 1                    # near the top: +2 would leave it
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    xt, mt = transposed((x, mask), [-2, 0, 2])
    # -2: sequences 0 and 2 (1 would leave the keyboard); 0: all three; +2: 0 and 1 (2 would leave it)
    assert xt.shape == (7, 4, 88) and mt.shape == (7, 4)
    assert torch.equal(xt[0].nonzero(), torch.tensor([[0, 38], [2, 42]])) and torch.equal(mt[0], mask[0])
    assert torch.equal(xt[1].nonzero(), torch.tensor([[3, 84]])) and torch.equal(mt[1], mask[2])
    assert torch.equal(xt[2:5], x) and torch.equal(mt[2:5], mask)
    assert torch.equal(xt[5].nonzero(), torch.tensor([[0, 42], [2, 46]]))
    assert torch.equal(xt[6].nonzero(), torch.tensor([[1, 3]])) and torch.equal(mt[6], mask[1])


def test_transposed_keeps_every_note_count():
    from ppgen.data import transposed

    x = (torch.rand(5, 6, 88) < 0.05).float()
    x[..., :6] = 0
    x[..., -6:] = 0
    mask = torch.ones(5, 6, dtype=torch.bool)
    xt, _ = transposed((x, mask), range(-6, 7))
    assert xt.shape[0] == 5 * 13
    assert torch.equal(xt.sum((1, 2)), x.sum((1, 2)).repeat(13))
    with pytest.raises(ValueError, match="shape"):
        transposed((x[0], mask[0]), [1])


@pytest.mark.parametrize("content, message", [
    (b"", r"is empty \(0 bytes\), not a valid MATLAB \.mat file"),
    (b"this is a text file, not MATLAB\n" * 20, r"is not a valid MATLAB \.mat file \((MatReadError|ValueError)"),
    (b"short text\n", r"is not a valid MATLAB \.mat file \((MatReadError|ValueError)"),
])
def test_a_file_that_is_not_a_mat_file_is_named(tmp_path, content, message):
    path = tmp_path / "JSB_Chorales.mat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        load(f"jsb:{path}")
    assert str(path) in str(error.value) and "JSB_Chorales.mat" in str(error.value)


def test_a_damaged_pickle_is_named(tmp_path):
    path = write_pickle(tmp_path / "jsb.pickle", {"train": [[[60]]], "valid": [[[60]]], "test": [[[60]]]})
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"jsb\.pickle is not a valid polyphonic music pickle"):
        load_polyphonic(path)


def test_a_mat_path_loads_directly_and_missing_files_are_named(tmp_path, monkeypatch):
    assert isinstance(load(str(JSB)), SequenceDataset)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"not found: rel/J.mat \\(looked in {tmp_path}\\)"):
        load("jsb:rel/J.mat")
