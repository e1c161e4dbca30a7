"""Data files that change, block or promise more than memory: a streamed file truncated while
training reads it, a FIFO given as data, an array whose header declares more bytes than the
machine has. Each ends at once in one line (exit 2 from the command line), never in a bus
error, a hang or minutes of decompression."""
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ppgen.data import load, load_numpy
from ppgen.data import files as files_mod
from ppgen.data.stream import FileChangedError, MappedRows
from ppgen.infer.batches import Streamed
from ppgen.infer.checkpoint import load_checkpoint

PPGEN = str(Path(sys.executable).parent / "ppgen")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--hidden", "8", "--z-dim", "2", "--iwae-k", "5", "--batch-size", "100", "--quiet", "--device", "cpu"]


def one_line(result, message):
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def binary_rows(n, d=16, seed=0):
    return (np.random.default_rng(seed).random((n, d)) < 0.3).astype(np.uint8)


# --- a streamed file that shrinks -------------------------------------------------------------

def test_a_truncated_stream_file_is_named_before_a_read_faults(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, binary_rows(3000))
    rows = MappedRows([path], 0, 2500)
    assert rows[np.arange(10)].shape == (10, 16)  # mapped now
    os.truncate(path, 1000)  # rows past byte 1000 would fault (SIGBUS) if read from the map
    with pytest.raises(FileChangedError, match=r"x\.npy changed while it was read: it now holds 1000 bytes"):
        rows[np.arange(2000, 2010)]
    with pytest.raises(FileChangedError, match="resume from the last checkpoint"):
        rows.check_unchanged()


def test_a_streamed_epoch_checks_the_files_first(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, binary_rows(1000))
    source = Streamed(MappedRows([path]), 100, "cpu", workers=0)
    assert sum(1 for _ in source.epoch(0)) == 10
    os.truncate(path, 500)
    with pytest.raises(FileChangedError):
        next(source.epoch(1))


def test_truncating_the_stream_file_during_training_stops_in_one_line(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, binary_rows(4000))
    out = tmp_path / "run"
    proc = subprocess.Popen([PPGEN, "train", "vae", "--data", f"stream:{data}", "--epochs", "100000", *TINY,
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        os.truncate(data, 300)  # while it trains: between epochs or mid-epoch
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    one_line(result, "changed while it was read")
    assert stderr.startswith("ppgen train: error:")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] >= 1  # the last checkpoint is intact


# --- special files ----------------------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "rows.npy"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("spec", ["stream:{p}", "{p}", "{p.parent}/plain", "stream:{p.parent}"])
def test_a_fifo_is_refused_before_it_is_opened(fifo, spec):
    os.mkfifo(fifo.parent / "plain")
    if spec == "stream:{p.parent}":  # a FIFO among the shards of a streamed folder
        np.save(fifo.parent / "a.npy", binary_rows(100))
    spec = spec.format(p=fifo)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"is a FIFO \(named pipe\), not a regular file"), hang_fails(5):
        load(spec)  # opening a FIFO would block here until a writer came
    assert time.perf_counter() - start < 1


class hang_fails:
    """A block that fails with ``TimeoutError`` after ``seconds`` (SIGALRM interrupts a
    blocking ``open()`` of a FIFO), instead of hanging the test run."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def timeout(signum, frame):
            raise TimeoutError(f"still blocked after {self.seconds} s")
        self.previous = signal.signal(signal.SIGALRM, timeout)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


def test_a_fifo_as_data_exits_2_at_once(fifo, tmp_path):
    for spec in (f"stream:{fifo}", str(fifo)):
        result = subprocess.run([PPGEN, "train", "vae", "--data", spec, "--epochs", "1", *TINY, "--out",
                                 str(tmp_path / "run")], capture_output=True, text=True, timeout=60, env=ENV)
        one_line(result, "is a FIFO (named pipe)")


# --- arrays larger than memory ----------------------------------------------------------------

def huge_npz(path, shape=(10**6, 10**4), dtype="<f8", extra=None):
    """A small compressed .npz whose member's header declares ``shape`` (80 GB by default),
    followed by a megabyte of zeros: the declared size is what must be checked."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.npy", header.getvalue() + bytes(1 << 20))
        for name, array in (extra or {}).items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


def test_an_npz_member_declaring_more_than_memory_is_refused_unread(tmp_path):
    path = huge_npz(tmp_path / "huge.npz", extra={"test": np.zeros((10, 3))})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"huge\.npz \(array 'train': shape \(1000000, 10000\) of float64\) "
                                         r"needs 80\.0 GB in memory, but only .* is available; .*stream:PATH"):
        load_numpy(path)
    assert time.perf_counter() - start < 1


def test_arrays_that_fit_alone_but_not_together_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "two.npz"
    np.savez_compressed(path, train=np.zeros((1000, 10)), test=np.zeros((1000, 10)))  # 80 kB each
    monkeypatch.setattr(files_mod, "available_memory", lambda: 100_000)
    with pytest.raises(ValueError, match=r"two\.npz \(2 arrays together\) needs 160\.0 kB"):
        load_numpy(path)


def test_an_npy_declaring_more_than_memory_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((1000, 10)))
    monkeypatch.setattr(files_mod, "available_memory", lambda: 50_000)
    with pytest.raises(ValueError, match=r"x\.npy \(shape \(1000, 10\) of float64\) needs 80\.0 kB in memory, "
                                         r"but only 50\.0 kB is available"):
        load(str(path))


def test_available_memory_is_known_here():
    room = files_mod.available_memory()
    assert room is None or room > 0


def test_a_huge_npz_exits_2_in_well_under_its_decompression_time(tmp_path):
    path = huge_npz(tmp_path / "huge.npz")
    result = subprocess.run([PPGEN, "train", "vae", "--data", str(path), "--epochs", "1", *TINY, "--out",
                             str(tmp_path / "run")], capture_output=True, text=True, timeout=60, env=ENV)
    one_line(result, "(array 'train': shape (1000000, 10000) of float64) needs 80.0 GB in memory")


def test_a_gzipped_idx_declaring_more_than_memory_is_refused_undecompressed(tmp_path):
    import gzip
    from ppgen.data import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    dims = b"".join(n.to_bytes(4, "big") for n in (10**5, 10**3, 10**3))  # 100 GB of uint8
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, 3]) + dims + bytes(1 << 20))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"shape \(100000, 1000, 1000\) of uint8\) needs 100\.0 GB in memory"):
        read_idx(path)
    assert time.perf_counter() - start < 1
