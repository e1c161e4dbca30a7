"""Data-parallel training with 2 CPU processes (gloo): the equivalence of one DDP step with one
process stepping on the same global batch, a torchrun run against a one-process run, and a
rank killed mid-run (issue 13). Each process runs with one thread."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppgen import data as data_mod
from ppgen.companions.gan import discriminator_loss, generator_loss, train_gan
from ppgen.guides import DiagonalNormalGuide, LadderGuide, check_sites
from ppgen.infer import fit
from ppgen.infer.batches import InMemory, Shard
from ppgen.infer.checkpoint import load_checkpoint, rng_state
from ppgen.infer.fit import make_optimizer
from ppgen.infer.loop import NonFiniteLossError, _restore_rng, apply_update, seed_all
from ppgen.infer.objectives import ELBOS, with_beta
from ppgen.models import VAE, HierarchicalVAE
from ppgen.nn.dcgan import Discriminator, Generator

ROWS, SEED, LR = 61, 5, 1e-2  # an odd global batch: the two shares (31 and 30 rows) are unequal
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_pair(digits):
    torch.manual_seed(0)
    model = VAE.for_data(digits, z_dim=4, hidden=32)
    return model, DiagonalNormalGuide.for_model(model, hidden=32)


def small_hierarchy(digits):
    """A two-layer pair whose guide shares the model's top-down networks (a gradient from both)."""
    torch.manual_seed(0)
    model = HierarchicalVAE.for_data(digits, (4, 2), hidden=16)
    return model, LadderGuide.for_model(model, hidden=16)


PAIRS = {"pair": small_pair, "hierarchy": small_hierarchy}


def small_gan():
    torch.manual_seed(0)
    return Generator(8, (1, 8, 8), [16, 8]), Discriminator((1, 8, 8), [8, 16])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One process of a 2-process group, as torchrun would start it: one fit step and one GAN
    step on the global batch; then a non-finite loss on rank 1 only."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    digits = data_mod.load("digits")
    trained = {}
    for name, build in PAIRS.items():
        model, guide = build(digits)
        fit(model, guide, digits.train[:ROWS], epochs=1, batch_size=ROWS, lr=LR, seed=SEED, device="cpu",
            progress=False, validate=False)
        trained[name] = [p.detach() for m in (model, guide) for p in m.parameters()]
    gen, disc = small_gan()
    train_gan(digits.train[:ROWS] / 16, (1, 8, 8), generator=gen, discriminator=disc, epochs=1, batch_size=ROWS,
              z_dim=8, lr=LR, seed=SEED, device="cpu", progress=False)
    try:
        apply_update(torch.tensor(float("nan") if rank == 1 else 1.0, requires_grad=True),
                     torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))
        nan_error = None
    except NonFiniteLossError as e:
        nan_error = str(e)
    if rank == 0:
        torch.save({**trained, "gan": [p.detach() for m in (gen, disc) for p in m.parameters()]}, Path(out) / "ddp.pt")
    (Path(out) / f"nan{rank}.txt").write_text(nan_error or "")


def shares(rows: int):
    """The two processes' rows of the one global batch of epoch 0."""
    return Shard(0, 2, SEED).rows(rows, rows, 0)[0], Shard(1, 2, SEED).rows(rows, rows, 0)[0]


def one_process_pair_step(digits, build=small_pair):
    """What the 2-process step must equal: one process, the same global batch, each half's
    draws from that rank's seed, the halves' per-datapoint losses weighted by their rows."""
    model, guide = build(digits)
    x = digits.train[:ROWS]
    check_sites(model, guide, x[:2])
    optimizer = make_optimizer(list(model.parameters()) + list(guide.parameters()), lr=LR)
    objective = ELBOS["trace"](1)
    loss = 0
    for rank, rows in enumerate(shares(ROWS)):
        seed_all(SEED + rank)
        loss = loss + objective(with_beta(model, 1.0), with_beta(guide, 1.0), x[rows]) / ROWS
    apply_update(loss, optimizer)
    return [p.detach() for m in (model, guide) for p in m.parameters()]


def one_process_gan_step(digits):
    gen, disc = small_gan()
    opt_g = torch.optim.Adam(gen.parameters(), lr=LR, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=LR, betas=(0.5, 0.999))
    real = digits.train[:ROWS] / 16
    fakes, halves = [], shares(ROWS)
    for rank, rows in enumerate(halves):
        seed_all(SEED + rank)
        fakes.append(gen(torch.randn(len(rows), 8)))
    d_loss = sum(discriminator_loss(disc(real[rows]), disc(f.detach())) * len(rows) / ROWS
                 for rows, f in zip(halves, fakes))
    apply_update(d_loss, opt_d)
    g_loss = sum(generator_loss(disc(f)) * len(rows) / ROWS for rows, f in zip(halves, fakes))
    apply_update(g_loss, opt_g)
    return [p.detach() for m in (gen, disc) for p in m.parameters()]


