"""The ppgen console script, run as a user would run it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

PPGEN = str(Path(sys.executable).parent / "ppgen")
FAST = ["--epochs", "2", "--hidden", "32", "--z-dim", "4", "--iwae-k", "20", "--quiet", "--device", "cpu"]


def ppgen(*args, check=True):
    result = subprocess.run([PPGEN, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"ppgen {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    ppgen("train", "vae", "--data", "digits", "--prior", "laplace", "--guide", "iaf", "--elbo", "meanfield", *FAST, "--out", out)
    return out


def test_train_writes_run_directory(run_dir):
    for name in ("config.json", "checkpoint.pt", "metrics.json", "samples.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test_elbo_nats", "test_iwae_nats", "iwae_k", "active_units", "epochs", "train_seconds", "device"):
        assert key in metrics, key
    assert (metrics["model"], metrics["prior"], metrics["guide"], metrics["elbo"]) == ("vae", "laplace", "iaf", "meanfield")
    assert metrics["test_elbo_nats"] < 0 and metrics["iwae_k"] == 20 and metrics["epochs"] == 2


def test_eval_recomputes_from_checkpoint(run_dir):
    before = json.loads((run_dir / "metrics.json").read_text())
    out = ppgen("eval", run_dir, "--iwae-k", "20", "--device", "cpu").stdout
    assert "test_iwae_nats" in out
    after = json.loads((run_dir / "metrics.json").read_text())
    # a fresh Monte Carlo estimate from the same weights: close, not identical
    assert abs(after["test_iwae_nats"] - before["test_iwae_nats"]) < 2.0


def test_sample_writes_png(run_dir, tmp_path):
    out = tmp_path / "s.png"
    ppgen("sample", run_dir, "-n", "9", "--out", out, "--device", "cpu")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_a_run(run_dir, tmp_path):
    ppgen("train", "vae", "--data", "digits", "--prior", "laplace", "--guide", "iaf", "--elbo", "meanfield",
          *FAST[:1], "4", *FAST[2:], "--out", run_dir, "--resume")
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 4


def test_help_lists_registries():
    for args in (["--help"], ["train", "--help"]):
        out = ppgen(*args).stdout
        for name in ("vae", "sparse_vae", "spike_and_slab", "mixture", "iaf", "lowrank_normal", "meanfield", "digits"):
            assert name in out, (args, name)
        # per model, what it takes
        assert "vrnn        priors: learned, standard; guides: vrnn_filtering, vrnn_smoothing" in out, args
        assert "sparse_vae  priors: laplace, spike_and_slab; guides:" in out, args
        assert "gan         no prior or guide" in out, args


@pytest.mark.parametrize("args, message", [
    (["train", "vae", "--prior", "gauss"], "unknown prior 'gauss'"),
    (["train", "vae", "--guide", "nope"], "unknown guide 'nope'"),
    (["train", "nope"], "unknown model 'nope'"),
    (["train", "vae", "--elbo", "renyi"], "unknown elbo 'renyi'"),
    (["train", "vae", "--data", "/no/such/file"], "no dataset named '/no/such/file'"),
    (["train", "vae", "--guide", "spike_and_slab"], "needs the spike_and_slab prior"),
    (["train", "sparse_vae", "--prior", "normal"], "sparse_vae does not take the prior 'normal'; it takes priors: laplace, spike_and_slab;"),
    (["train", "vrnn", "--data", "synthetic", "--prior", "laplace"],
     "vrnn does not take the prior 'laplace'; it takes priors: learned, standard; guides: vrnn_filtering, vrnn_smoothing"),
    (["train", "vrnn", "--data", "synthetic", "--guide", "iaf"], "vrnn does not take the guide 'iaf'"),
    (["train", "gan", "--prior", "laplace"], "gan does not take the prior 'laplace'; it takes no prior or guide"),
    (["eval", "/no/such/run"], "run directory not found"),
    (["train", "vrnn", "--data", "synthetic:real", "--transpose", "2"], "transpose needs 88-key piano rolls"),
    (["train", "vrnn", "--data", "synthetic", "--dropout", "1.5"], "1.5 is not in [0, 1)"),
    (["train", "vrnn", "--data", "synthetic", "--likelihood", "poisson"], "unknown likelihood 'poisson'"),
])
def test_user_errors_are_one_line(args, message, tmp_path):
    result = ppgen(*args, "--out" if args[0] == "train" else "--iwae-k", tmp_path / "r" if args[0] == "train" else 5,
                   check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_train_refuses_to_overwrite_a_run(run_dir):
    result = ppgen("train", "vae", *FAST, "--out", run_dir, check=False)
    assert result.returncode == 2 and "already holds a run" in result.stderr


def test_vrnn_train_sample_continue(tmp_path):
    run = tmp_path / "vrnn"
    ppgen("train", "vrnn", "--data", "synthetic", "--epochs", "2", "--hidden", "16", "--z-dim", "4",
          "--rnn", "lstm", "--dropout", "0.2", "--likelihood", "autoregressive_bernoulli", "--iwae-k", "5", "--quiet", "--device", "cpu", "--out", run)
    config = json.loads((run / "config.json").read_text())
    assert (config["rnn"], config["dropout"], config["likelihood"]) == ("lstm", 0.2, "autoregressive_bernoulli")
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test_elbo_per_frame_nats", "test_iwae_per_frame_nats", "iwae_k", "epochs", "train_seconds", "device"):
        assert key in metrics, key
    assert (metrics["model"], metrics["guide"]) == ("vrnn", "vrnn_smoothing")
    out = ppgen("sample", run, "-n", "2", "--length", "12", "--out", tmp_path / "s.png", "--device", "cpu").stdout
    assert (tmp_path / "s.png").is_file() and "s_2.mid" in out
    out = ppgen("continue", run, "--prefix", "6", "--steps", "5", "-n", "2", "--iwae-k", "5",
                "--out", tmp_path / "c.png", "--device", "cpu").stdout
    assert "continuation_log_lik_per_frame_nats" in out and (tmp_path / "c.png").is_file()
    result = ppgen("continue", tmp_path / "nope", "--out", tmp_path / "x.png", check=False)
    assert result.returncode == 2 and "run directory not found" in result.stderr
    result = ppgen("continue", run, "--piece", "9999", "--out", tmp_path / "x.png", "--device", "cpu", check=False)
    assert result.returncode == 2 and "piece 9999 does not exist: the test split has" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
