"""Data larger than memory: one epoch of the VAE streamed from a memory-mapped .npy file
several times larger than a memory cap, against the same model on an in-memory subset.

The data: ``--gb`` GB of binarized 28x28 images (uint8, one byte a pixel: 4 GB = 5.1 million
images), written once to ``--dir`` (reused when present): ten binary prototypes (the digits
upsampled to 28x28 and thresholded) with about 6% of the pixels flipped at random.

Each measurement runs in its own Python process (``--phase``), so that its peak resident
memory (``VmHWM`` of /proc/self/status: the kernel's high-water mark of its resident memory,
file-backed mapped pages included) is its own:

* ``stream``: ``ppgen.data.load("stream:FILE")`` and ``ppgen.infer.fit`` for one epoch over
  the whole training split, read batch by batch (DataLoader; on the CPU in the training
  process, ``Streamed``'s default). A watchdog thread reads the resident memory every 50 ms
  and stops the process if it passes ``--cap-mb`` (the cap is measured, not set with
  ``RLIMIT_AS``: that limit counts virtual memory, and the map of the file alone exceeds it).
* ``memory``: the first ``--subset`` images as a float32 tensor, the same model and settings,
  ``--subset-epochs`` epochs; run before and after the streamed epoch, so that background load
  weighs on both sides alike, and averaged.

Examples/second is the training split's rows over the epoch's wall time (fit's
``History.seconds``: reading, checks, steps; not loading or set-up). On a shared machine the
wall time moves with other people's load, which differs between the long streamed epoch and
the short in-memory runs, so the line also gives examples per CPU second of the training
process (``time.process_time`` around ``fit``, set-up included; one torch thread and no
DataLoader workers, so that process does all the work) and ``ratio_cpu``, the steadier
comparison. Validation is off (no val_data) on both sides; the streamed run checks every
batch (its first epoch), as ``fit`` does by default. The file is read from the page cache when the machine has room for
it (it was just written); ``--cold`` evicts it first (``posix_fadvise(DONTNEED)``), so every
batch reads the disk. Prints one JSON line:

    python benchmarks/streaming.py [--gb 4] [--cap-mb 1024] [--dir /tmp/ppgen-streaming]
        [--subset 100000] [--batch-size 128] [--threads 1] [--cold]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ppgen.data import load, load_digits
from ppgen.guides import DiagonalNormalGuide
from ppgen.infer import fit
from ppgen.models import VAE

SIDE = 28


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=4.0, help="size of the streamed file (GB, 1e9 bytes)")
    p.add_argument("--cap-mb", type=float, default=1024.0, help="the memory cap of the streamed run (MiB)")
    p.add_argument("--dir", default="/tmp/ppgen-streaming")
    p.add_argument("--subset", type=int, default=100_000, help="rows of the in-memory run")
    p.add_argument("--subset-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cold", action="store_true", help="evict the file from the page cache before streaming")
    p.add_argument("--phase", choices=["stream", "memory"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    path = Path(args.dir) / f"binarized_{args.gb:g}gb.npy"
    if args.phase:
        print(json.dumps(PHASES[args.phase](path, args)))
        return
    made = time.perf_counter()
    rows = write_images(path, int(args.gb * 1e9) // (SIDE * SIDE))
    made = time.perf_counter() - made
    memory = [run_phase("memory", argv)]
    if args.cold:
        evict(path)
    stream = run_phase("stream", argv)
    memory.append(run_phase("memory", argv))
    in_memory = sum(m["examples_per_second"] for m in memory) / len(memory)
    in_memory_cpu = sum(m["examples_per_cpu_second"] for m in memory) / len(memory)
    result = {
        "benchmark": "streaming", "file": str(path), "file_gb": round(path.stat().st_size / 1e9, 3), "rows": rows,
        "cap_mb": args.cap_mb, "peak_rss_mb": stream["peak_rss_mb"], "under_cap": stream["peak_rss_mb"] < args.cap_mb,
        "streamed_examples": stream["examples"], "streamed_examples_per_second": stream["examples_per_second"],
        "in_memory_examples_per_second": round(in_memory, 1),
        "in_memory_runs": [m["examples_per_second"] for m in memory],
        "in_memory_peak_rss_mb": max(m["peak_rss_mb"] for m in memory),
        "ratio": round(stream["examples_per_second"] / in_memory, 3),
        "streamed_examples_per_cpu_second": stream["examples_per_cpu_second"],
        "in_memory_examples_per_cpu_second": round(in_memory_cpu, 1),
        "ratio_cpu": round(stream["examples_per_cpu_second"] / in_memory_cpu, 3),
        "cold_cache": args.cold, "batch_size": args.batch_size, "subset": args.subset, "threads": args.threads,
        "write_seconds": round(made, 1), "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu", "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


def write_images(path: Path, rows: int) -> int:
    """``rows`` binarized 28x28 images as a uint8 .npy file at ``path`` (kept if already
    there with that shape), written chunk by chunk through plain writes (no map of the file
    stays resident in this process)."""
    shape = (rows, SIDE, SIDE)
    if path.is_file():
        with open(path, "rb") as f:
            np.lib.format.read_magic(f)
            if np.lib.format.read_array_header_1_0(f)[0] == shape:
                return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    protos = prototypes()
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for start in range(0, rows, 65_536):
            n = min(65_536, rows - start)
            flips = np.unpackbits(rng.integers(0, 256, (4, n, SIDE * SIDE // 8), dtype=np.uint8), axis=-1)
            images = protos[rng.integers(0, len(protos), n)] ^ (flips[0] & flips[1] & flips[2] & flips[3])
            f.write(images.astype(np.uint8).tobytes())
    tmp.replace(path)
    return rows


def prototypes() -> np.ndarray:
    """Ten binary 28x28 images: the mean digit of each class, upsampled (3x) and padded."""
    digits = load_digits()
    x = torch.cat([digits.train, digits.val, digits.test]).numpy().reshape(-1, 8, 8)
    labels = torch.cat([torch.as_tensor(digits.labels[s]) for s in ("train", "val", "test")]).numpy()
    means = np.stack([x[labels == k].mean(0) for k in range(10)])
    big = np.pad(np.kron(means, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    return (big > big.mean()).astype(np.uint8).reshape(10, -1)


def evict(path: Path) -> None:
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def run_phase(phase: str, argv) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = subprocess.run([sys.executable, __file__, *argv, "--phase", phase], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {phase} phase failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pair(dataset):
    torch.manual_seed(0)
    model = VAE.for_data(dataset, z_dim=16, hidden=256)
    return model, DiagonalNormalGuide.for_model(model, hidden=256)


def stream_phase(path: Path, args) -> dict:
    torch.set_num_threads(args.threads)
    watch_memory(args.cap_mb)
    dataset = load(f"stream:{path}")
    model, guide = pair(dataset)
    cpu = time.process_time()
    history = fit(model, guide, dataset.train, epochs=1, batch_size=args.batch_size, device="cpu", progress=False)
    return measured(len(dataset.train), history.seconds[0], time.process_time() - cpu)


def memory_phase(path: Path, args) -> dict:
    torch.set_num_threads(args.threads)
    dataset = load(f"stream:{path}")
    x = dataset.train.read(0, min(args.subset, len(dataset.train)))
    model, guide = pair(dataset)
    cpu = time.process_time()
    history = fit(model, guide, x, epochs=args.subset_epochs, batch_size=args.batch_size, device="cpu", progress=False)
    return measured(len(x) * args.subset_epochs, sum(history.seconds), time.process_time() - cpu)


def measured(examples: int, seconds: float, cpu_seconds: float) -> dict:
    return {"examples": examples, "seconds": round(seconds, 2), "examples_per_second": round(examples / seconds, 1),
            "examples_per_cpu_second": round(examples / cpu_seconds, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): ``VmHWM``, the high-water mark of its
    address space since the exec that started it. (``getrusage``'s ``ru_maxrss`` would also
    count the parent's memory at the fork before that exec.)"""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def watch_memory(cap_mb: float) -> None:
    """Stop this process (exit 3) as soon as its resident memory passes ``cap_mb``."""
    page = os.sysconf("SC_PAGE_SIZE")

    def watch():
        while True:
            with open("/proc/self/statm") as f:
                resident = int(f.read().split()[1]) * page / 2**20
            if resident > cap_mb:
                print(f"resident memory {resident:.0f} MiB passed the cap of {cap_mb:g} MiB", file=sys.stderr)
                os._exit(3)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


PHASES = {"stream": stream_phase, "memory": memory_phase}

if __name__ == "__main__":
    main()
