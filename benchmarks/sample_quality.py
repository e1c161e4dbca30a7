"""Does the adversarial term fix the VAE's blur, and what does it cost in coverage and log p(x)?

Trains, on each dataset and with one budget (same epochs, batch size, latent size, conv
width and seed for every model):

  vae         conv VAE, N(0, I) prior, diagonal Normal guide        (ppgen train conv_vae)
  beta_vae    the same with beta = 4 (KL weight)                    (--beta 4)
  sparse_vae  the same with the spike-and-slab prior and guide      (--prior spike_and_slab)
  vaegan      the conv VAE + discriminator, adversarial term        (ppgen train vaegan)
  vaegan_fm   the same + Larsen et al.'s feature reconstruction     (--feature-weight)
  gan         DCGAN with spectral norm, lr 1e-3                     (ppgen train gan --spectral-norm)

then compares them with ``ppgen.runs.compare.compare_runs`` (what ``ppgen quality`` runs): FID,
KID, precision/recall/density/coverage on the features of a classifier trained on the
labels (digits) or factors (sprites), sharpness (Laplacian variance; real data's value is
the target), nearest-training-image distance, MIG of the posterior means (sprites), and
the test ELBO / IWAE log p(x) of the likelihood models (nats per image; VAE-family samples
are the means of p(x|z)). Prints each table in Markdown and one JSON line per dataset.

    python benchmarks/sample_quality.py                          # sprites and digits, ~15 min on 1 thread
    python benchmarks/sample_quality.py --data digits --out /tmp/sq   # keep run dirs and figures
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ppgen.runs.compare import compare_runs, markdown_table, write_comparison
from ppgen.runs import FAMILIES, train_run

BUDGETS = {  # per dataset: the shared budget
    "sprites": dict(epochs=10, batch_size=64, z_dim=10, width=16, hidden=256),
    "digits": dict(epochs=60, batch_size=64, z_dim=10, width=32, hidden=256),
}


def models(adversarial_weight: float, feature_weight: float) -> dict:
    """name -> the family's settings on top of the shared budget."""
    return {
        "vae": dict(model="conv_vae", lr=1e-3),
        "beta_vae": dict(model="conv_vae", lr=1e-3, beta=4.0),
        "sparse_vae": dict(model="conv_vae", lr=1e-3, prior="spike_and_slab"),
        "vaegan": dict(model="vaegan", lr=1e-3, adversarial_weight=adversarial_weight),
        "vaegan_fm": dict(model="vaegan", lr=1e-3, adversarial_weight=adversarial_weight,
                          feature_weight=feature_weight),
        # DCGAN's lr 2e-4 (with or without spectral norm) collapsed on sprites at this budget;
        # 1e-3, the VAEs' rate, did not (BENCHMARKS.md, "Sample quality")
        "gan": dict(model="gan", lr=1e-3, spectral_norm=True),
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    p.add_argument("--models", nargs="+", default=None, help="a subset of: " + ", ".join(models(0, 0)))
    p.add_argument("--epochs", type=int, default=None, help="override every dataset's epochs")
    p.add_argument("--adversarial-weight", type=float, default=10.0)
    p.add_argument("--feature-weight", type=float, default=0.1)
    p.add_argument("--iwae-k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="keep run directories, tables and figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.out or tempfile.mkdtemp(prefix="ppgen_sample_quality_"))
    table = models(args.adversarial_weight, args.feature_weight)
    names = args.models or list(table)
    results = []
    for data in args.data:
        budget = {**BUDGETS[data], **({"epochs": args.epochs} if args.epochs else {})}
        seconds, dirs = {}, []
        for name in names:
            family = FAMILIES[table[name]["model"]]  # each family takes only its own settings (no MLP in the GAN)
            config = {"data": data, "seed": args.seed, **{k: v for k, v in budget.items() if k in family.defaults},
                      **table[name]}
            out = root / data / name
            t0 = time.perf_counter()
            train_run(config, out, device="cpu", progress=False, iwae_k=args.iwae_k)
            seconds[name] = round(time.perf_counter() - t0, 1)
            dirs.append(out)
            print(f"[{data}] {name}: {seconds[name]} s", flush=True)
        t0 = time.perf_counter()
        result = compare_runs(dirs, data, device="cpu", seed=args.seed)
        write_comparison(result, root / data / "quality.md")
        print(f"\n## {data} (budget {budget}; quality {time.perf_counter() - t0:.0f} s)\n")
        print(markdown_table(result))
        line = {"benchmark": "sample_quality", "data": data, "budget": budget, "iwae_k": args.iwae_k,
                "adversarial_weight": args.adversarial_weight, "feature_weight": args.feature_weight,
                "train_seconds": seconds, "rows": result["rows"], "real": result["real"],
                "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
                "out": str(root / data)}
        print(json.dumps(line), flush=True)
        results.append(line)
    return results


if __name__ == "__main__":
    main()
