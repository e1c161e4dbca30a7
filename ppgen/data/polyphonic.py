"""Polyphonic music and other sequence data as padded tensors with masks and fixed splits.

Piano rolls follow Boulanger-Lewandowski et al. (2012): one frame per quarter note, 88 keys
(column 0 is MIDI note 21, A0), 1 where a key sounds. Sources: their ``.mat`` files
(``traindata``/``validdata``/``testdata``), their pickles (``train``/``valid``/``test``:
lists of sequences of frames of MIDI note numbers, read by a restricted unpickler that builds
nothing but plain containers and numbers), Bach chorales built from the music21 corpus
(optional extra ``ppgen[music]``), and small synthetic sets that need no files.
"""
from __future__ import annotations

import builtins
import io
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .files import existing_file, reading

KEYS = 88
LOWEST_NOTE = 21  # MIDI number of key 0 (A0); key 87 is 108 (C8)


@dataclass
class SequenceDataset:
    """Sequences with fixed train/val/test splits; each split is ``(x, mask)``: ``x`` a float
    tensor ``[N, T_max, x_dim]`` padded with zeros after each sequence's end, ``mask`` a bool
    tensor ``[N, T_max]``, True on real frames. ``fit(model, guide, dataset)`` takes it as is.
    ``likelihood`` names the p(x_t | ...) that suits the values (bernoulli for piano rolls)."""

    name: str
    train: tuple
    val: tuple
    test: tuple
    likelihood: str = "bernoulli"
    info: dict = field(default_factory=dict)

    @property
    def x_dim(self) -> int:
        return int(self.train[0].shape[-1])

    def frames(self, split: str = "test") -> int:
        """Real (unpadded) frames in a split: the denominator of per-frame numbers."""
        return int(getattr(self, split)[1].sum())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={tuple(getattr(self, s)[0].shape)}" for s in ("train", "val", "test"))
        return f"SequenceDataset({self.name!r}, {sizes}, likelihood={self.likelihood!r})"


