"""Every failure a user can cause is one line that names the problem, exits non-zero and
leaves files as they were (issue 12). Most cases call ``ppgen.cli.main`` in-process (fast);
Ctrl-C and the working-folder cases run the console script as a user would."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppgen import cli
from ppgen.infer.checkpoint import load_checkpoint, save_atomic
from ppgen.infer.resume import RunFinishedError, check_epochs_left
from ppgen.runs import files

PPGEN = str(Path(sys.executable).parent / "ppgen")
TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--iwae-k", "5", "--quiet", "--device", "cpu"]


def run(capsys, *args) -> tuple[int, str]:
    """``ppgen ARGS`` in-process: (exit status, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse refuses bad arguments with status 2
        code = e.code
    return code, capsys.readouterr().err


def one_line(code, err, message, status=2):
    assert code == status, err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def snapshot(folder: Path) -> dict:
    """The run's files, byte for byte (not the lock file: each command takes the lock, tests/test_run_lock.py)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert cli.main(["train", "vae", "--data", "digits", *TINY, "--out", str(out)]) == 0
    return out


# -- nothing of the user's is overwritten ----------------------------------------------------------

def test_out_refuses_a_folder_of_other_files(tmp_path, capsys):
    mine = tmp_path / "d"
    mine.mkdir()
    (mine / "config.json").write_text("mine\n")
    code, err = run(capsys, "train", "vae", *TINY, "--out", mine)
    one_line(code, err, "is not empty and holds no ppgen run")
    assert (mine / "config.json").read_text() == "mine\n" and [p.name for p in mine.iterdir()] == ["config.json"]
    (mine / "config.json").write_text('{"model": "vae"}')  # JSON, but not a run of ppgen's
    one_line(*run(capsys, "train", "vae", *TINY, "--out", mine), "is not empty and holds no ppgen run")


def test_a_failed_resume_changes_no_file(tiny_run, capsys):
    before = snapshot(tiny_run)
    code, err = run(capsys, "train", "vae", "--data", "digits", *TINY, "--lr", "0.5", "--epochs", "3",
                    "--out", tiny_run, "--resume")
    one_line(code, err, "cannot resume: settings differ from the run's: lr was 0.001, now 0.5")
    assert snapshot(tiny_run) == before


def test_resume_of_a_finished_run_says_so_and_changes_nothing(tiny_run, capsys):
    before = snapshot(tiny_run)
    code, err = run(capsys, "train", "vae", "--data", "digits", *TINY, "--out", tiny_run, "--resume")
    one_line(code, err, "the run is finished: it trained 1 of 1 epochs; to train on, resume with more epochs")
    assert snapshot(tiny_run) == before


def test_an_early_stopped_run_is_finished():
    state = {"epoch": 40, "finished": True, "history": {"best_epoch": 30}}
    with pytest.raises(RunFinishedError, match="stopped early at epoch 40 \\(best epoch 30\\)"):
        check_epochs_left(state, 1000)
    check_epochs_left({"epoch": 40, "finished": False}, 41)  # epochs left: fine


def test_run_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_atomic(tmp_path / "checkpoint.pt", {"a": torch.zeros(1)})
        files.write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "metrics.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_the_run_records_the_values_it_used(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    nulls = [k for k, v in config.items() if v is None and k not in ("clip_norm", "patience")]
    assert not nulls, nulls  # clip_norm/patience None mean "off", the value used
    assert (config["z_dim"], config["hidden"], config["batch_size"], config["lr"]) == (2, 8, 128, 1e-3)
    assert config["prior"] == "normal" and config["guide"] == "diag_normal" and config["likelihood"] == "categorical"


# -- evaluation is seeded ---------------------------------------------------------------------------

def test_eval_gives_the_same_numbers_twice(tiny_run, capsys):
    numbers = []
    for _ in range(2):
        assert run(capsys, "eval", tiny_run, "--iwae-k", "5", "--device", "cpu")[0] == 0
        numbers.append(json.loads((tiny_run / "metrics.json").read_text()))
    assert numbers[0]["test_iwae_nats"] == numbers[1]["test_iwae_nats"]
    assert numbers[0]["test_elbo_nats"] == numbers[1]["test_elbo_nats"]
    assert numbers[0]["eval_seed"] == 0 and numbers[0]["eval_seconds"] > 0


# -- one line, not a traceback ----------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["sample", "RUN", "-n", "-5", "--out", "x.png"], "-5 is not a positive integer"),
    (["report", "RUN", "--max-obs", "0"], "0 is not a positive integer"),
    (["continue", "RUN", "--steps", "-3", "--out", "x.png"], "-3 is not a positive integer"),
    (["train", "vae", "--lr", "-1", "--out", "x"], "-1 is not a positive number"),
    (["train", "vae", "--epochs", "many", "--out", "x"], "'many' is not a number"),
])
def test_bad_numbers_are_refused_by_name(args, message, capsys):
    code, err = run(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_damaged_checkpoint_is_named(tiny_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "metrics.json"):
        (broken / name).write_bytes((tiny_run / name).read_bytes())
    (broken / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes()[:1000])  # truncated
    one_line(*run(capsys, "eval", broken, "--device", "cpu"), "checkpoint.pt is damaged or not a PyTorch checkpoint")


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_pickle_as_checkpoint_is_refused_not_run(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_bytes((tiny_run / "config.json").read_bytes())
    torch.save({"model": Payload()}, evil / "checkpoint.pt")
    one_line(*run(capsys, "eval", evil, "--device", "cpu"), "does not unpickle them")
    assert not (tmp_path / "pwned.txt").exists()


def test_broken_config_files_are_named(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())
    (run_dir / "config.json").write_text('{"model": "vae",')
    one_line(*run(capsys, "sample", run_dir, "--out", tmp_path / "s.png"), f"{run_dir / 'config.json'} is not valid JSON")
    (run_dir / "config.json").write_text('{"data": "digits"}')
    one_line(*run(capsys, "eval", run_dir), f"{run_dir / 'config.json'} has no 'model' entry")


def test_an_unwritable_output_folder_fails_before_any_computing(tiny_run, capsys, monkeypatch):
    # as root (CI) a read-only folder is still writable, so the refusal itself is simulated
    before = snapshot(tiny_run)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "TemporaryFile", refuse)
    computed = []
    monkeypatch.setattr("ppgen.runs.api.evaluate_run", lambda *a, **k: computed.append(1) or {})
    monkeypatch.setattr("ppgen.runs.report.diagnose", lambda *a, **k: computed.append(1) or {})
    for args in (["eval", tiny_run], ["report", tiny_run], ["sample", tiny_run, "--out", tiny_run / "s.png"]):
        one_line(*run(capsys, *args), f"cannot write to {tiny_run}")
    assert not computed and snapshot(tiny_run) == before


def test_options_that_do_not_apply_are_refused(capsys, tmp_path):
    one_line(*run(capsys, "train", "gan", "--rnn", "lstm", "--out", tmp_path / "g"),
             "gan does not take --rnn; its options: ")
    one_line(*run(capsys, "train", "gan", "--prior", "laplace", "--out", tmp_path / "g"),
             "gan does not take the prior 'laplace'")
    assert not (tmp_path / "g").exists()


def test_an_unexpected_error_is_one_line_too(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setitem(cli.HANDLERS, "eval", boom)
    code, err = run(capsys, "eval", "somewhere")
    one_line(code, err, "RuntimeError: something broke (unexpected; rerun with --debug for the traceback)", status=1)
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "eval", "somewhere"])


# -- as a user runs it: Ctrl-C, relative paths --------------------------------------------------------

def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(tmp_path):
    out = tmp_path / "run"
    args = [PPGEN, "train", "vae", "--data", "digits", "--epochs", "1000", "--hidden", "8", "--z-dim", "2", "--quiet",
            "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"the last checkpoint is {out / 'checkpoint.pt'} (epoch" in err and err.strip().endswith("--resume")
    state = load_checkpoint(out / "checkpoint.pt")  # intact
    assert 1 <= state["epoch"] < 1000


def test_relative_data_paths_are_stored_absolute(tmp_path):
    import numpy as np

    work = tmp_path / "work"
    work.mkdir()
    np.save(work / "x.npy", (np.random.default_rng(0).random((120, 16)) > 0.5).astype(np.float32))
    train = subprocess.run([PPGEN, "train", "vae", "--data", "x.npy", *TINY, "--out", "run"], cwd=work,
                           capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    assert json.loads((work / "run" / "config.json").read_text())["data"] == str(work / "x.npy")
    elsewhere = subprocess.run([PPGEN, "sample", str(work / "run"), "-n", "4", "--out", "s.png"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300)
    assert elsewhere.returncode == 0, elsewhere.stderr
    (work / "x.npy").unlink()
    gone = subprocess.run([PPGEN, "sample", str(work / "run"), "--out", "s2.png"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # a new file: an existing one is refused first (no --force)
    one_line(gone.returncode, gone.stderr, str(work / "x.npy"))
