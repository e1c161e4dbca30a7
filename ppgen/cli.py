"""The ``ppgen`` command line: train, eval, sample (and the commands later issues add).

Choices are read from the registries, so ``--help`` always lists what exists. Errors a user
can fix (unknown names, missing files, incompatible choices, bad data) print one line and
exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

import torch

from . import data, likelihoods
from .infer.objectives import ELBOS
from .runs import FAMILIES


def _registries() -> str:
    width = max(map(len, FAMILIES))
    models = "\n".join(f"  {name:<{width}}  {fam.accepts()}" for name, fam in FAMILIES.items())
    return (
        f"models, with the priors and guides each takes:\n{models}\n"
        f"elbos:    {', '.join(ELBOS)}\n"
        f"datasets: {', '.join(data.DATASETS)}, or a path (IDX directory/file, .npy, .npz)"
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="ppgen", description="Deep generative models as Pyro model/guide pairs.",
                                     epilog=_registries(), formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write a run directory", epilog=_registries(), formatter_class=fmt,
                       description="Train a model and write a run directory. A setting not given takes the "
                                   "model family's default (ppgen.runs.FAMILIES[model].defaults).")
    t.add_argument("model", help="model name: " + ", ".join(FAMILIES))
    t.add_argument("--data", default="digits", help="dataset name or path (default: digits)")
    t.add_argument("--prior", default=None, help="prior name, one the model takes (default: the model's own)")
    t.add_argument("--guide", default=None, help="guide name, one the model takes (default: the model's own)")
    t.add_argument("--elbo", default=None, help="objective: " + ", ".join(ELBOS) + " (default: the family's)")
    t.add_argument("--particles", type=int, default=None, dest="num_particles",
                   help="samples per datapoint (K for iwae)")
    t.add_argument("--likelihood", default=None,
                   help="p(x|z): " + ", ".join(likelihoods.LIKELIHOODS) + " (default: the data's)")
    t.add_argument("--z-dim", type=int, default=None, help="latent size (default: the model family's, 16 for the VAEs)")
    t.add_argument("--hidden", type=int, default=None, help="hidden units (default: the model family's, 256 for the VAEs)")
    t.add_argument("--epochs", type=int, default=None, help="epochs (default: the family's; 1000 for the VAEs, an upper bound for early stopping)")
    t.add_argument("--batch-size", type=int, default=None, help="default: the family's (128 for the Pyro models)")
    t.add_argument("--lr", type=float, default=None, help="default: the family's (1e-3 for the Pyro models)")
    t.add_argument("--beta", type=float, default=None, help="KL weight")
    t.add_argument("--anneal-epochs", type=float, default=None, help="linear KL annealing from 0 to beta")
    t.add_argument("--clip-norm", type=float, default=None)
    t.add_argument("--lr-schedule", default=None, help="constant, cosine or step")
    t.add_argument("--patience", type=int, default=None,
                   help="early stopping after this many epochs without a better validation ELBO (default: 100 for the VAEs, off otherwise)")
    t.add_argument("--weight-decay", type=float, default=None,
                   help="Adam L2 penalty (default: the model family's; 0.03 for the VAE family, tuned on digits)")
    t.add_argument("--iwae-k", type=int, default=1000, help="importance samples for the test log-likelihood")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    c = t.add_argument_group("conv_vae, gan, vaegan and deconv (the model's default when not given)")
    c.add_argument("--width", type=int, default=None, help="conv channels at full resolution")
    c.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="spectral norm in the discriminator (default: on for gan, off for vaegan)")
    c.add_argument("--gradient-penalty", type=float, default=None, help="R1 penalty weight on the discriminator")
    c.add_argument("--adversarial-weight", type=float, default=None, help="vaegan: weight of -log D(x~) in the loss")
    c.add_argument("--feature-weight", type=float, default=None,
                   help="vaegan: weight of the discriminator-feature reconstruction term (Larsen et al.)")
    c.add_argument("--task", default=None, help="deconv: sr2, sr4 or denoise")
    v = t.add_argument_group("vrnn")
    v.add_argument("--rnn", default=None, help="recurrence: gru or lstm (default gru)")
    v.add_argument("--dropout", type=float, default=None,
                   help="dropout on phi_x(x_t) and the decoder input in training (default 0)")
    v.add_argument("--transpose", type=int, default=None,
                   help="augment the training pieces with their copies moved by -N..N semitones (default 0)")

    e = sub.add_parser("eval", help="recompute a run's metrics from its checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--iwae-k", type=int, default=1000)
    e.add_argument("--device", default="auto")

    s = sub.add_parser("sample", help="draw samples from a trained run into a figure")
    s.add_argument("run_dir")
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--out", required=True, help="output PNG")
    s.add_argument("--device", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--length", type=int, default=None, help="frames per sequence (sequence models; default 64)")

    k = sub.add_parser("continue", help="continue real test sequences from their first frames (sequence models)")
    k.add_argument("run_dir")
    k.add_argument("--prefix", type=int, default=16, help="frames of the real sequence to condition on")
    k.add_argument("--steps", type=int, default=32, help="frames to generate after the prefix")
    k.add_argument("-n", type=int, default=4, help="continuations to draw")
    k.add_argument("--piece", type=int, default=None, help="test sequence index (default: the first long enough)")
    k.add_argument("--iwae-k", type=int, default=100, help="importance draws for the true continuation's log-likelihood")
    k.add_argument("--out", required=True, help="output PNG (MIDI files are written beside it)")
    k.add_argument("--device", default="auto")
    k.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report", help="write DIR/report.html (posterior diagnostics) and DIR/posterior.nc")
    r.add_argument("run_dir")
    r.add_argument("--samples", type=int, default=None, dest="num_samples",
                   help="guide draws kept per datapoint (default 100; fewer for long sequences)")
    r.add_argument("--importance-samples", type=int, default=1000, help="draws per datapoint for k-hat and log p(x)")
    r.add_argument("--max-obs", type=int, default=None, help="use only the first N test datapoints")
    r.add_argument("--device", default="cpu")
    r.add_argument("--seed", type=int, default=0)

    q = sub.add_parser("quality", help="compare runs on one dataset by sample quality (table and figure)")
    q.add_argument("run_dirs", nargs="+", metavar="DIR")
    q.add_argument("--data", required=True, help="the dataset every run was trained on")
    q.add_argument("--out", required=True, help="Markdown table FILE; FILE.json and FILE.png are written beside it")
    q.add_argument("-n", type=int, default=None, dest="n_samples", help="samples per run (default: test split size)")
    q.add_argument("--device", default="cpu")
    q.add_argument("--seed", type=int, default=0)
    return parser


def cmd_train(args) -> None:
    from .runs import train_run

    # unset flags stay None: the family's defaults fill them (ppgen.runs.Family.settings)
    config = {k: getattr(args, k) for k in (
        "model", "data", "prior", "guide", "elbo", "num_particles", "z_dim", "hidden", "epochs", "batch_size",
        "lr", "beta", "anneal_epochs", "clip_norm", "lr_schedule", "patience", "weight_decay", "seed", "width",
        "spectral_norm", "gradient_penalty", "adversarial_weight", "feature_weight", "task", "rnn", "dropout",
        "transpose", "likelihood")}
    metrics = train_run(config, args.out, resume=args.resume, device=args.device, progress=not args.quiet,
                        iwae_k=args.iwae_k)
    _print_metrics(metrics, args.out)


def cmd_eval(args) -> None:
    from .runs import eval_run

    _print_metrics(eval_run(args.run_dir, args.device, args.iwae_k), args.run_dir)


def cmd_sample(args) -> None:
    from .runs import open_run

    torch.manual_seed(args.seed)
    run = open_run(args.run_dir, args.device)
    for path in run.family.sample(run.parts, args.n, args.out, run.dataset, run.config, args.length):
        print(f"wrote {path}")


def cmd_continue(args) -> None:
    from .runs import open_run

    torch.manual_seed(args.seed)
    run = open_run(args.run_dir, args.device)
    if run.family.continue_run is None:
        raise ValueError(f"'continue' needs a sequence model; {run.config['model']!r} is not one")
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


def cmd_quality(args) -> None:
    from .runs.compare import compare_runs, markdown_table, write_comparison

    result = compare_runs(args.run_dirs, args.data, n_samples=args.n_samples, device=args.device, seed=args.seed)
    paths = write_comparison(result, args.out)
    print(markdown_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))


HANDLERS = {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "continue": cmd_continue,
            "report": cmd_report, "quality": cmd_quality}


def _print_metrics(metrics: dict, where) -> None:
    width = max(map(len, metrics))
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    print(f"run directory: {where}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Weight decay pushes the weights of dead units through the subnormal range, where CPU
    # arithmetic is several times slower (BENCHMARKS.md, JSB Chorales); this process
    # is ours, so flush subnormals to zero (where the CPU supports it).
    torch.set_flush_denormal(True)
    try:
        HANDLERS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError) as e:
        print(f"ppgen {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