# -- checks and padding -------------------------------------------------------------------------
def check_sequences(seqs, what: str = "sequences", keys: int | None = KEYS, binary: bool = True) -> list[np.ndarray]:
    """Return ``seqs`` as float32 arrays ``[T_i, D]`` after checking rank, key count, length,
    finiteness and (for ``binary``) 0/1 values; errors name the offending sequence."""
    if len(seqs) == 0:
        raise ValueError(f"{what}: no sequences")
    out = []
    for i, s in enumerate(seqs):
        a = np.asarray(s)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{what}[{i}]: expected a numeric array [T, keys], got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"{what}[{i}]: expected a 2-d array [T, keys], got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{what}[{i}]: empty sequence (0 frames)")
        if keys is not None and a.shape[1] != keys:
            raise ValueError(f"{what}[{i}]: expected {keys} keys per frame, got {a.shape[1]}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"{what}[{i}]: contains non-finite values")
        if binary and not np.isin(a, (0.0, 1.0)).all():
            bad = a[~np.isin(a, (0.0, 1.0))][0]
            raise ValueError(f"{what}[{i}]: piano rolls must be binary (0/1), found {bad:g}")
        out.append(a)
    dims = {a.shape[1] for a in out}
    if len(dims) > 1:
        raise ValueError(f"{what}: sequences disagree on the frame size: {sorted(dims)}")
    return out


def pad_sequences(seqs, what: str = "sequences", keys: int | None = KEYS, binary: bool = True) -> tuple:
    """Sequences ``[T_i, D]`` -> ``(x [N, T_max, D] float32, mask [N, T_max] bool)``, zero padded."""
    seqs = check_sequences(seqs, what, keys, binary)
    lengths = [len(a) for a in seqs]
    x = np.zeros((len(seqs), max(lengths), seqs[0].shape[1]), dtype=np.float32)
    for i, a in enumerate(seqs):
        x[i, :len(a)] = a
    mask = np.arange(max(lengths))[None, :] < np.array(lengths)[:, None]
    return torch.from_numpy(x).to(torch.get_default_dtype()), torch.from_numpy(mask)


def unpad(x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The real frames of each padded sequence."""
    return [xi[mi] for xi, mi in zip(x, mask)]


def transposed(split: tuple, shifts) -> tuple:
    """Training-data augmentation for piano rolls: every sequence of ``split = (x, mask)``
    moved by each of ``shifts`` semitones (keys), keeping only the copies whose notes all stay
    on the keyboard. Shift 0 is the data itself. Returns ``(x, mask)`` with the copies stacked
    along the first dimension, shift by shift. For a training split only: held-out numbers are
    comparable with the literature only on the untransposed validation and test splits."""
    x, mask = split
    if x.dim() != 3:
        raise ValueError(f"transposed expects x of shape [N, T, keys], got {tuple(x.shape)}")
    shifts = [int(k) for k in shifts]
    if not shifts:
        raise ValueError("transposed needs at least one shift")
    keys = x.shape[-1]
    used = x.abs().sum(1) > 0                                    # [N, keys]: keys each sequence plays
    idx = torch.arange(keys, device=x.device)
    low = torch.where(used, idx, keys).min(-1).values
    high = torch.where(used, idx, -1).max(-1).values
    xs, masks = [], []
    for k in shifts:
        fits = (low + k >= 0) & (high + k < keys)                # silent sequences always fit
        if fits.any():
            xs.append(torch.roll(x[fits], k, dims=-1))           # no note wraps: all stay on the keyboard
            masks.append(mask[fits])
    return torch.cat(xs), torch.cat(masks)


def notes_to_roll(frames, what: str = "sequence") -> np.ndarray:
    """A sequence of frames, each an iterable of MIDI note numbers (21..108), as an 88-key roll."""
    roll = np.zeros((len(frames), KEYS), dtype=np.float32)
    for t, notes in enumerate(frames):
        for n in notes:
            if float(n) != int(n) or not LOWEST_NOTE <= int(n) < LOWEST_NOTE + KEYS:
                raise ValueError(f"{what}, frame {t}: note {n!r} is not a piano key (MIDI {LOWEST_NOTE}..{LOWEST_NOTE + KEYS - 1})")
            roll[t, int(n) - LOWEST_NOTE] = 1.0
    return roll


def _dataset(name, splits: dict, likelihood="bernoulli", binary=True, keys=KEYS, **info) -> SequenceDataset:
    padded = {s: pad_sequences(seqs, f"{name} {s}", keys, binary) for s, seqs in splits.items()}
    return SequenceDataset(name, padded["train"], padded["val"], padded["test"], likelihood, info)


# -- files --------------------------------------------------------------------------------------
MAT_KEYS = {"train": "traindata", "val": "validdata", "test": "testdata"}
PICKLE_KEYS = {"train": "train", "val": "valid", "test": "test"}


def load_polyphonic(path, name: str | None = None) -> SequenceDataset:
    """Load a Boulanger-Lewandowski polyphonic music file (``.mat`` or ``.pickle``/``.pkl``)
    with its own train/valid/test split."""
    path = existing_file(path, "polyphonic music file")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: a polyphonic music file must end in one of {', '.join(READERS)}")
    with reading(path, reader.kind, POLYPHONIC_HINT):
        return _dataset(name or path.stem, reader.read(path), source=str(path))


def load_jsb(path: str | None = None) -> SequenceDataset:
    """JSB Chorales (229/76/77 pieces, 88 keys): ``load("jsb:PATH/JSB_Chorales.mat")``."""
    if not path:
        raise ValueError("the jsb dataset needs a file: jsb:PATH/JSB_Chorales.mat (or .pickle); "
                         "'chorales' builds Bach chorales offline from music21 instead")
    return load_polyphonic(path, name="jsb")


POLYPHONIC_HINT = ("expected a Boulanger-Lewandowski polyphonic music file such as JSB_Chorales.mat "
                   "(train/valid/test piano rolls); download or copy it again")


def _read_mat(path: Path) -> dict:
    # scipy.io takes ~0.25 s to import: only when a .mat file is read
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    # scipy reports a foreign or truncated file as MatReadError or ValueError ("Unknown mat
    # file type"), MATLAB v7.3 (HDF5) as NotImplementedError: all mean "not a .mat it reads"
    with reading(path, "MATLAB .mat file", POLYPHONIC_HINT, (MatReadError, ValueError, NotImplementedError)):
        data = loadmat(path)
    missing = [k for k in MAT_KEYS.values() if k not in data]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}; expected {list(MAT_KEYS.values())}")
    return {split: list(np.asarray(data[key]).ravel()) for split, key in MAT_KEYS.items()}


class _PlainUnpickler(pickle.Unpickler):
    """Builds only lists, dicts, tuples, sets, ints, floats and strings: a pickle that names
    any other class is refused before anything is constructed."""

    allowed = {"list", "dict", "tuple", "int", "set", "float", "str"}

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in self.allowed:
            return getattr(builtins, name)
        # ValueError, not UnpicklingError: a refusal is a bad-data report like any other
        raise ValueError(f"refusing to load {module}.{name} (nothing was run): a polyphonic music pickle "
                         "holds only lists of MIDI note numbers")


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        data = _PlainUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    if not isinstance(data, dict) or any(k not in data for k in PICKLE_KEYS.values()):
        raise ValueError(f"{path}: expected a dict with keys {list(PICKLE_KEYS.values())}")
    return {split: [notes_to_roll(seq, f"{path.name} {key}[{i}]") for i, seq in enumerate(data[key])]
            for split, key in PICKLE_KEYS.items()}


@dataclass(frozen=True)
class _Reader:
    """How to read one kind of polyphonic file: ``read(path) -> {split: [roll, ...]}``, and
    the file kind that error messages name."""

    read: object
    kind: str


_MAT = _Reader(_read_mat, "MATLAB .mat file")
_PICKLE = _Reader(_read_pickle, "polyphonic music pickle")
READERS = {".mat": _MAT, ".pickle": _PICKLE, ".pkl": _PICKLE}


# -- Bach chorales from music21 -----------------------------------------------------------------
CHORALE_SPLIT = (0.6, 0.2, 0.2)


def cache_dir() -> Path:
    """``$PPGEN_CACHE``, else ``$XDG_CACHE_HOME/ppgen``, else ``~/.cache/ppgen``."""
    if os.environ.get("PPGEN_CACHE"):
        return Path(os.environ["PPGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ppgen"


def load_chorales(cache: str | None = None, rebuild: bool = False) -> SequenceDataset:
    """Bach chorales from the music21 corpus as 88-key quarter-note piano rolls, split 60/20/20
    by a fixed seeded permutation of the sorted corpus paths. Built once (needs music21:
    ``pip install 'ppgen[music]'``) and cached as ``chorales.npz`` in :func:`cache_dir`."""
    path = Path(cache or cache_dir()) / "chorales.npz"
    if rebuild or not path.is_file():
        splits = build_chorale_rolls()
        _save_splits(path, splits)
    return _dataset("chorales", _load_splits(path), source="music21 corpus", cache=str(path))


def build_chorale_rolls(seed: int = 0) -> dict:
    try:
        from music21 import corpus
    except ImportError:
        raise ImportError("the 'chorales' dataset is built from the music21 corpus: pip install 'ppgen[music]' "
                          "(or use jsb:PATH with the JSB_Chorales.mat file)") from None
    rolls = []
    for p in sorted(str(p) for p in corpus.getComposer("bach")):
        score = corpus.parse(p)
        if len(score.parts) != 4:  # four-part chorales only
            continue
        roll = score_to_roll(score)
        if roll is not None and roll.any():
            rolls.append(roll)
    if not rolls:
        raise RuntimeError("music21's corpus gave no four-part Bach chorales")
    order = np.random.default_rng(seed).permutation(len(rolls))
    n_train, n_val = int(CHORALE_SPLIT[0] * len(rolls)), int(CHORALE_SPLIT[1] * len(rolls))
    parts = np.split(order, [n_train, n_train + n_val])
    return {s: [rolls[i] for i in idx] for s, idx in zip(("train", "val", "test"), parts)}


def score_to_roll(score) -> np.ndarray | None:
    """A music21 score as a quarter-note piano roll: frame q holds the keys sounding at beat q."""
    length = int(np.ceil(float(score.highestTime)))
    if length == 0:
        return None
    roll = np.zeros((length, KEYS), dtype=np.float32)
    for n in score.flatten().notes:
        start, end = float(n.offset), float(n.offset + n.quarterLength)
        beats = np.arange(int(np.ceil(start)), int(np.ceil(end)))
        for pitch in n.pitches:
            key = pitch.midi - LOWEST_NOTE
            if 0 <= key < KEYS:
                roll[beats[beats < length], key] = 1.0
    return roll


def _save_splits(path: Path, splits: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for s, seqs in splits.items():
        arrays[f"{s}_frames"] = np.concatenate(seqs).astype(np.uint8)
        arrays[f"{s}_lengths"] = np.array([len(a) for a in seqs])
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def _load_splits(path: Path) -> dict:
    with reading(path, "chorales cache", "delete it (or pass rebuild=True) to build it again",
                 (KeyError,)), np.load(path, allow_pickle=False) as data:
        return {s: np.split(data[f"{s}_frames"], np.cumsum(data[f"{s}_lengths"])[:-1])
                for s in ("train", "val", "test")}


# -- synthetic ----------------------------------------------------------------------------------
def load_synthetic(kind: str = "binary", n: int = 120, T: int = 32, x_dim: int | None = None,
                   seed: int = 0) -> SequenceDataset:
    """Small sequence sets from known generative processes, split 60/20/20, lengths T/2..T.

    ``binary``: piano-roll-like frames from a hidden Markov chain over 6 chords; each state
    sounds its chord's keys with probability 0.9 and any other key with 0.01 (x_dim 88).
    ``real``: a 2-d rotating linear dynamical system seen through a random linear map plus
    noise (x_dim 8); the Normal likelihood suits it."""
    if kind not in SYNTHETIC:
        raise ValueError(f"unknown synthetic kind {kind!r}; choose one of: {', '.join(SYNTHETIC)}")
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, T // 2), T + 1, size=n)
    seqs, likelihood = SYNTHETIC[kind](rng, lengths, x_dim)
    cut = np.split(np.arange(n), [int(0.6 * n), int(0.8 * n)])
    splits = {s: [seqs[i] for i in idx] for s, idx in zip(("train", "val", "test"), cut)}
    return _dataset(f"synthetic-{kind}", splits, likelihood, binary=kind == "binary", keys=None, seed=seed)


def _hmm_rolls(rng, lengths, x_dim):
    x_dim = x_dim or KEYS
    states = 6
    chords = [rng.choice(x_dim, size=4, replace=False) for _ in range(states)]
    probs = np.full((states, x_dim), 0.01)
    for s, keys in enumerate(chords):
        probs[s, keys] = 0.9
    trans = np.full((states, states), 0.1 / (states - 1)) + np.eye(states) * (0.9 - 0.1 / (states - 1))
    seqs = []
    for L in lengths:
        s = rng.integers(states)
        path = []
        for _ in range(L):
            path.append(s)
            s = rng.choice(states, p=trans[s])
        seqs.append((rng.random((L, x_dim)) < probs[path]).astype(np.float32))
    return seqs, "bernoulli"


def _lds_sequences(rng, lengths, x_dim):
    x_dim = x_dim or 8
    angle = 0.3
    A = 0.98 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    C = rng.normal(size=(x_dim, 2))
    seqs = []
    for L in lengths:
        z = rng.normal(size=2)
        xs = []
        for _ in range(L):
            z = A @ z + 0.1 * rng.normal(size=2)
            xs.append(C @ z + 0.1 * rng.normal(size=x_dim))
        seqs.append(np.array(xs, dtype=np.float32))
    return seqs, "normal"


SYNTHETIC = {"binary": _hmm_rolls, "real": _lds_sequences}
