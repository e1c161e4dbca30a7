"""The ``ppgen`` command line: train, eval, sample (and the commands later issues add).

Choices are read from the registries, so ``--help`` always lists what exists. Every failure
prints one line that names the problem and exits non-zero: status 2 for errors a user can fix
(unknown names, missing or broken files, incompatible choices, bad data, folders that cannot
be written, a run folder in use by another process), 1 for anything unexpected, 130 for
Ctrl-C and 143 for SIGTERM (what schedulers and container runtimes send), both of which say
where the last checkpoint is and how to resume. ``--debug`` or ``PPGEN_DEBUG=1`` shows the
traceback instead. A command that writes into a run folder holds its lock
(:mod:`ppgen.runs.lock`) while it runs.

Under torchrun (``torchrun --nproc-per-node=N -m ppgen train ...``) every process runs the
command (:mod:`ppgen.infer.distributed`); rank 0 prints the metrics. A failure that stops
every process alike (a non-finite loss anywhere) is reported once, by rank 0; an error of one
process names its rank; when torchrun stops the processes because one of them died (SIGTERM),
or a process loses its peers, each says where the last checkpoint is and how to resume (a
SIGTERM, which torchrun also forwards when it is itself stopped, is reported once, by rank 0).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import torch

from . import data, likelihoods
from .infer import distributed
from .infer.checkpoint import load_checkpoint
from .infer.loop import NonFiniteLossError
from .infer.objectives import ELBOS
from .infer.precision import PRECISIONS
from .figures.images import MAX_IMAGES
from .figures.piano_rolls import MAX_ROLLS
from .runs import FAMILIES, family
from .runs.files import check_output_files, read_config
from .runs.lock import RunFolderInUse, hold


def _registries() -> str:
    width = max(map(len, FAMILIES))
    models = "\n".join(f"  {name:<{width}}  {fam.accepts()}" for name, fam in FAMILIES.items())
    return (
        f"models, with the priors and guides each takes:\n{models}\n"
        f"elbos:    {', '.join(ELBOS)}\n"
        f"datasets: {', '.join(data.DATASETS)}, or a path (IDX directory/file, .npy, .npz)"
    )


def _checked(kind, test, what: str):
    """An argparse type: ``kind`` (int or float) that must pass ``test`` (said as ``what``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = f"{what} {kind.__name__}"
    return parse


POSITIVE = _checked(int, lambda v: v >= 1, "a positive integer (>= 1)")
COUNT = _checked(int, lambda v: v >= 0, "a non-negative integer")
RATE = _checked(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
WEIGHT = _checked(float, lambda v: v >= 0 and math.isfinite(v), "a non-negative number")
FRACTION = _checked(float, lambda v: 0 <= v < 1, "in [0, 1)")


def SIZES(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers (``32,16``)."""
    return [POSITIVE(part) for part in text.split(",")]


SIZES.__name__ = "comma-separated positive integers"


class Parser(argparse.ArgumentParser):
    """argparse with the one-line errors of the rest of the CLI (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog="ppgen", description="Deep generative models as Pyro model/guide pairs.",
                                     epilog=_registries(), formatter_class=fmt)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (also: environment variable PPGEN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write a run directory", epilog=_registries(), formatter_class=fmt,
                       description="Train a model and write a run directory. A setting not given takes the "
                                   "model family's default (ppgen.runs.FAMILIES[model].defaults). Started by "
                                   "torchrun (torchrun --nproc-per-node=N -m ppgen train ...), it trains "
                                   "data-parallel: --batch-size is then the global batch (README, Scaling out).")
    t.add_argument("model", help="model name: " + ", ".join(FAMILIES))
    t.add_argument("--data", default="digits", help="dataset name or path (default: digits)")
    t.add_argument("--prior", default=None, help="prior name, one the model takes (default: the model's own)")
    t.add_argument("--guide", default=None, help="guide name, one the model takes (default: the model's own)")
    t.add_argument("--elbo", default=None, help="objective: " + ", ".join(ELBOS) + " (default: the family's)")
    t.add_argument("--particles", "--num-particles", type=POSITIVE, default=None, dest="num_particles",
                   help="samples per datapoint (K for iwae)")
    t.add_argument("--likelihood", default=None,
                   help="p(x|z): " + ", ".join(likelihoods.LIKELIHOODS) + " (default: the data's)")
    t.add_argument("--z-dim", type=POSITIVE, default=None, help="latent size (default: the model family's, 16 for the VAEs)")
    t.add_argument("--hidden", type=POSITIVE, default=None, help="hidden units (default: the model family's, 256 for the VAEs)")
    t.add_argument("--epochs", type=POSITIVE, default=None, help="epochs (default: the family's; 1000 for the VAEs, an upper bound for early stopping)")
    t.add_argument("--batch-size", type=POSITIVE, default=None, help="default: the family's (128 for the Pyro models)")
    t.add_argument("--lr", type=RATE, default=None, help="default: the family's (1e-3 for the Pyro models)")
    t.add_argument("--beta", type=WEIGHT, default=None, help="KL weight")
    t.add_argument("--anneal-epochs", type=WEIGHT, default=None, help="linear KL annealing from 0 to beta")
    t.add_argument("--clip-norm", type=RATE, default=None)
    t.add_argument("--precision", choices=list(PRECISIONS), default=None,
                   help="fp32 (default) or bf16: the networks under autocast in bfloat16, densities and the ELBO in "
                        "float32 (CPU, or a GPU with bfloat16: compute capability 8.0+)")
    t.add_argument("--lr-schedule", default=None, help="constant, cosine or step")
    t.add_argument("--patience", type=COUNT, default=None,
                   help="early stopping after this many epochs without a better validation ELBO (default: 100 for the VAEs, off otherwise)")
    t.add_argument("--weight-decay", type=WEIGHT, default=None,
                   help="Adam L2 penalty (default: the model family's; 0.03 for the VAE family, tuned on digits)")
    t.add_argument("--iwae-k", type=POSITIVE, default=None,
                   help="importance samples for the test log-likelihood at the end of training (default: the family's, recorded as iwae_k in metrics.json; ppgen eval --iwae-k 1000 for the paper-grade number)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--seed", type=COUNT, default=None)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--spike-gradient", choices=["score", "straight_through"], default=None,
                   help="sparse_vae, spike_and_slab guide: gradient w.r.t. the spike probabilities; score (unbiased, "
                        "elbo trace only; the default there) or straight_through (biased; the default otherwise)")
    c = t.add_argument_group("conv_vae, gan, vaegan and deconv (the model's default when not given)")
    c.add_argument("--width", type=POSITIVE, default=None, help="conv channels at full resolution")
    c.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="spectral norm in the discriminator (default: on for gan, off for vaegan)")
    c.add_argument("--gradient-penalty", type=WEIGHT, default=None, help="R1 penalty weight on the discriminator")
    c.add_argument("--adversarial-weight", type=WEIGHT, default=None, help="vaegan: weight of -log D(x~) in the loss")
    c.add_argument("--feature-weight", type=WEIGHT, default=None,
                   help="vaegan: weight of the discriminator-feature reconstruction term (Larsen et al.)")
    c.add_argument("--task", default=None, help="deconv: sr2, sr4 or denoise")
    h = t.add_argument_group("hvae")
    h.add_argument("--z-dims", type=SIZES, default=None,
                   help="latent sizes of the layers, bottom (next to x) to top, e.g. 32,16 (the default)")
    v = t.add_argument_group("vrnn")
    v.add_argument("--rnn", default=None, help="recurrence: gru or lstm (default gru)")
    v.add_argument("--dropout", type=FRACTION, default=None,
                   help="dropout on phi_x(x_t) and the decoder input in training (default 0)")
    v.add_argument("--transpose", type=COUNT, default=None,
                   help="augment the training pieces with their copies moved by -N..N semitones (default 0)")

    e = sub.add_parser("eval", help="recompute a run's metrics from its checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--iwae-k", type=POSITIVE, default=1000, help="importance samples for the test log-likelihood")
    e.add_argument("--device", default="auto")
    e.add_argument("--seed", type=COUNT, default=0, help="seed of the evaluation (recorded as eval_seed)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("sample", help="draw samples from a trained run into a figure")
    s.add_argument("run_dir")
    s.add_argument("-n", type=POSITIVE, default=64,
                   help=f"samples to draw (at most what one figure shows legibly: {MAX_IMAGES} images, {MAX_ROLLS} sequences)")
    s.add_argument("--out", required=True, help="output PNG (sequence models: MIDI files beside it)")
    s.add_argument("--force", action="store_true", help="replace output files that exist")
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=COUNT, default=0)
    s.add_argument("--length", type=POSITIVE, default=None, help="frames per sequence (sequence models; default 64)")

    k = sub.add_parser("continue", help="continue real test sequences from their first frames (sequence models)")
    k.add_argument("run_dir")
    k.add_argument("--prefix", type=POSITIVE, default=16, help="frames of the real sequence to condition on")
    k.add_argument("--steps", type=POSITIVE, default=32, help="frames to generate after the prefix")
    k.add_argument("-n", type=POSITIVE, default=4, help=f"continuations to draw (at most {MAX_ROLLS})")
    k.add_argument("--piece", type=COUNT, default=None, help="test sequence index (default: the first long enough)")
    k.add_argument("--iwae-k", type=POSITIVE, default=100, help="importance draws for the true continuation's log-likelihood")
    k.add_argument("--out", required=True, help="output PNG (MIDI files are written beside it)")
    k.add_argument("--force", action="store_true", help="replace output files that exist")
    k.add_argument("--device", default="auto")
    k.add_argument("--seed", type=COUNT, default=0)
    r = sub.add_parser("report", help="write DIR/report.html (posterior diagnostics) and DIR/posterior.nc")
    r.add_argument("run_dir")
    r.add_argument("--samples", type=POSITIVE, default=None, dest="num_samples",
                   help="guide draws kept per datapoint (default 100; fewer for long sequences)")
    r.add_argument("--importance-samples", type=POSITIVE, default=None,
                   help="draws per datapoint for k-hat and log p(x) (default: the run's iwae_k in metrics.json, else 1000)")
    r.add_argument("--max-obs", type=POSITIVE, default=None, help="use only the first N test datapoints")
    r.add_argument("--device", default="cpu")
    r.add_argument("--seed", type=COUNT, default=0)

    c = sub.add_parser("compare", help="compare runs' test log p(x) datapoint by datapoint (from their ppgen report)")
    c.add_argument("run_dirs", nargs="+", metavar="DIR", help="run directories with a posterior.nc (ppgen report DIR)")

    q = sub.add_parser("quality", help="compare runs on one dataset by sample quality (table and figure)")
    q.add_argument("run_dirs", nargs="+", metavar="DIR")
    q.add_argument("--data", required=True, help="the dataset every run was trained on")
    q.add_argument("--out", required=True, help="Markdown table FILE; FILE.json and FILE.png are written beside it")
    q.add_argument("--force", action="store_true", help="replace output files that exist")
    q.add_argument("-n", type=POSITIVE, default=None, dest="n_samples", help="samples per run (default: test split size)")
    q.add_argument("--device", default="cpu")
    q.add_argument("--seed", type=COUNT, default=0)
    return parser


def cmd_train(args) -> None:
    from .runs import train_run

    # unset flags stay None: the family's defaults fill them (ppgen.runs.Family.settings)
    config = {k: getattr(args, k) for k in (
        "model", "data", "prior", "guide", "elbo", "num_particles", "z_dim", "hidden", "epochs", "batch_size",
        "lr", "beta", "anneal_epochs", "clip_norm", "lr_schedule", "patience", "weight_decay", "seed", "width",
        "spectral_norm", "gradient_penalty", "adversarial_weight", "feature_weight", "task", "rnn", "dropout",
        "transpose", "likelihood", "precision", "spike_gradient", "z_dims")}
    metrics = train_run(config, args.out, resume=args.resume, device=args.device, progress=not args.quiet,
                        iwae_k=args.iwae_k)
    if distributed.is_main():
        _print_metrics(metrics, args.out)


def cmd_eval(args) -> None:
    from .runs import eval_run

    metrics = eval_run(args.run_dir, args.device, args.iwae_k, seed=args.seed, progress=not args.quiet)
    if distributed.is_main():
        _print_metrics(metrics, args.run_dir)


def cmd_sample(args) -> None:
    from .runs import open_run

    _drawable(args.run_dir, args.n)
    check_output_files([args.out], args.force)
    torch.manual_seed(args.seed)
    with _writing_into(args.run_dir, args.out):
        run = open_run(args.run_dir, args.device)
        check_output_files(run.family.outputs(args.out, args.n, run.dataset), args.force)
        for path in run.family.sample(run.parts, args.n, args.out, run.dataset, run.config, args.length):
            print(f"wrote {path}")


def _drawable(run_dir, n: int, sequences_only: bool = False):
    """The run's family, when one figure of it shows ``n`` draws legibly (and, with
    ``sequences_only``, it continues sequences); raises ``ValueError`` naming the limit
    otherwise. Read from config.json alone, before any loading or computing: a figure of
    100,000 images would be a blank PNG, not an answer."""
    fam = family(read_config(run_dir)["model"])
    if sequences_only and fam.continue_run is None:
        raise ValueError(f"'continue' needs a sequence model; {fam.name!r} is not one")
    if n > fam.max_samples:
        raise ValueError(f"-n {n} is more than one figure of {fam.name} shows legibly; the most is {fam.max_samples}")
    return fam


def _writing_into(run_dir, out):
    """The run folder's lock (:mod:`ppgen.runs.lock`) when ``out`` lies inside it; otherwise
    nothing: a command that only reads a run reads files that are replaced atomically, so it
    may look at a run while it trains."""
    run_dir = Path(run_dir)
    inside = run_dir.is_dir() and Path(out).resolve().is_relative_to(run_dir.resolve())
    return hold(run_dir) if inside else contextlib.nullcontext()


def cmd_continue(args) -> None:
    from .runs import open_run

    _drawable(args.run_dir, args.n, sequences_only=True)
    check_output_files([args.out], args.force)
    torch.manual_seed(args.seed)
    with _writing_into(args.run_dir, args.out):
        run = open_run(args.run_dir, args.device)
        check_output_files(run.family.outputs(args.out, args.n, run.dataset), args.force)
        result = run.family.continue_run(run.parts, run.dataset, args.prefix, args.steps, args.n, args.out,
                                         piece=args.piece, k=args.iwae_k)
    for key, value in result.items():
        if key != "midi":
            print(f"{key}: {value}")
    for path in result["midi"]:
        print(f"wrote {path}")


def cmd_report(args) -> None:
    from .runs.report import report

    out = report(args.run_dir, num_samples=args.num_samples, importance_samples=args.importance_samples,
                 max_obs=args.max_obs, device=args.device, seed=args.seed)
    print(f"wrote {out.path} and {out.posterior_path} in {out.seconds:.0f} s")


def cmd_compare(args) -> None:
    from .diagnostics import compare

    table = compare(*args.run_dirs)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print("elpd: sum of the importance-sampled log p(x_i) over the test datapoints (nats); elpd_diff and dse: the "
          "difference to the best run and its standard error from the paired per-datapoint differences")


def cmd_quality(args) -> None:
    from .runs.compare import comparison_paths, compare_runs, markdown_table, write_comparison

    check_output_files(comparison_paths(args.out).values(), args.force)
    result = compare_runs(args.run_dirs, args.data, n_samples=args.n_samples, device=args.device, seed=args.seed)
    paths = write_comparison(result, args.out)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


HANDLERS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "continue": cmd_continue,
            "report": cmd_report, "compare": cmd_compare, "quality": cmd_quality}

