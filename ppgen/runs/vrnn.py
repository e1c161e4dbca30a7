"""The VRNN as a run: build from a config, evaluate per frame, draw piano rolls, write MIDI."""
from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from ..data.polyphonic import KEYS, SequenceDataset, transposed
from ..evaluate.sequences import continuation_log_likelihood, continue_sequences, sequence_metrics, elbo_per_frame
from ..guides import GUIDES
from ..models.vrnn import VRNN
from ..priors import STEP_PRIORS
from ..figures.piano_rolls import MAX_ROLLS, plot_continuations, plot_piano_rolls
from ..data.midi import write_midi
from .pair import pair_family

DEFAULTS = {"z_dim": 16, "hidden": 128, "rnn": "gru", "prior": "learned", "guide": "vrnn_smoothing",
            "likelihood": None, "dropout": 0.0}
VRNN_GUIDES = ("vrnn_filtering", "vrnn_smoothing")
#: importance draws of the evaluation that ends ``ppgen train``: K = 1000 over JSB's test split
#: takes ~100 s on 2 cores, K = 200 ~14 s for an estimate within 0.02 nats/frame of it
#: (BENCHMARKS.md, "Evaluation cost"); ``ppgen eval --iwae-k 1000`` gives the paper-grade number
TRAIN_IWAE_K = 200


def load_dataset(spec: str) -> SequenceDataset:
    """A sequence dataset: ``jsb:PATH``, ``chorales``, ``synthetic[:binary|real]`` or a polyphonic file."""
    dataset = data_mod.load(spec)
    if not isinstance(dataset, SequenceDataset):
        raise ValueError(f"the VRNN needs sequence data (jsb:PATH, chorales, synthetic); {spec!r} is not")
    return dataset


def training_split(config: dict, dataset) -> tuple:
    """The data ``fit`` trains on: the train split, plus its copies transposed by -N..N
    semitones when ``config["transpose"]`` = N > 0 (piano rolls only). Validation and test
    stay untransposed."""
    n = int(config.get("transpose") or 0)
    if n < 0:
        raise ValueError(f"transpose must be a number of semitones >= 0, got {n}")
    if n and (dataset.likelihood != "bernoulli" or dataset.x_dim != KEYS):
        raise ValueError(f"transpose needs {KEYS}-key piano rolls; {dataset.name!r} has {dataset.x_dim} "
                         f"{dataset.likelihood} dimensions")
    return transposed(dataset.train, range(-n, n + 1)) if n else dataset.train


def build(config: dict, dataset) -> tuple:
    """(model, guide) from a run config: ``z_dim``, ``hidden``, ``rnn`` (gru|lstm), ``prior``
    (learned|standard), ``guide`` (vrnn_filtering|vrnn_smoothing), ``likelihood``, ``dropout``."""
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS and v is not None}}
    if cfg["prior"] not in STEP_PRIORS:
        raise ValueError(f"unknown VRNN prior {cfg['prior']!r}; choose one of: {', '.join(STEP_PRIORS)}")
    if cfg["guide"] not in VRNN_GUIDES:
        raise ValueError(f"unknown VRNN guide {cfg['guide']!r}; choose one of: {', '.join(VRNN_GUIDES)}")
    kwargs = {k: cfg[k] for k in ("z_dim", "hidden", "rnn", "prior", "dropout")}
    if cfg["likelihood"] is not None:
        kwargs["likelihood"] = cfg["likelihood"]
    model = VRNN.for_data(dataset, **kwargs)
    return model, GUIDES[cfg["guide"]].for_model(model)


def metrics(model, guide, dataset, k: int = 500, progress: bool = False) -> dict:
    """Per-frame test ELBO and IWAE (k draws) log-likelihoods, plus the validation ELBO
    (``progress``: a bar for the importance draws)."""
    return {**sequence_metrics(model, guide, dataset.test, k=k, progress=progress),
            "val_elbo_per_frame_nats": elbo_per_frame(model, guide, dataset.val)}


