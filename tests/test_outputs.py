"""Outputs that neither lie nor overwrite (issue 20, point 6): ``ppgen sample``, ``continue``
and ``quality`` refuse, before any computing, what one figure cannot show and any file they
would replace (unless ``--force``), one line each, exit 2, the user's file unchanged."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppgen.figures.images import MAX_IMAGES
from ppgen.figures.piano_rolls import MAX_ROLLS
from ppgen.runs.files import check_output_files

ROOT = Path(__file__).resolve().parents[1]
# this checkout's ppgen, whatever the installed console script imports
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": os.environ.get("PPGEN_TEST_THREADS", "1")}
PNG = b"\x89PNG\r\n\x1a\n"
MINE = b"the user's own file"


def ppgen(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "ppgen", *map(str, args)], capture_output=True, text=True,
                            timeout=300, env=ENV, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"ppgen {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


def refused(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae"
    ppgen("train", "vae", "--data", "digits", "--epochs", "1", "--hidden", "16", "--z-dim", "2", "--iwae-k", "5",
          "--quiet", "--device", "cpu", "--out", out)
    return out


@pytest.fixture(scope="module")
def vrnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vrnn"
    ppgen("train", "vrnn", "--data", "synthetic", "--epochs", "1", "--hidden", "8", "--z-dim", "2", "--iwae-k", "2",
          "--quiet", "--device", "cpu", "--out", out)
    return out


def test_sample_refuses_more_images_than_a_figure_shows(vae, tmp_path):
    out = tmp_path / "s.png"
    refused(ppgen("sample", vae, "-n", 100000, "--out", out, "--device", "cpu", check=False), "-n 100000",
            str(MAX_IMAGES))
    assert not out.exists()
    ppgen("sample", vae, "-n", MAX_IMAGES, "--out", out, "--device", "cpu")  # the limit itself is drawn
    assert out.read_bytes()[:8] == PNG


def test_sample_refuses_to_replace_a_file_unless_forced(vae, tmp_path):
    out = tmp_path / "s.png"
    out.write_bytes(MINE)
    refused(ppgen("sample", vae, "-n", 4, "--out", out, "--device", "cpu", check=False), str(out), "--force")
    assert out.read_bytes() == MINE
    ppgen("sample", vae, "-n", 4, "--out", out, "--device", "cpu", "--force")
    assert out.read_bytes()[:8] == PNG


def test_quality_refuses_to_replace_the_files_beside_its_table(vae, tmp_path):
    for name in ("cmp.json", "cmp.png"):
        (tmp_path / name).write_bytes(MINE)
    out = tmp_path / "cmp.md"
    refused(ppgen("quality", vae, "--data", "digits", "--out", out, check=False),
            str(tmp_path / "cmp.json"), str(tmp_path / "cmp.png"), "--force")
    assert not out.exists() and all((tmp_path / n).read_bytes() == MINE for n in ("cmp.json", "cmp.png"))


def test_sequence_outputs_midi_files_included(vrnn, tmp_path):
    refused(ppgen("sample", vrnn, "-n", MAX_ROLLS + 1, "--out", tmp_path / "s.png", "--device", "cpu", check=False),
            f"-n {MAX_ROLLS + 1}", str(MAX_ROLLS))
    refused(ppgen("continue", vrnn, "-n", MAX_ROLLS + 1, "--out", tmp_path / "c.png", "--device", "cpu",
                  check=False), str(MAX_ROLLS))
    for command, stem in (("sample", "s"), ("continue", "c")):
        midi = tmp_path / f"{stem}_2.mid"
        midi.write_bytes(MINE)
        args = (command, vrnn, "-n", 2, "--out", tmp_path / f"{stem}.png", "--device", "cpu",
                *(("--prefix", 2, "--steps", 2, "--iwae-k", 1) if command == "continue" else ("--length", 4)))
        refused(ppgen(*args, check=False), str(midi), "--force")
        assert midi.read_bytes() == MINE and not (tmp_path / f"{stem}.png").exists()
        ppgen(*args, "--force")
        assert midi.read_bytes()[:4] == b"MThd" and (tmp_path / f"{stem}.png").read_bytes()[:8] == PNG


def test_check_output_files_is_the_one_rule(tmp_path):
    new, old = tmp_path / "new.txt", tmp_path / "old.txt"
    old.write_bytes(MINE)
    assert check_output_files([new]) == [new]
    with pytest.raises(FileExistsError, match="old.txt already exists; pass --force"):
        check_output_files([new, old])
    assert check_output_files([new, old], force=True) == [new, old]
    with pytest.raises(IsADirectoryError):
        check_output_files([tmp_path], force=True)