#: errors a user causes and can fix (bad arguments, files, settings): exit status 2; anything
#: else is a bug or an environment failure: exit status 1. Both print one line.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError)


def _print_metrics(metrics: dict, where) -> None:
    width = max(map(len, metrics))
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"run directory: {where}")


def describe(error: BaseException) -> str:
    """One line for an error: its message's first line (a KeyError's bare key said as such);
    an unexpected error also names its type and how to see the traceback."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, KeyError):
        return f"missing entry {line}"
    if isinstance(error, USER_ERRORS):
        return line
    return f"{type(error).__name__}: {line} (unexpected; rerun with --debug for the traceback)"


def interrupted(args, argv: list[str], what: str = "interrupted") -> str:
    """What Ctrl-C (or another stop, said as ``what``) leaves behind: for ``train``, the last
    checkpoint and how to go on."""
    if args.command != "train":
        return what
    checkpoint = Path(args.out) / "checkpoint.pt"
    if not checkpoint.is_file():
        return f"{what} before the first checkpoint; nothing to resume"
    state = load_checkpoint(checkpoint)
    again = argv if "--resume" in argv else [*argv, "--resume"]
    launcher = (f"torchrun --nproc-per-node={os.environ.get('LOCAL_WORLD_SIZE', os.environ['WORLD_SIZE'])} -m "
                if distributed.launched() else "")
    if state.get("finished") or state["epoch"] >= state["config"]["epochs"]:
        return (f"{what} after training finished (epoch {state['epoch']}, checkpoint {checkpoint}); "
                f"finish the evaluation with: {launcher}ppgen {shlex.join(again)}")
    return (f"{what}; the last checkpoint is {checkpoint} (epoch {state['epoch']} of "
            f"{state['config']['epochs']}); resume with: {launcher}ppgen {shlex.join(again)}")


class Terminated(KeyboardInterrupt):
    """SIGTERM: a scheduler, a container runtime or torchrun stops the process. A kind of
    KeyboardInterrupt, so that it unwinds exactly as Ctrl-C does (the checkpoint on disk is
    always whole: it is replaced atomically) and says the same; the exit status is 143."""


def _terminated(signum, frame):
    raise Terminated


def _settle() -> None:
    """The command is ending: a further SIGTERM (torchrun's, sent once any process has failed,
    or a scheduler's second) must not cut short the one line that says why."""
    _on_sigterm(signal.SIG_IGN)


def _on_sigterm(handler):
    """Set the SIGTERM handler (Python allows it in the main thread only: ``main`` called from
    another thread leaves signals alone); return the one it replaces."""
    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, handler)
    return None


