"""Data larger than memory: .npy files streamed batch by batch (ppgen.data.stream,
ppgen.infer.batches.Streamed) train exactly as the same rows held in memory would."""
import importlib
import json
import os

import numpy as np
import pytest
import torch

from ppgen import cli, runs
from ppgen.data import load
from ppgen.data import stream as stream_mod
from ppgen.data.stream import MappedRows
from ppgen.guides import DiagonalNormalGuide
from ppgen.infer import fit
from ppgen.infer.batches import InMemory, Shard, Streamed
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.models import VAE

SETTINGS = dict(batch_size=64, lr=1e-3, seed=3, device="cpu", progress=False)


def binary_rows(n, d=12, seed=0):
    """Binary rows with structure (two prototypes, flipped bits), stored as uint8."""
    rng = np.random.default_rng(seed)
    protos = rng.random((2, d)) < 0.5
    x = protos[rng.integers(0, 2, n)] ^ (rng.random((n, d)) < 0.1)
    return x.astype(np.uint8)


def shard(x, folder, sizes):
    folder.mkdir(parents=True)
    edges = np.cumsum([0, *sizes])
    assert edges[-1] == len(x)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        np.save(folder / f"part{i:02d}.npy", x[a:b])
    return folder


def pair(dataset):
    torch.manual_seed(11)
    model = VAE.for_data(dataset, z_dim=3, hidden=16)
    return model, DiagonalNormalGuide.for_model(model, hidden=16)


def params(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


@pytest.fixture
def npy(tmp_path):
    x = binary_rows(500)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy", x


def test_rows_are_read_in_the_order_asked_across_shards(tmp_path):
    x = np.arange(70 * 3, dtype=np.int16).reshape(70, 3)
    rows = MappedRows(sorted(shard(x, tmp_path / "s", [20, 7, 43]).iterdir()), start=5, stop=66)
    idx = np.array([60, 0, 14, 15, 21, 14, 33])  # unsorted, repeated, crossing shard edges
    got = rows[idx]
    assert got.dtype == torch.get_default_dtype() and rows.shape == (61, 3)
    assert torch.equal(got, torch.from_numpy(x[5:66][idx]).to(got.dtype))
    assert torch.equal(rows[:2], torch.from_numpy(x[5:7]).to(got.dtype))


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_epochs_are_the_in_memory_batches(npy, workers):
    path, x = npy
    memory = InMemory((torch.from_numpy(x).float(),), 64, "cpu")
    streamed = Streamed(MappedRows([path]), 64, "cpu", workers=workers)
    assert (streamed.n, streamed.steps) == (memory.n, memory.steps) == (500, 8)
    seen = []
    for source in (memory, streamed):
        torch.manual_seed(5)
        seen.append([b[0] for e in range(2) for b in source.epoch(e)])
        seen[-1].append(torch.rand(3))  # the global generator is left where the in-memory source leaves it
    assert all(torch.equal(a, b) for a, b in zip(*seen))
    assert sorted(torch.cat(seen[1][:8]).sum(1).tolist()) == sorted(x.sum(1).astype(float).tolist())


def test_a_streamed_shard_is_the_in_memory_shard(npy):
    path, x = npy
    for rank in (0, 1):
        shard = Shard(rank, 2, seed=4)
        memory = InMemory((torch.from_numpy(x).float(),), 64, "cpu", shard)
        streamed = Streamed(MappedRows([path]), 64, "cpu", shard)
        assert streamed.steps == memory.steps
        for epoch in (0, 1):
            assert all(torch.equal(a[0], b[0]) for a, b in zip(memory.epoch(epoch), streamed.epoch(epoch)))


def test_fit_on_a_memmap_and_on_shards_equals_fit_in_memory(tmp_path, npy):
    path, x = npy
    dataset = load(f"stream:{path}")
    n_train = len(dataset.train)
    assert (n_train, len(dataset.val), len(dataset.test)) == (400, 50, 50)  # the last rows are val, then test
    assert torch.equal(dataset.test, torch.from_numpy(x[450:]).float()) and dataset.likelihood == "bernoulli"
    folder = shard(x, tmp_path / "shards", [123, 200, 177])
    runs = []
    for data in (torch.from_numpy(x[:n_train]).float(), dataset.train, load(f"stream:{folder}").train):
        model, guide = pair(dataset)
        history = fit(model, guide, data, dataset.val, epochs=2, **SETTINGS)
        runs.append((params(model, guide), history.train_elbo, history.val_elbo))
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0][0], other[0]))
        assert runs[0][1:] == other[1:]


