"""Train a VRNN on JSB Chorales with ppgen.infer.fit (KL annealing) and report test nats per frame.

Anchors (test -ELBO / NLL per frame, lower is better): Pyro's DMM example 6.87 after 5000
epochs; the DMM paper 6.93 (bound) and 6.39 (importance sampled); RNN-NADE 5.19 (exact).
Training runs in chunks of epochs with a checkpoint, so ``--minutes`` bounds the wall time
and ``--resume`` continues a run; early stopping on the validation ELBO keeps the best
weights. Prints one JSON line (our numbers are log-likelihoods; the "-ELBO"/NLL columns are
their negations, for comparison with the literature).

    python benchmarks/vrnn_jsb.py --minutes 90 --checkpoint /tmp/vrnn_jsb.pt
    python benchmarks/vrnn_jsb.py --hidden 128 --z-dim 32 --weight-decay 1e-3 --dropout 0.2 --transpose 3 --minutes 55

``--likelihood autoregressive_bernoulli`` keeps the notes of a frame dependent given z_t and
h_{t-1} (ppgen.nn.made); the default ``bernoulli`` makes them independent, as in the VRNN and
DMM papers, so only rows with that default compare like with like against those anchors.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pyro
import torch

from ppgen.infer.checkpoint import load_checkpoint
from ppgen.data import load
from ppgen.evaluate.sequences import sequence_metrics, elbo_per_frame
from ppgen.guides import GUIDES
from ppgen.infer import fit
from ppgen.models.vrnn import VRNN
from ppgen.runs.vrnn import training_split

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/polyphonic/JSB_Chorales.mat"))
    p.add_argument("--epochs", type=int, default=5000, help="at most this many epochs")
    p.add_argument("--minutes", type=float, default=60.0, help="stop after the chunk that passes this wall time")
    p.add_argument("--chunk", type=int, default=25, help="epochs per fit() call between time checks")
    p.add_argument("--z-dim", type=int, default=16)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rnn", default="gru")
    p.add_argument("--prior", default="learned")
    p.add_argument("--dropout", type=float, default=0.0, help="VRNN dropout on phi_x(x_t) and the decoder input")
    p.add_argument("--likelihood", default="bernoulli",
                   help="p(x_t | z_t, h_{t-1}): bernoulli (keys independent) or autoregressive_bernoulli")
    p.add_argument("--guide", default="vrnn_smoothing")
    p.add_argument("--transpose", type=int, default=0,
                   help="augment the training split with its copies moved by -N..N semitones (0: off)")
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--anneal-epochs", type=float, default=20.0)
    p.add_argument("--clip-norm", type=float, default=10.0)
    p.add_argument("--elbo", default="trace", help="training objective: trace (ELBO) or iwae (K = --particles)")
    p.add_argument("--particles", type=int, default=1)
    p.add_argument("--patience", type=int, default=200)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--iwae-k", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", default="/tmp/ppgen_vrnn_jsb.pt")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Weight decay drives the weights of dead ReLU units towards 0 through the subnormal range,
    # where CPU float arithmetic is many times slower: epochs took ~4x longer after ~50 epochs.
    torch.set_flush_denormal(True)

    data = load(f"jsb:{args.data}")
    train = training_split({"transpose": args.transpose}, data)  # the CLI's --transpose rule
    model = VRNN.for_data(data, z_dim=args.z_dim, hidden=args.hidden, rnn=args.rnn, prior=args.prior,
                         dropout=args.dropout, likelihood=args.likelihood)
    guide = GUIDES[args.guide].for_model(model)
    config = dict(batch_size=args.batch_size, lr=args.lr, anneal_epochs=args.anneal_epochs,
                  clip_norm=args.clip_norm, elbo=args.elbo, num_particles=args.particles, patience=args.patience,
                  weight_decay=args.weight_decay, seed=args.seed)
    t0 = time.perf_counter()
    resume = args.resume and Path(args.checkpoint).is_file()
    epochs = load_checkpoint(args.checkpoint)["epoch"] if resume else 0
    while epochs < args.epochs and time.perf_counter() - t0 < 60 * args.minutes:
        epochs = min(args.epochs, epochs + args.chunk)
        hist = fit(model, guide, train, data.val, epochs=epochs, checkpoint=args.checkpoint, resume=resume,
                   progress=False, **config)
        resume = True
        print(json.dumps({"epoch": hist.epoch[-1], "train_elbo_per_seq": round(hist.train_elbo[-1], 2),
                          "val_elbo_per_seq": round(hist.val_elbo[-1], 2), "best_epoch": hist.best_epoch,
                          "minutes": round((time.perf_counter() - t0) / 60, 1)}), flush=True)
        if hist.stopped_early:
            break
    train_seconds = time.perf_counter() - t0

    # evaluate the best-validation weights kept in the checkpoint (also for --minutes 0 --resume)
    state = load_checkpoint(args.checkpoint)
    weights = state["best"] or state
    model.load_state_dict(weights["model"]), guide.load_state_dict(weights["guide"])
    history = state["history"]
    with pyro.validation_enabled(False):
        val = elbo_per_frame(model, guide, data.val, num_samples=10)
        metrics = sequence_metrics(model, guide, data.test, k=args.iwae_k)
    result = {
        "benchmark": "vrnn_jsb",
        **metrics,
        "test_neg_elbo_per_frame": -metrics["test_elbo_per_frame_nats"],
        "test_nll_iwae_per_frame": -metrics["test_iwae_per_frame_nats"],
        "val_elbo_per_frame_nats": val,
        "epochs": state["epoch"], "best_epoch": history["best_epoch"], "stopped_early": history["stopped_early"],
        "train_minutes_total": round(sum(history["seconds"]) / 60, 1),
        "train_wall_seconds": round(train_seconds, 1),
        "eval_wall_seconds": round(time.perf_counter() - t0 - train_seconds, 1),
        "config": {**config, "z_dim": args.z_dim, "hidden": args.hidden, "rnn": args.rnn, "prior": args.prior,
                   "likelihood": args.likelihood, "dropout": args.dropout, "transpose": args.transpose,
                   "train_sequences": int(train[0].shape[0]),
                   "guide": args.guide},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, "
                   f"pyro {pyro.__version__}",
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
