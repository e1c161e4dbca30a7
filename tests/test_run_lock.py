"""One writer per run folder (ppgen.runs.lock) and the signals that end a run (issue 20, points
1 and 2): a second process that would write into a run folder in use is refused with one line
naming the holder and changes nothing; SIGTERM ends training as Ctrl-C does (exit 143, the
resume command); a run killed during its final evaluation is finished by ``--resume``.

The concurrent and signal cases run ``python -m ppgen`` in subprocesses, as a user would."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppgen import cli
from ppgen.infer.checkpoint import load_checkpoint, save_atomic
from ppgen.runs import lock

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
PPGEN = [sys.executable, "-m", "ppgen"]
TINY = ["--epochs", "2", "--hidden", "8", "--z-dim", "2", "--iwae-k", "5", "--quiet", "--device", "cpu"]


def run(capsys, *args) -> tuple[int, str]:
    """``ppgen ARGS`` in-process: (exit status, stderr)."""
    code = cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def one_line(code, err, message, status=2):
    assert code == status, err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def files_of(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != lock.LOCK_NAME}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    assert cli.main(["train", "vae", "--data", "digits", *TINY, "--out", str(out)]) == 0
    return out


# -- one writer per run folder ---------------------------------------------------------------------

def test_two_trainings_into_one_new_folder_leave_one_run(tmp_path):
    out = tmp_path / "run"
    procs = {seed: subprocess.Popen([*PPGEN, "train", "vae", *TINY, "--seed", str(seed), "--out", str(out)], env=ENV,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)}
    results = {seed: (p.wait(timeout=300), *p.communicate()) for seed, p in procs.items()}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 2], results
    winner = next(seed for seed, (code, _, _) in results.items() if code == 0)
    _, _, err = next(r for r in results.values() if r[0] == 2)
    # usually the loser meets the winner's lock; on a loaded machine the winner may have written
    # its run before the loser looked, which is refused as a folder in use by a run: one line either way
    refusals = (f"run folder {out} is in use by process ", "already holds a run", "is not empty and holds no ppgen run")
    assert any(r in err for r in refusals) and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if "is in use by process" in err:
        assert "(ppgen train vae" in err and f"--seed {winner}" in err, err
    # the folder holds one run: the winner's
    assert json.loads((out / "config.json").read_text())["seed"] == winner
    assert load_checkpoint(out / "checkpoint.pt")["config"]["seed"] == winner
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2


def test_a_held_lock_refuses_train_eval_report_and_resume_and_nothing_changes(tiny_run, tmp_path, capsys):
    before = files_of(tiny_run)
    with lock.hold(tiny_run):
        line = f"run folder {tiny_run} is in use by process {os.getpid()}"
        one_line(*run(capsys, "eval", tiny_run, "--iwae-k", "5", "--device", "cpu"), line)
        one_line(*run(capsys, "train", "vae", *TINY, "--epochs", "3", "--out", tiny_run, "--resume"), line)
        one_line(*run(capsys, "report", tiny_run, "--max-obs", "5"), line)
        one_line(*run(capsys, "sample", tiny_run, "-n", "4", "--out", tiny_run / "s.png"), line)
        # reading a run is not writing into it: sampling into another folder goes on
        code, err = run(capsys, "sample", tiny_run, "-n", "4", "--out", tmp_path / "s.png")
        assert code == 0, err
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        with lock.hold(fresh):
            one_line(*run(capsys, "train", "vae", *TINY, "--out", fresh), f"run folder {fresh} is in use by process")
        assert [p.name for p in fresh.iterdir()] == [lock.LOCK_NAME]  # no config.json, nothing else
    assert files_of(tiny_run) == before
    assert (tiny_run / lock.LOCK_NAME).read_text() == ""  # released: it names no one


def test_the_lock_names_its_holder_across_processes(tiny_run):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ppgen.runs import lock\n"
                               f"with lock.hold({str(tiny_run)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        evaluated = subprocess.run([*PPGEN, "eval", str(tiny_run), "--iwae-k", "5", "--device", "cpu"], env=ENV,
                                   capture_output=True, text=True, timeout=300)
        one_line(evaluated.returncode, evaluated.stderr, f"is in use by process {holder.pid} (python -c)")
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves its file, which blocks nothing: the lock, not the file, counts
    assert str(holder.pid) in (tiny_run / lock.LOCK_NAME).read_text()
    with lock.hold(tiny_run):
        pass


def test_under_torchrun_rank_0_holds_the_lock_and_says_so_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "ppgen",
               "train", "vae", *TINY, "--out", str(out)]
    with lock.hold(out):
        refused = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    said = [line for line in refused.stderr.splitlines() if "ppgen train:" in line]
    assert said == [f"[rank 0] ppgen train: error: run folder {out} is in use by process {os.getpid()} "
                    f"({lock.command_line()}); wait for it to end or choose another folder"], refused.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == [lock.LOCK_NAME]


def test_a_stale_lock_file_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / lock.LOCK_NAME).write_text("999999\nppgen train vae --out run\n")  # its process is gone
    code, err = run(capsys, "train", "vae", *TINY, "--epochs", "1", "--out", out)
    assert code == 0, err
    assert (out / "metrics.json").is_file()


def test_a_folder_that_cannot_take_the_lock_file_is_named(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lock.os, "open", refuse)
    with pytest.raises(PermissionError, match=f"cannot write to {tmp_path}"):
        with lock.hold(tmp_path):
            pass


# -- signals -----------------------------------------------------------------------------------------

def test_sigterm_ends_training_like_ctrl_c(tmp_path):
    out = tmp_path / "run"
    args = ["train", "vae", "--data", "digits", "--epochs", "1000", "--hidden", "8", "--z-dim", "2", "--quiet",
            "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen([*PPGEN, *args], env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ppgen train: stopped by SIGTERM; ") and f"the last checkpoint is {out / 'checkpoint.pt'}" in err
    assert err.strip().endswith("resume with: ppgen " + " ".join(args) + " --resume"), err
    state = load_checkpoint(out / "checkpoint.pt")  # intact
    assert 1 <= state["epoch"] < 1000
    assert (out / lock.LOCK_NAME).read_text() == ""  # the lock was let go


def test_sigterm_to_torchrun_is_said_once_with_the_resume_command(tmp_path):
    out = tmp_path / "run"
    args = ["train", "vae", "--epochs", "1000", "--hidden", "8", "--z-dim", "2", "--quiet", "--device", "cpu",
            "--out", str(out)]
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                 "-m", "ppgen", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)
        launcher.send_signal(signal.SIGTERM)  # torchrun passes it on to every process
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    said = [line for line in err.splitlines() if "ppgen train:" in line]
    assert len(said) == 1 and said[0].startswith("[rank 0] ppgen train: stopped by SIGTERM"), err[-3000:]
    assert said[0].endswith("resume with: torchrun --nproc-per-node=2 -m ppgen " + " ".join(args) + " --resume")
    assert "Traceback" not in err.split("ppgen train:")[0], err[-3000:]
    assert 1 <= load_checkpoint(out / "checkpoint.pt")["epoch"] < 1000


def test_resume_finishes_an_evaluation_that_was_cut_short(tiny_run, capsys):
    before = json.loads((tiny_run / "metrics.json").read_text())
    checkpoint = (tiny_run / "checkpoint.pt").read_bytes()
    (tiny_run / "metrics.json").unlink()  # as SIGKILL during the final evaluation leaves it
    code = cli.main(["train", "vae", "--data", "digits", *map(str, TINY), "--out", str(tiny_run), "--resume"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "training of" in captured.err and "finished (all 2 epochs, epoch 2)" in captured.err
    assert "finishing the evaluation" in captured.err
    after = json.loads((tiny_run / "metrics.json").read_text())
    timing = ("eval_seconds", "train_seconds")
    assert {k: v for k, v in after.items() if k not in timing} == {k: v for k, v in before.items() if k not in timing}
    assert (tiny_run / "checkpoint.pt").read_bytes() == checkpoint  # not trained again
    # with metrics.json there, the run is finished and says so, as before
    code, err = run(capsys, "train", "vae", "--data", "digits", *TINY, "--out", tiny_run, "--resume")
    one_line(code, err, "the run is finished: it trained 2 of 2 epochs")


def test_resume_finishes_the_evaluation_of_an_early_stopped_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "vae", *TINY, "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    save_atomic(out / "checkpoint.pt", {**state, "finished": True})  # as a run that stopped early at epoch 2
    (out / "metrics.json").unlink()
    capsys.readouterr()
    code = cli.main(["train", "vae", *TINY, "--epochs", "50", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "finished (stopped early, epoch 2) but its evaluation did not; finishing the evaluation" in err
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2


def test_a_stop_during_the_final_evaluation_names_the_command_that_finishes_it(tiny_run):
    args = cli.build_parser().parse_args(["train", "vae", *TINY, "--out", str(tiny_run)])
    said = cli.interrupted(args, ["train", "vae", *TINY, "--out", str(tiny_run)], "stopped by SIGTERM")
    assert said.startswith("stopped by SIGTERM after training finished (epoch 2")
    assert said.endswith(f"finish the evaluation with: ppgen train vae {' '.join(TINY)} --out {tiny_run} --resume")
