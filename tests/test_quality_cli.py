"""``ppgen train conv_vae|gan|vaegan|deconv`` and ``ppgen quality``, run as a user would run them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PPGEN = str(Path(sys.executable).parent / "ppgen")
GAN_FAST = ["--epochs", "2", "--z-dim", "4", "--width", "4", "--batch-size", "64", "--quiet", "--device", "cpu"]
FAST = [*GAN_FAST, "--hidden", "16", "--iwae-k", "10"]  # the VAEs also take an MLP size and K
PNG = b"\x89PNG\r\n\x1a\n"
# one thread per process, as conftest sets for in-process tests: on 2 shared cores a second
# thread made these commands ~10x slower (contention), not faster
ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("PPGEN_TEST_THREADS", "1")}


def ppgen(*args, check=True):
    result = subprocess.run([PPGEN, *map(str, args)], capture_output=True, text=True, timeout=300, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"ppgen {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def one_line_error(result, message):
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ppgen("train", "conv_vae", "--data", "digits", *FAST, "--out", root / "conv_vae")
    ppgen("train", "gan", "--data", "digits", *GAN_FAST, "--lr", "2e-4", "--spectral-norm", "--out", root / "gan")
    ppgen("train", "vaegan", "--data", "digits", *FAST, "--adversarial-weight", "2", "--feature-weight", "0.1",
          "--out", root / "vaegan")
    ppgen("train", "deconv", "--data", "sprites", "--task", "sr2", "--epochs", "1", "--width", "4", "--quiet",
          "--device", "cpu", "--out", root / "deconv")
    return root


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


QUALITY = ("fid", "fid_real", "kid", "precision", "recall", "density", "coverage", "sharpness", "sharpness_real",
           "nn_train_distance", "feature_classifier_accuracy")
LIKELIHOOD = ("test_elbo_nats", "test_iwae_nats", "active_units")


@pytest.mark.parametrize("name, keys", [
    ("conv_vae", LIKELIHOOD),
    ("gan", QUALITY + ("d_loss", "g_loss", "train_seconds")),
    ("vaegan", LIKELIHOOD + QUALITY + ("neg_elbo", "adversarial", "feature", "d_loss")),
    ("deconv", ("psnr_net", "ssim_net", "psnr_nearest", "psnr_bicubic", "ssim_bicubic", "psnr_gain_db")),
])
def test_train_writes_metrics_and_figures(runs, name, keys):
    run = runs / name
    for f in ("config.json", "checkpoint.pt", "metrics.json", "samples.png"):
        assert (run / f).is_file(), f
    assert (run / "samples.png").read_bytes()[:8] == PNG
    m = metrics(run)
    assert m["model"] == name and m["epochs"] == (1 if name == "deconv" else 2)
    for key in keys:
        assert key in m and np.isfinite(m[key]), key
    if "fid" in m:  # two epochs cannot beat real data
        assert m["fid"] > m["fid_real"] and m["coverage"] <= m["coverage_real"]
    if name == "vaegan":
        assert (m["adversarial_weight"], m["feature_weight"]) == (2.0, 0.1) and m["test_elbo_nats"] < 0
    config = json.loads((run / "config.json").read_text())
    assert config["width"] == 4 and "prior" not in config if name in ("gan", "deconv") else True


def test_quality_compares_runs_on_common_features(runs, tmp_path):
    out = tmp_path / "cmp" / "table.md"
    result = ppgen("quality", runs / "conv_vae", runs / "gan", runs / "vaegan", "--data", "digits", "--out", out)
    assert "| conv_vae | conv_vae |" in result.stdout
    table = out.read_text().splitlines()
    assert table[0].startswith("| run | model | FID |") and sum(line.startswith("| ") for line in table) == 5
    assert table[5].startswith("| real data (ceiling) |")
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["run"] for r in data["rows"]] == ["conv_vae", "gan", "vaegan"] and data["n_samples"] == 447
    assert out.with_suffix(".png").read_bytes()[:8] == PNG
    rows = {r["run"]: r for r in data["rows"]}
    for name in ("gan", "vaegan"):  # the same seeded classifier and samples as at the end of training
        assert rows[name]["fid"] == pytest.approx(metrics(runs / name)["fid"], rel=1e-3)
    assert rows["gan"]["test_elbo_nats"] is None and rows["vaegan"]["test_elbo_nats"] < 0
    assert all(r["fid"] > data["real"]["fid"] for r in data["rows"])


def test_eval_sample_and_resume_of_own_loop_runs(runs, tmp_path):
    for name in ("gan", "vaegan", "deconv"):
        png = tmp_path / f"{name}.png"
        ppgen("sample", runs / name, "-n", "8", "--out", png, "--device", "cpu")
        assert png.read_bytes()[:8] == PNG
    before = metrics(runs / "gan")
    assert "fid" in ppgen("eval", runs / "gan", "--device", "cpu").stdout
    assert metrics(runs / "gan")["fid"] == pytest.approx(before["fid"], rel=1e-3)
    gan_args = ["train", "gan", "--data", "digits", *GAN_FAST, "--lr", "2e-4", "--spectral-norm", "--out", runs / "gan"]
    one_line_error(ppgen(*gan_args, check=False), "already holds a run")
    gan_args[gan_args.index("--epochs") + 1] = "3"
    ppgen(*gan_args, "--resume")
    assert metrics(runs / "gan")["epochs"] == 3
    one_line_error(ppgen(*gan_args, "--resume", "--gradient-penalty", "1", check=False),
                   "gradient_penalty was 0.0, now 1.0")


@pytest.mark.parametrize("args, message", [
    (["train", "deconv", "--data", "digits"], "deconv needs images of at least 11x11"),
    (["train", "deconv", "--data", "sprites", "--task", "sr3"], "unknown restoration task 'sr3'"),
    (["train", "gan", "--data", "FLAT"], "has no image_shape"),
    (["train", "gan", "--data", "SMALL"], "height and width must be even and at least 8"),
    (["train", "vaegan", "--data", "FLAT"], "needs image data with an image_shape"),
    (["train", "conv_vae", "--data", "digits", "--guide", "vrnn_filtering"],
     "conv_vae does not take the guide 'vrnn_filtering'"),
])
def test_train_errors_are_one_line(args, message, tmp_path):
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).integers(0, 2, (60, 10)).astype(np.float32))
    np.save(tmp_path / "small.npy", np.random.default_rng(0).integers(0, 2, (60, 6, 6)).astype(np.float32))
    args = [{"FLAT": tmp_path / "flat.npy", "SMALL": tmp_path / "small.npy"}.get(a, a) for a in args]
    one_line_error(ppgen(*args, "--epochs", "1", "--out", tmp_path / "r", check=False), message)


def test_quality_errors_are_one_line(runs, tmp_path):
    out = tmp_path / "t.md"
    one_line_error(ppgen("quality", runs / "deconv", "--data", "sprites", "--out", out, check=False),
                   "SuperResolution is not a generative model")
    one_line_error(ppgen("quality", runs / "gan", "--data", "sprites", "--out", out, check=False),
                   "was trained on 'digits', not 'sprites'")
    one_line_error(ppgen("quality", tmp_path / "nope", "--data", "digits", "--out", out, check=False),
                   "run directory not found")
    assert not out.exists()


def test_help_lists_the_new_models_and_command():
    out = ppgen("--help").stdout
    for name in ("conv_vae", "gan", "vaegan", "deconv", "quality"):
        assert name in out
    train_help = ppgen("train", "--help").stdout
    for flag in ("--width", "--spectral-norm", "--no-spectral-norm", "--gradient-penalty", "--adversarial-weight",
                 "--feature-weight", "--task"):
        assert flag in train_help


def test_quality_takes_the_relative_path_the_run_was_trained_on(tmp_path, monkeypatch):
    from ppgen.data import write_idx
    from ppgen.runs import compare

    folder = tmp_path / "data" / "idxdir"
    folder.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8)).astype(np.uint8)
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "t10k-images-idx3-ubyte", images[:6])
    monkeypatch.chdir(tmp_path)

    class Reached(Exception):
        pass

    def sampled(*args):
        raise Reached  # past the check of the run's data

    # the run's config.json holds the absolute path (train resolves it)
    monkeypatch.setattr(compare, "load_run", lambda run_dir, device: (None, None, None, {"data": str(folder)}))
    monkeypatch.setattr(compare, "unit_samples", sampled)
    for spec in ("data/idxdir", "./data/../data/idxdir/", str(folder)):
        with pytest.raises(Reached):
            compare.compare_runs([tmp_path / "run"], spec)
    other = tmp_path / "data" / "other"
    other.symlink_to(folder)  # the same files by another name: abspath keeps the name the user gave
    with pytest.raises(ValueError, match=f"trained on '{folder}', not '{other}'"):
        compare.compare_runs([tmp_path / "run"], "data/other")
