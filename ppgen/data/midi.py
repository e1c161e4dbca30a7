"""Piano rolls in and out of MIDI files, through ``mido``.

A roll is ``[T, 88]`` (numpy or torch), one frame per beat by default, column 0 = MIDI note
21 (A0); values above 0.5 count as sounding. Consecutive sounding frames of a key are one
held note in MIDI, and reading samples each key at the start of every frame, so a binary
roll survives ``read_midi(write_midi(roll))`` unchanged.
"""
from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

from .files import existing_file, reading
from .polyphonic import KEYS, LOWEST_NOTE

MIDI_HINT = "expected a standard MIDI file (.mid), such as one written by write_midi"


def as_roll(roll) -> np.ndarray:
    a = roll.detach().cpu().numpy() if hasattr(roll, "detach") else np.asarray(roll)
    if a.ndim != 2 or a.shape[1] != KEYS:
        raise ValueError(f"a piano roll must be [T, {KEYS}], got shape {a.shape}")
    return a


def write_midi(roll, path, *, bpm: float = 120.0, frames_per_beat: int = 1, velocity: int = 80,
               program: int = 0, ticks_per_beat: int = 480) -> Path:
    """Write a piano roll ``[T, 88]`` as a one-track MIDI file; returns the path."""
    on = as_roll(roll) > 0.5
    if ticks_per_beat % frames_per_beat:
        raise ValueError("ticks_per_beat must be a multiple of frames_per_beat")
    frame_ticks = ticks_per_beat // frames_per_beat
    padded = np.concatenate([np.zeros((1, KEYS), bool), on, np.zeros((1, KEYS), bool)])
    change = padded[1:].astype(int) - padded[:-1].astype(int)  # +1: key starts at frame t, -1: stops
    events = []  # (tick, order, message): note-offs before note-ons at the same tick
    for t, key in zip(*np.nonzero(change)):
        note = int(key) + LOWEST_NOTE
        if change[t, key] > 0:
            events.append((t * frame_ticks, 1, mido.Message("note_on", note=note, velocity=velocity)))
        else:
            events.append((t * frame_ticks, 0, mido.Message("note_off", note=note, velocity=0)))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
                            mido.Message("program_change", program=program, time=0)])
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1], e[2].note)):
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(str(path))
    return path


def read_midi(path, *, frames_per_beat: int = 1) -> np.ndarray:
    """Read a MIDI file (all tracks and channels) as a binary piano roll ``[T, 88]``: key k sounds in
    frame t when a note k is held at the start of frame t. Notes outside the piano are dropped."""
    path = existing_file(path, "MIDI file")
    # mido reports a foreign or truncated file as OSError, EOFError, ValueError or KeyError
    with reading(path, "MIDI file", MIDI_HINT, (ValueError, KeyError, IndexError)):
        midi = mido.MidiFile(str(path))
    frame_ticks = midi.ticks_per_beat / frames_per_beat
    notes, started = [], {}
    for track in midi.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                started.setdefault((msg.channel, msg.note), tick)
            elif msg.type in ("note_off", "note_on"):
                start = started.pop((msg.channel, msg.note), None)
                if start is not None:
                    notes.append((msg.note, start, tick))
    if not notes:
        return np.zeros((0, KEYS), dtype=np.float32)
    T = int(np.ceil(max(end for _, _, end in notes) / frame_ticks))
    roll = np.zeros((T, KEYS), dtype=np.float32)
    for note, start, end in notes:
        key = note - LOWEST_NOTE
        if 0 <= key < KEYS:
            roll[int(np.ceil(start / frame_ticks)):int(np.ceil(end / frame_ticks)), key] = 1.0
    return roll