def test_streamed_resume_is_exact(tmp_path, npy):
    path, _ = npy
    dataset = load(f"stream:{path}")
    m1, g1 = pair(dataset)
    h1 = fit(m1, g1, dataset, epochs=3, checkpoint=tmp_path / "a.pt", **SETTINGS)
    m2, g2 = pair(dataset)
    fit(m2, g2, dataset, epochs=1, checkpoint=tmp_path / "b.pt", **SETTINGS)
    m3, g3 = pair(dataset)
    h3 = fit(m3, g3, dataset, epochs=3, checkpoint=tmp_path / "b.pt", resume=True, **SETTINGS)
    assert all(torch.equal(a, b) for a, b in zip(params(m1, g1), params(m3, g3)))
    assert h1.train_elbo == h3.train_elbo and h1.val_elbo == h3.val_elbo
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 3


def test_the_data_is_never_read_whole(tmp_path, monkeypatch):
    x = binary_rows(40_000, d=4)
    np.save(tmp_path / "big.npy", x)
    reads = []
    read_sorted = MappedRows._read_sorted
    monkeypatch.setattr(MappedRows, "_read_sorted", lambda self, rows: reads.append(len(rows)) or read_sorted(self, rows))
    dataset = load(f"stream:{tmp_path / 'big.npy'}")
    assert len(dataset.train) == 32_000
    model, guide = pair(dataset)
    fit(model, guide, dataset, epochs=1, **{**SETTINGS, "batch_size": 2000})
    # loading reads the held-out rows and a sample; training reads a sample, then batch by batch
    assert reads[:3] == [4000, 4000, stream_mod.GUESS_ROWS] and max(reads) < len(dataset.train)
    assert reads[-16:] == [2000] * 16 and sum(reads[-16:]) == len(dataset.train)


def test_train_and_eval_a_streamed_run_from_the_command_line(tmp_path, capsys):
    x = binary_rows(600, d=16)
    for split, rows in (("val", x[:50]), ("test", x[50:100])):
        np.save(tmp_path / f"{split}.npy", rows)
    shard(x[100:], tmp_path / "train", [250, 250])
    out = tmp_path / "run"
    assert cli.main(["train", "vae", "--data", f"stream:{tmp_path}", "--epochs", "2", "--hidden", "16", "--z-dim", "3",
                     "--batch-size", "100", "--iwae-k", "5", "--quiet", "--device", "cpu", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["data"] == f"stream:{tmp_path}" and metrics["epochs"] == 2 and np.isfinite(metrics["test_elbo_nats"])
    assert cli.main(["eval", str(out), "--iwae-k", "5", "--device", "cpu"]) == 0
    assert "test_iwae_nats" in capsys.readouterr().out


def test_bad_values_are_named_per_batch(tmp_path, monkeypatch):
    x = binary_rows(300).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model, guide = pair(load(f"stream:{tmp_path / 'x.npy'}"))  # a Bernoulli likelihood
    x[100, 3] = 2.0  # outside the Bernoulli support, past the rows checked up front
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(importlib.import_module("ppgen.infer.fit"), "STREAM_SAMPLE", 50)
    with pytest.raises(ValueError, match=r"training data \(.*x\.npy\), epoch 1, step \d: .*outside the support"):
        fit(model, guide, MappedRows([tmp_path / "x.npy"], 0, 200), epochs=1, **SETTINGS)
    x[100, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match=r"first 240 training rows .* non-finite"):
        load(f"stream:{tmp_path / 'x.npy'}")


@pytest.mark.parametrize("files, message", [
    ({"a.npy": np.zeros((4, 3)), "b.npy": np.zeros((4, 2))}, "must share the trailing shape and dtype"),
    ({"train.npy": np.zeros((4, 3)), "test.npy": np.zeros((4, 3))}, r"not \['val'\]"),
    ({"a.npy": np.zeros(4)}, r"must hold rows \[N, features\]"),
    ({"notes.txt": None}, "holds no .npy files"),
])
def test_bad_layouts_are_named(tmp_path, files, message):
    for name, array in files.items():
        if array is None:
            (tmp_path / name).write_text("x")
        else:
            np.save(tmp_path / name, array)
    with pytest.raises(ValueError, match=message):
        load(f"stream:{tmp_path}")


def mapped_resident_kb(path) -> int:
    """Resident kB of this process's maps of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split()[0]:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_reading_releases_the_mapped_pages(tmp_path):
    path = tmp_path / "wide.npy"
    np.save(path, np.ones((2000, 1024), dtype=np.float32))  # 8 MB
    rows = MappedRows([path])
    for start in range(0, 2000, 100):
        rows.read(start, start + 100)
    assert rows._maps is not None and mapped_resident_kb(path) < 1024  # not the 8 MB read through


@pytest.mark.parametrize("model", ["gan", "vaegan", "deconv"])
def test_models_outside_fit_refuse_streamed_data_clearly(model, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((40, 1, 16, 16), dtype=np.float32))
    with pytest.raises(ValueError, match="is streamed data, which the Pyro pairs trained by fit read"):
        runs.family(model).load_data(f"stream:{tmp_path / 'x.npy'}")