def _rank_prefix() -> str:
    return f"[rank {os.environ.get('RANK', '?')}] " if distributed.launched() else ""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PPGEN_DEBUG", "") not in ("", "0")
    # Weight decay pushes the weights of dead units through the subnormal range, where CPU
    # arithmetic is several times slower (BENCHMARKS.md, JSB Chorales); this process
    # is ours, so flush subnormals to zero (where the CPU supports it).
    torch.set_flush_denormal(True)
    previous = _on_sigterm(_terminated)  # SIGTERM ends a command as Ctrl-C does (exit status 143)
    try:
        HANDLERS[args.command](args)
    except KeyboardInterrupt as e:
        _settle()
        if debug:
            raise
        terminated = isinstance(e, Terminated)
        if terminated and distributed.launched():
            # torchrun sends SIGTERM to every process (another one failed, or torchrun was stopped): rank 0 says it
            if os.environ.get("RANK", "0") != "0":
                return 143
            what = "stopped by SIGTERM from the launcher (another process of the run failed, or the launcher was stopped)"
        else:
            what = "stopped by SIGTERM" if terminated else "interrupted"
        print(f"{_rank_prefix()}ppgen {args.command}: {interrupted(args, argv, what)}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as e:  # noqa: BLE001 - every failure ends as one line; --debug shows the traceback
        _settle()
        if debug:
            raise
        cause = distributed.lost_peers(e)
        if cause:  # another process died or was stopped: this one cannot go on
            print(f"{_rank_prefix()}ppgen {args.command}: "
                  f"{interrupted(args, argv, f'lost another process of the run ({cause})')}", file=sys.stderr)
            return 1
        if not (isinstance(e, (NonFiniteLossError, RunFolderInUse)) and distributed.active()
                and not distributed.is_main()):
            # a non-finite loss or a run folder in use stops every process alike: rank 0 says so for all
            print(f"{_rank_prefix()}ppgen {args.command}: error: {describe(e)}", file=sys.stderr)
        return 2 if isinstance(e, USER_ERRORS) else 1
    finally:
        distributed.shutdown()
        if previous is not None:  # main() called in-process (tests, notebooks) leaves the caller's handler
            _on_sigterm(previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