def test_one_ddp_step_equals_one_process_step_on_the_global_batch(tmp_path, digits):
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    references = {**{name: one_process_pair_step(digits, build) for name, build in PAIRS.items()},
                  "gan": one_process_gan_step(digits)}
    for name, reference in references.items():
        assert len(ddp[name]) == len(reference)
        for a, b in zip(ddp[name], reference):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
    # the step moved the parameters: the comparison is not between two untouched initialisations
    start = [p.detach() for m in small_pair(digits) for p in m.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(ddp["pair"], start))
    # a non-finite loss on rank 1 stops both ranks, and both name rank 1
    for rank in (0, 1):
        assert "non-finite loss on rank 1 of 2 processes" in (tmp_path / f"nan{rank}.txt").read_text()


def test_shards_partition_every_global_batch():
    """DistributedSampler semantics: the ranks' rows of a global batch are disjoint and make up
    the one-process batch of the same permutation; a new permutation each epoch; a final
    global batch with fewer rows than processes is dropped."""
    n, batch = 23, 10
    for epoch in (0, 1):
        a, b = Shard(0, 2, 3).rows(n, batch, epoch), Shard(1, 2, 3).rows(n, batch, epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(3 + epoch))
        assert [torch.cat([x, y]).tolist() for x, y in zip(a, b)] == [perm[i:i + batch].tolist() for i in (0, 10, 20)]
    assert Shard(0, 2, 3).rows(n, batch, 0)[0].tolist() != Shard(0, 2, 3).rows(n, batch, 1)[0].tolist()
    assert Shard(0, 4, 0).steps(21, 10) == 2 and Shard(0, 1, 0).steps(21, 10) == 3
    torch.manual_seed(1)
    one = [rows.tolist() for rows in Shard().rows(n, batch, 0)]
    torch.manual_seed(1)
    assert [b[0].tolist() for b in InMemory((torch.arange(n),), batch, "cpu").epoch(0)] == one


def torchrun(*args, n=2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", "-m", "ppgen", *args]


TRAIN = ["train", "vae", "--hidden", "64", "--z-dim", "8", "--epochs", "6", "--patience", "100", "--iwae-k", "20",
         "--quiet", "--device", "cpu"]


def test_two_processes_match_one_process_within_monte_carlo_error(tmp_path):
    one = subprocess.run([sys.executable, "-m", "ppgen", *TRAIN, "--out", str(tmp_path / "one")], env=ENV,
                         capture_output=True, text=True, timeout=120)
    two = subprocess.run(torchrun(*TRAIN, "--out", str(tmp_path / "two")), env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("run directory:") == 1  # rank 0 alone prints the metrics
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    # the same kind of run directory
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    assert set(m2) - set(m1) == {"processes"} and m2["processes"] == 2
    # different random draws and batch orders, the same training: one-process runs of these
    # settings with seeds 0-3 gave test ELBOs -120.81, -121.14, -120.17, -120.33 (sd 0.44 nats)
    for key in ("test_elbo_nats", "test_iwae_nats"):
        assert abs(m1[key] - m2[key]) < 2.0, (key, m1[key], m2[key])
    state = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert state["world"] == 2 and len(state["rng_ranks"]) == 2 and state["epoch"] == 6

    # the evaluation of one trained pair, sharded over 2 processes and in one: the same numbers
    # within Monte Carlo error (different draws), active units from the whole test set
    run = str(tmp_path / "one")
    shared = subprocess.run(torchrun("eval", run, "--iwae-k", "50", "--quiet", "--device", "cpu"), env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert shared.returncode == 0, shared.stderr[-2000:]
    e2 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    alone = subprocess.run([sys.executable, "-m", "ppgen", "eval", run, "--iwae-k", "50", "--quiet", "--device", "cpu"],
                           env=ENV, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr[-2000:]
    e1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert e1["iwae_k"] == e2["iwae_k"] == 50
    for key in ("test_elbo_nats", "test_iwae_nats"):
        assert abs(e1[key] - e2[key]) < 0.5, (key, e1[key], e2[key])
    assert abs(e1["active_units"] - e2["active_units"]) <= 1


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _rank_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"RANK=")), None)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_stops_the_run_cleanly_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    args = ["train", "vae", "--hidden", "32", "--z-dim", "4", "--epochs", "40", "--patience", "100", "--iwae-k", "5",
            "--quiet", "--device", "cpu", "--out", str(out)]
    launcher = subprocess.Popen(torchrun(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.pt").exists() or load_checkpoint(out / "checkpoint.pt")["epoch"] < 2:
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.02)
        workers = {_rank_of(pid): pid for pid in _children(launcher.pid)}
        os.kill(workers["1"], signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=60)  # no hang: torchrun stops rank 0 and exits
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    # rank 0 says what happened, where the last checkpoint is and how to resume
    assert "[rank 0] ppgen train:" in stderr and "the last checkpoint is" in stderr and "--resume" in stderr, stderr[-3000:]
    state = load_checkpoint(out / "checkpoint.pt")  # intact
    assert 2 <= state["epoch"] < 40 and not (out / "metrics.json").exists()
    resumed = subprocess.run(torchrun(*args, "--resume"), env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = load_checkpoint(out / "checkpoint.pt")
    assert final["epoch"] == 40 and final["history"]["epoch"] == list(range(1, 41))
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 40


def test_resume_with_another_number_of_processes_says_so(capsys):
    state = {"world": 2, "rng": rng_state(), "rng_ranks": [rng_state(), rng_state()], "epoch": 3}
    _restore_rng(state, seed=0, world=1, rank=0)
    assert "saved by 2 process(es) and resumes with 1" in capsys.readouterr().err
