"""Data-parallel scaling: the same global batch trained by 1 and by 2 processes (torchrun,
gloo, one thread per process), for the conv VAE on sprites and the VRNN on JSB Chorales.

* ``conv_vae`` -- the default ``ppgen train conv_vae`` pair (z 16, width 32, dense 256,
  diagonal-Normal guide, Bernoulli pixels) on the first ``--rows`` sprites, global batch
  ``--batch-size``.
* ``vrnn`` -- the default ``ppgen train vrnn`` pair (GRU, hidden 128, z 16, learned prior,
  smoothing guide) on the 229 JSB training pieces, global batch ``--seq-batch-size``.

Each configuration runs ``fit`` for ``--epochs`` epochs as its own torchrun job
(``--nproc-per-node`` 1 or 2; with 1 process ppgen runs its one-process loop); the first epoch
is warm-up, examples/second is rows per epoch over the median time of the others (rank 0's
clock; every rank takes the same number of steps, in lock-step through the gradient
all-reduce). Speed-up = 2-process over 1-process examples/second. Prints one JSON line with
the machine's load average before and after (other processes on the machine slow both sides).

    python benchmarks/ddp_scaling.py [--epochs 4] [--rows 2048] [--batch-size 128]
        [--seq-batch-size 32] [--jsb ../shared/data/polyphonic/JSB_Chorales.mat]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ppgen import data as data_mod
from ppgen.infer import distributed, fit
from ppgen.runs import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
JSB = ROOT.parent / "shared" / "data" / "polyphonic" / "JSB_Chorales.mat"


def worker(args) -> None:
    """One process of a torchrun job: build the family's default pair and fit it."""
    torch.set_num_threads(1)
    fam = FAMILIES[args.model]
    spec = "sprites" if args.model == "conv_vae" else f"jsb:{args.jsb}"
    dataset = fam.load_data(data_mod.resolve_spec(spec))
    config = fam.settings({"model": args.model, "data": spec})
    torch.manual_seed(0)
    parts = fam.build(config, dataset)
    train = dataset.train[:args.rows] if args.model == "conv_vae" else dataset.train
    batch = args.batch_size if args.model == "conv_vae" else args.seq_batch_size
    history = fit(parts["model"], parts["guide"], train, epochs=args.epochs, batch_size=batch, seed=0,
                  device="cpu", progress=False)
    rows = (train if isinstance(train, torch.Tensor) else train[0]).shape[0]
    if distributed.is_main():
        seconds = statistics.median(history.seconds[1:])
        Path(args.out).write_text(json.dumps({"examples_per_s": rows / seconds, "epoch_s": seconds, "rows": rows,
                                              "global_batch": batch, "processes": distributed.world()}))


def launch(model: str, procs: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
               __file__, "--worker", model, "--out", str(out), "--epochs", str(args.epochs), "--rows", str(args.rows),
               "--batch-size", str(args.batch_size), "--seq-batch-size", str(args.seq_batch_size), "--jsb", str(args.jsb)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=2048, help="sprites training rows for the conv VAE")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch of the conv VAE")
    parser.add_argument("--seq-batch-size", type=int, default=32, help="global batch (pieces) of the VRNN")
    parser.add_argument("--jsb", type=Path, default=JSB)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.model = args.worker
        return worker(args)
    load_before = os.getloadavg()
    result = {"benchmark": "ddp_scaling", "backend": "gloo", "threads_per_process": 1, "epochs": args.epochs}
    for model in ("conv_vae", "vrnn"):
        one, two = launch(model, 1, args), launch(model, 2, args)
        result[model] = {"global_batch": one["global_batch"], "rows": one["rows"],
                         "examples_per_s_1": round(one["examples_per_s"], 1),
                         "examples_per_s_2": round(two["examples_per_s"], 1),
                         "speedup": round(two["examples_per_s"] / one["examples_per_s"], 3)}
    result.update(cores=os.cpu_count(), loadavg_before=[round(v, 2) for v in load_before],
                  loadavg_after=[round(v, 2) for v in os.getloadavg()], torch=torch.__version__,
                  python=platform.python_version())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