def save_figures(model, guide, dataset, run_dir) -> list[Path]:
    """run_dir/samples.png (generated piano rolls) and run_dir/continuation.png (a test piece's
    opening, sampled continuations and the true one)."""
    run_dir = Path(run_dir)
    paths = [sample(model, 4, run_dir / "samples.png", length=64, midi=False)["figure"]]
    prefix = min(16, int(dataset.test[1].sum(-1).max()) // 2)
    out = continue_run(model, guide, dataset, prefix, 32, 3, run_dir / "continuation.png", midi=False, k=0)
    return paths + [out["figure"]]


def sample(model, n: int, out_path, *, dataset=None, length: int | None = None, midi: bool = True) -> dict:
    """``n`` generated sequences of ``length`` frames (default 64): a figure at ``out_path``
    (PNG) and, for piano rolls, ``<stem>_<i>.mid`` beside it."""
    T = length or 64
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rolls = model.sample(n, T).cpu()
    fig = plot_piano_rolls(rolls, [f"sample {i + 1}" for i in range(n)])
    fig.savefig(out_path, dpi=100)
    files = [write_midi(r, path) for r, path in zip(rolls, midi_paths(out_path, n))] \
        if midi and model.x_dim == KEYS else []
    return {"figure": out_path, "midi": files}


def continue_run(model, guide, dataset, prefix_frames: int, steps: int, num: int, out_path, *,
                 piece: int | None = None, midi: bool = True, k: int = 100) -> dict:
    """Continue a test piece after its first ``prefix_frames`` frames: ``num`` sampled
    continuations of ``steps`` frames, drawn with the true continuation (figure at
    ``out_path``, MIDI files beside it), and the per-frame log-likelihood of the true
    continuations of every test piece (``k`` importance draws; ``k=0`` skips it)."""
    x, mask = dataset.test
    lengths = mask.sum(-1)
    if piece is None:
        candidates = (lengths >= prefix_frames + 1).nonzero().flatten()
        if len(candidates) == 0:
            raise ValueError(f"no test sequence is longer than {prefix_frames} frames")
        piece = int(candidates[0])
    elif not 0 <= piece < len(lengths):
        raise ValueError(f"piece {piece} does not exist: the test split has {len(lengths)} sequences (0 to "
                         f"{len(lengths) - 1})")
    elif lengths[piece] < prefix_frames + 1:
        raise ValueError(f"test sequence {piece} has {int(lengths[piece])} frames, not more than the prefix of "
                         f"{prefix_frames}; choose a shorter --prefix or another --piece")
    xp, mp = x[piece:piece + 1, :prefix_frames], mask[piece:piece + 1, :prefix_frames]
    conts = continue_sequences(model, guide, xp, mp, steps, num_continuations=num)[:, 0].cpu()
    truth = x[piece, prefix_frames:prefix_frames + steps][mask[piece, prefix_frames:prefix_frames + steps]].cpu()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    plot_continuations(xp[0].cpu(), conts, truth if len(truth) else None).savefig(out_path, dpi=100)
    files = []
    if midi and model.x_dim == KEYS:
        for c, path in zip(conts, midi_paths(out_path, num)):
            files.append(write_midi(torch.cat([xp[0].cpu(), c]), path))
    result = {"figure": out_path, "midi": files, "piece": piece, "prefix_frames": prefix_frames, "steps": steps}
    if k:
        result["continuation_log_lik_per_frame_nats"] = continuation_log_likelihood(
            model, guide, x, mask, prefix_frames, steps, k=k)
    return result


def midi_paths(out_path, n: int) -> list[Path]:
    """The MIDI files written beside the figure ``out_path``: ``<stem>_1.mid`` to ``<stem>_<n>.mid``."""
    out_path = Path(out_path)
    return [out_path.with_name(f"{out_path.stem}_{i + 1}.mid") for i in range(n)]


def outputs(out_path, n: int, dataset) -> list[Path]:
    """Every file :func:`sample` or :func:`continue_run` with ``n`` draws writes: the figure
    and, for piano rolls, the MIDI files beside it."""
    return [Path(out_path), *(midi_paths(out_path, n) if dataset.x_dim == KEYS else [])]


def sample_files(model, n: int, out_path, dataset=None, length: int | None = None) -> list[Path]:
    """:func:`sample`'s figure and MIDI files."""
    result = sample(model, n, out_path, dataset=dataset, length=length)
    return [result["figure"], *result["midi"]]


VRNN_FAMILY = pair_family("vrnn", defaults={**DEFAULTS, "transpose": 0}, load_data=load_dataset, build=build,
                          metrics=metrics, figures=save_figures, sample=sample_files, priors=STEP_PRIORS,
                          guides=VRNN_GUIDES, training_split=training_split, continue_run=continue_run,
                          train_iwae_k=TRAIN_IWAE_K, outputs=outputs, max_samples=MAX_ROLLS)
