"""MIDI export/import and piano-roll figures; the VRNN run helpers that use them."""
from __future__ import annotations

import json

import mido
import numpy as np
import pytest
import torch

from ppgen.figures.piano_rolls import plot_continuations, plot_piano_rolls
from ppgen.data.midi import read_midi, write_midi
from ppgen.runs import vrnn as run


def random_roll(T=12, seed=0):
    return (np.random.default_rng(seed).random((T, 88)) < 0.08).astype(np.float32)


def test_midi_round_trip_keeps_every_note(tmp_path):
    roll = random_roll()
    roll[0, 0] = roll[3:7, 40] = roll[-1, 87] = 1.0          # extreme keys and a held note
    path = write_midi(roll, tmp_path / "piece.mid", bpm=90)
    midi = mido.MidiFile(str(path))                            # mido reads it back
    ons = [m for m in midi.tracks[0] if m.type == "note_on"]
    assert len(ons) == int((np.diff(np.vstack([np.zeros((1, 88)), roll]), axis=0) > 0).sum())
    assert any(m.type == "set_tempo" and m.tempo == mido.bpm2tempo(90) for m in midi.tracks[0])
    assert np.array_equal(read_midi(path), roll)


def test_midi_from_torch_and_with_several_frames_per_beat(tmp_path):
    roll = torch.from_numpy(random_roll(8, seed=1))
    path = write_midi(roll, tmp_path / "t.mid", frames_per_beat=4)
    assert np.array_equal(read_midi(path, frames_per_beat=4), roll.numpy())


def test_read_midi_of_a_file_written_elsewhere(tmp_path):
    """Velocity-0 note-offs, two tracks, an off-grid note and one outside the piano."""
    midi = mido.MidiFile(ticks_per_beat=96)
    a = mido.MidiTrack([mido.Message("note_on", note=60, velocity=64, time=0),
                        mido.Message("note_on", note=60, velocity=0, time=192),
                        mido.Message("note_on", note=10, velocity=64, time=0),
                        mido.Message("note_off", note=10, velocity=0, time=96)])
    b = mido.MidiTrack([mido.Message("note_on", note=72, velocity=50, time=48, channel=1),
                        mido.Message("note_off", note=72, velocity=0, time=150, channel=1)])
    midi.tracks += [a, b]
    midi.save(str(tmp_path / "x.mid"))
    roll = read_midi(tmp_path / "x.mid")
    assert roll.shape == (3, 88)
    assert roll[:, 60 - 21].tolist() == [1, 1, 0]
    assert roll[:, 72 - 21].tolist() == [0, 1, 1]   # starts at beat 0.5: first heard at beat 1
    assert roll.sum() == 4


def test_bad_roll_shape():
    with pytest.raises(ValueError, match=r"\[T, 88\]"):
        write_midi(np.zeros((4, 12)), "/tmp/never.mid")


def test_figures():
    fig = plot_piano_rolls([random_roll(), random_roll(seed=2)], ["a", "b"])
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "a"
    fig = plot_continuations(random_roll(4), [random_roll(6, s) for s in range(3)], truth=random_roll(6))
    assert len(fig.axes) == 4 and fig.axes[0].get_title() == "true continuation"
    assert fig.axes[1].get_images()[0].get_array().shape == (88, 10)


def test_vrnn_run_helpers(tmp_path):
    dataset = run.load_dataset("synthetic")
    model, guide = run.build({"model": "vrnn", "data": "synthetic", "z_dim": 3, "hidden": 16, "rnn": "lstm",
                              "guide": "vrnn_smoothing", "prior": None, "epochs": 1}, dataset)
    assert model.z_dim == 3 and model.rnn.kind == "lstm" and type(guide).__name__ == "SmoothingGuide"
    with pytest.raises(ValueError, match="unknown VRNN guide"):
        run.build({"guide": "diag_normal"}, dataset)
    with pytest.raises(ValueError, match="sequence data"):
        run.load_dataset("digits")
    m = run.metrics(model, guide, dataset, k=4)
    assert {"test_elbo_per_frame_nats", "test_iwae_per_frame_nats", "iwae_k", "val_elbo_per_frame_nats"} <= set(m)
    json.dumps(m)
    paths = run.save_figures(model, guide, dataset, tmp_path)
    assert [p.name for p in paths] == ["samples.png", "continuation.png"] and all(p.stat().st_size for p in paths)
    out = run.sample(model, 2, tmp_path / "gen" / "s.png", length=10)
    assert out["figure"].is_file() and [p.name for p in out["midi"]] == ["s_1.mid", "s_2.mid"]
    assert read_midi(out["midi"][0]).shape[1] == 88
    res = run.continue_run(model, guide, dataset, 8, 6, 2, tmp_path / "c.png", k=4)
    assert res["figure"].is_file() and len(res["midi"]) == 2
    assert read_midi(res["midi"][0]).shape[0] <= 14
    assert np.isfinite(res["continuation_log_lik_per_frame_nats"]) and res["continuation_log_lik_per_frame_nats"] < 0
