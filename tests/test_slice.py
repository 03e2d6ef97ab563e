"""tools/slice.py: fixed-length and per-word clips in the data set layout, and every bad input.

Recordings are made here with numpy (tone bursts in noise, a 30 s 44.1 kHz stereo "crying"
recording) and, when espeak-ng and sox are installed, with tools/synth.py's speech. The full
disk is simulated two ways: a real 100 KiB tmpfs (only as root where mounting works, else
skipped) and a writer monkeypatched to raise ENOSPC (always). No TensorFlow.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import wavgen

from kwsd.audio import read_wav
from kwsd.dataset_layout import speaker_of
from kwsd.errors import StreamError
from kwsd.wordfinder import (
    MIN_LEVEL_DB,
    DropReason,
    WordSettings,
    energy_centroid,
    find_words,
    frame_levels_db,
)
from kwsd_tools import slice as slice_tool
from kwsd_tools.slice import (
    SettingError,
    apply_gain,
    centre_clip,
    check_label,
    check_speaker,
    clip_at,
    fixed_plan,
    max_gain_db,
    speaker_from_stem,
)

REPO = Path(__file__).resolve().parent.parent
RATE = 16000
Int16Array = npt.NDArray[np.int16]


# --------------------------------------------------------------------------------------
# Recordings.


def noise(seconds: float, rms: float = 0.003, seed: int = 1, rate: int = RATE) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).normal(0.0, rms, round(seconds * rate))


def add_burst(
    x: npt.NDArray[np.float64], start_s: float, length_s: float, hz: float = 1000.0, level: float = 0.3
) -> None:
    i, n = round(start_s * RATE), round(length_s * RATE)
    x[i : i + n] += level * np.sin(2 * np.pi * hz * np.arange(n) / RATE)


def int16(x: npt.NDArray[np.float64]) -> Int16Array:
    return np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)


#: (start, length) in seconds of the bursts in :func:`bursts_recording`; off the 10 ms grid on purpose.
BURSTS = [(1.0, 0.3), (3.2345, 0.25), (5.5071, 0.4), (8.0, 0.15)]


def bursts_recording(
    path: Path, bursts: list[tuple[float, float]] = BURSTS, seconds: float = 10.0
) -> Int16Array:
    x = noise(seconds)
    for start, length in bursts:
        add_burst(x, start, length)
    samples = int16(x)
    wavgen.write_wav(path, samples, RATE)
    return samples


CRY_RATE = 44100


def crying_recording(path: Path, seconds: float = 30.0) -> None:
    """A 440 Hz "cry" in stereo at 44.1 kHz: 0.2 on the left, 0.1 on the right (mono: 0.15)."""
    t = np.arange(round(seconds * CRY_RATE)) / CRY_RATE
    tone = np.sin(2 * np.pi * 440.0 * t)
    frames = np.stack([tone * 0.2, tone * 0.1], axis=1)
    wavgen.write_wav(path, wavgen.as_int16(frames), CRY_RATE)


def wav_header(path: Path) -> tuple[int, int, int, int]:
    """(channels, sample bytes, rate, frames)."""
    with wave.open(str(path), "rb") as wav:
        return wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()


def wav_samples(path: Path) -> Int16Array:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.int16)


def run(*argv: str | Path) -> int:
    return slice_tool.main([str(a) for a in argv])


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------------------
# Pure functions.


def test_frame_levels_are_rms_in_dbfs() -> None:
    half_scale_sine = int16(0.5 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE))
    levels = frame_levels_db(half_scale_sine, 320, 160)
    assert len(levels) == 100  # ceil(16000 / 160)
    # RMS of a sine of amplitude 0.5: 0.5 / sqrt(2) -> -9.03 dBFS.
    assert levels[:-1] == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.01)
    assert levels[-1] == pytest.approx(levels[0] - 3.01, abs=0.05)  # the last frame is half past the end
    silence = frame_levels_db(np.zeros(1000, np.int16), 320, 160)
    assert list(silence) == [MIN_LEVEL_DB] * 7
    assert len(frame_levels_db(np.zeros(5, np.int16), 320, 160)) == 1
    with pytest.raises(ValueError, match="multiple"):
        frame_levels_db(half_scale_sine, 300, 160)


def test_words_are_found_at_the_right_times_and_centred(tmp_path: Path) -> None:
    samples = bursts_recording(tmp_path / "take.wav")
    found = find_words(samples, RATE)
    assert found.noise_floor_db == pytest.approx(20 * math.log10(0.003), abs=1.0)
    assert found.dropped == ()
    assert len(found.words) == len(BURSTS)
    for word, (start_s, length_s) in zip(found.words, BURSTS, strict=True):
        # Each frame stands for the 10 ms at its centre: the edges are within a frame (20 ms).
        assert abs(word.start_sample / RATE - start_s) <= 0.015
        assert abs(word.end_sample / RATE - (start_s + length_s)) <= 0.015
        # A steady tone's energy centroid is its middle.
        middle = round(start_s * RATE) + round(length_s * RATE) / 2
        assert abs(word.centre_sample - middle) <= 16  # 1 ms


def test_close_parts_merge_and_short_or_long_ones_are_dropped() -> None:
    x = noise(8.0)
    add_burst(x, 1.0, 0.2)
    add_burst(x, 1.3, 0.2)  # 100 ms after the first: one word
    add_burst(x, 3.0, 0.04)  # a click
    add_burst(x, 5.0, 1.5)  # longer than a clip
    found = find_words(int16(x), RATE, WordSettings(min_gap_ms=200, min_word_ms=100, max_word_ms=1000))
    assert [(w.start_sample / RATE, w.end_sample / RATE) for w in found.words] == [
        (pytest.approx(1.0, abs=0.015), pytest.approx(1.5, abs=0.015))
    ]
    assert [(s.start_sample / RATE, r) for s, r in found.dropped] == [
        (pytest.approx(3.0, abs=0.015), DropReason.TOO_SHORT),
        (pytest.approx(5.0, abs=0.015), DropReason.TOO_LONG),
    ]
    # With a shorter --min_gap_ms the two halves are two words.
    split = find_words(int16(x), RATE, WordSettings(min_gap_ms=50))
    assert len(split.words) == 2


def test_quiet_parts_below_the_threshold_are_not_words() -> None:
    x = noise(4.0)
    add_burst(x, 1.0, 0.3, level=0.01)  # about 10 dB over a -50 dBFS floor: under the 15 dB threshold
    assert find_words(int16(x), RATE).words == ()
    assert len(find_words(int16(x), RATE, WordSettings(threshold_db=8)).words) == 1


def test_clips_take_the_recordings_own_audio_and_zeros_only_past_its_ends() -> None:
    samples = np.arange(1, 11, dtype=np.int16)
    assert list(clip_at(samples, 3, 4)) == [4, 5, 6, 7]
    assert list(clip_at(samples, -2, 5)) == [0, 0, 1, 2, 3]
    assert list(clip_at(samples, 8, 4)) == [9, 10, 0, 0]
    assert list(clip_at(samples, 20, 3)) == [0, 0, 0]
    assert list(centre_clip(samples, 4, 4)) == [3, 4, 5, 6]  # samples[4] == 5 at index 4 // 2
    assert list(centre_clip(samples, 0, 5)) == [0, 0, 1, 2, 3]
    assert energy_centroid(np.array([0, 0, 100, 0, 100, 0], np.int16), 0, 6) == 3
    assert energy_centroid(np.zeros(6, np.int16), 2, 6) == 4


def test_gain_is_exact_and_counts_what_it_clips() -> None:
    samples = np.array([100, -100, 16383, 16384, -16384, -16385, 0], np.int16)
    doubled, clipped = apply_gain(samples, 20 * math.log10(2))
    assert list(doubled) == [200, -200, 32766, 32767, -32768, -32768, 0]
    assert clipped == 2  # 32768 and -32770 do not fit
    same, none = apply_gain(samples, 0.0)
    assert list(same) == list(samples) and none == 0
    assert list(apply_gain(samples, -20 * math.log10(2))[0]) == [50, -50, 8192, 8192, -8192, -8192, 0]
    assert max_gain_db(np.array([3277, -100], np.int16)) == 19.9  # 20.0 would clip 3277
    assert max_gain_db(np.zeros(3, np.int16)) == math.inf


@pytest.mark.parametrize(
    ("seconds", "hop_s", "pad", "starts", "skipped"),
    [
        (30, 5, False, [0, 5, 10, 15, 20, 25], []),
        (32, 5, False, [0, 5, 10, 15, 20, 25], [(30, 32)]),
        (32, 5, True, [0, 5, 10, 15, 20, 25, 30], []),
        (3, 5, False, [], [(0, 3)]),
        (3, 5, True, [0], []),
        (31, 2.5, False, [2.5 * k for k in range(11)], [(30, 31)]),
        (31, 2.5, True, [2.5 * k for k in range(12)], []),
        (32, 10, False, [0, 10, 20], [(30, 32)]),
        (28, 10, False, [0, 10, 20], []),  # 25..28 s lies in the gap --hop_ms leaves anyway
    ],
)
def test_fixed_plan(seconds: int, hop_s: float, pad: bool, starts: list[float], skipped: list[Any]) -> None:
    rate = 100
    plan = fixed_plan(seconds * rate, 5 * rate, round(hop_s * rate), pad_tail=pad, rate_hz=rate)
    assert [c.start_sample / rate for c in plan.clips] == starts
    assert [(s.start_sample / rate, s.end_sample / rate) for s in plan.skipped] == skipped


# --------------------------------------------------------------------------------------
# Names.


@pytest.mark.parametrize(
    ("label", "words", "expected"),
    [
        ("", True, "--label '': empty"),
        (".", True, "--label '.': not a folder/file name"),
        ("..", True, "--label '..': not a folder/file name"),
        ("a/b", True, "--label 'a/b': contains a slash"),
        ("a\\b", True, "--label 'a\\\\b': contains a slash"),
        ("ye\ns", True, "--label 'ye\\ns': contains the control character '\\n'"),
        ("yes\x00", True, "--label 'yes\\x00': contains the control character '\\x00'"),
        (" yes", True, "--label ' yes': has spaces at its ends"),
        (".yes", True, "--label '.yes': starts with '.'"),
        ("_unknown_", True, "--label '_unknown_': names starting with '_' are reserved"),
        ("_silence_", False, "--label '_silence_': names starting with '_' are reserved"),
        ("_background_noise_", True, "--label '_background_noise_': background noise is cut with --fixed"),
        ("Yes", True, "--label 'Yes': has upper-case letters"),
        ("yes,no", True, "--label 'yes,no': contains ','"),
    ],
)
def test_bad_labels_are_refused_naming_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, words: bool, expected: str
) -> None:
    with pytest.raises(SettingError, match="^" + expected.replace("\\", "\\\\").replace("(", "\\(")):
        check_label(label, fixed=not words)
    bursts_recording(tmp_path / "take.wav")
    mode = ["--words"] if words else ["--fixed", "1000"]
    assert run(tmp_path / "take.wav", "--out", tmp_path / "data", "--label", label, *mode) == 64
    assert capsys.readouterr().err.startswith(f"slice: error: {expected}")
    assert listing(tmp_path / "data") == []


def test_background_noise_is_a_label_for_fixed_clips_only(tmp_path: Path) -> None:
    assert check_label("_background_noise_", fixed=True) == "_background_noise_"
    bursts_recording(tmp_path / "hum.wav")
    assert (
        run(
            tmp_path / "hum.wav",
            "--out",
            tmp_path / "data",
            "--label",
            "_background_noise_",
            "--fixed",
            "5000",
        )
        == 0
    )
    assert listing(tmp_path / "data" / "_background_noise_") == ["hum_nohash_0.wav", "hum_nohash_1.wav"]


@pytest.mark.parametrize(
    ("speaker", "expected"),
    [
        ("", "--speaker '': empty"),
        ("..", "--speaker '..': not a folder/file name"),
        ("ann/bob", "--speaker 'ann/bob': contains a slash"),
        ("ann\tx", "--speaker 'ann\\tx': contains the control character '\\t'"),
        ("_ann", "--speaker '_ann': names starting with '_' are reserved"),
        ("ann_nohash_2", "--speaker 'ann_nohash_2': contains '_nohash_'"),
        (".ann", "--speaker '.ann': starts with '.'"),
    ],
)
def test_bad_speakers_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], speaker: str, expected: str
) -> None:
    with pytest.raises(SettingError):
        check_speaker(speaker)
    bursts_recording(tmp_path / "take.wav")
    argv = [
        tmp_path / "take.wav",
        "--out",
        tmp_path / "data",
        "--label",
        "yes",
        "--words",
        "--speaker",
        speaker,
    ]
    assert run(*argv) == 64
    assert capsys.readouterr().err.startswith(f"slice: error: {expected}")


def test_speaker_names_made_from_file_names() -> None:
    assert speaker_from_stem(Path("/x/Baby cry 2024-01-05 10:00.wav")) == "Baby-cry-2024-01-05-10-00"
    assert speaker_from_stem(Path("_take_nohash_3.WAV")) == "take-nohash-3"
    assert speaker_from_stem(Path("anna.take1.wav")) == "anna.take1"
    assert speaker_from_stem(Path("zoë.wav")) == "zoë"
    # One recording's clips share the name the split hashes.
    assert speaker_of(slice_tool.clip_name("Baby-cry-2024-01-05-10-00", 7)) == "Baby-cry-2024-01-05-10-00"
    with pytest.raises(SettingError, match=r"give --speaker NAME"):
        speaker_from_stem(Path("???.wav"))


def test_an_input_name_that_makes_no_speaker_asks_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bursts_recording(tmp_path / "___.wav")
    assert run(tmp_path / "___.wav", "--out", tmp_path / "data", "--label", "yes", "--words") == 64
    assert "give --speaker NAME" in capsys.readouterr().err
    assert (
        run(tmp_path / "___.wav", "--out", tmp_path / "data", "--label", "yes", "--words", "--speaker", "ann")
        == 0
    )
    assert listing(tmp_path / "data" / "yes") == [f"ann_nohash_{k}.wav" for k in range(4)]


# --------------------------------------------------------------------------------------
# Fixed-length clips.


def test_crying_recording_cut_into_5_s_clips_with_gain_and_resampling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "cry 2024-01-05.wav"
    crying_recording(source)
    data = tmp_path / "data"
    gain = 20 * math.log10(2)
    argv = [source, "--out", data, "--label", "crying", "--fixed", "5000", "--sample_rate", "22050"]
    assert run(*argv, "--gain_db", f"{gain!r}") == 0
    names = [f"cry-2024-01-05_nohash_{k}.wav" for k in range(6)]
    assert listing(data / "crying") == names
    reference = read_wav(source, 22050)  # kwsd's reader: mono, resampled
    assert len(reference) == 30 * 22050
    for k, name in enumerate(names):
        path = data / "crying" / name
        assert wav_header(path) == (1, 2, 22050, 5 * 22050)
        clip = wav_samples(path)
        expected, _ = apply_gain(reference[k * 110250 : (k + 1) * 110250], gain)
        assert np.array_equal(clip, expected)
        # The gain doubled the mono mix (0.15 of full scale)...
        assert np.max(np.abs(clip)) == pytest.approx(2 * 0.15 * 32768, rel=0.01)
        # ...and the tone is still 440 Hz at the new rate (0.2 Hz bins).
        spectrum = np.abs(np.fft.rfft(clip.astype(np.float64)))
        assert np.argmax(spectrum) * 22050 / len(clip) == pytest.approx(440.0, abs=0.2)
    out = capsys.readouterr().out
    assert "44100 Hz, 2 channels, pcm16, 30.000 s; resampled to 22050 Hz" in out
    assert f"wrote 6 clips of 5000 ms: crying/{names[0]} ... crying/{names[5]}" in out
    assert "skipped" not in out


def test_the_tail_is_dropped_and_reported_or_padded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = noise(7.5, rms=0.1)
    wavgen.write_wav(tmp_path / "rec.wav", int16(x), RATE)
    data = tmp_path / "data"
    assert run(tmp_path / "rec.wav", "--out", data, "--label", "noise", "--fixed", "2000") == 0
    out = capsys.readouterr().out
    assert "skipped 6.000-7.500 s: a tail of 1.500 s, shorter than one clip (--pad_tail keeps it" in out
    assert listing(data / "noise") == [f"rec_nohash_{k}.wav" for k in range(3)]
    assert run(tmp_path / "rec.wav", "--out", data, "--label", "padded", "--fixed", "2000", "--pad_tail") == 0
    assert len(listing(data / "padded")) == 4
    last = wav_samples(data / "padded" / "rec_nohash_3.wav")
    assert np.array_equal(last[: 3 * RATE // 2], int16(x)[6 * RATE :])
    assert not last[3 * RATE // 2 :].any()
    assert "rec_nohash_3.wav (6.000-8.000 s): the tail, padded with zeros" in capsys.readouterr().out


def test_overlapping_clips_with_hop(tmp_path: Path) -> None:
    samples = int16(noise(10.0, rms=0.1))
    wavgen.write_wav(tmp_path / "rec.wav", samples, RATE)
    data = tmp_path / "data"
    assert run(tmp_path / "rec.wav", "--out", data, "--label", "x", "--fixed", "1000", "--hop_ms", "250") == 0
    names = listing(data / "x")
    assert len(names) == 37  # starts 0, 0.25, ..., 9.0 s
    for k in (0, 1, 36):
        assert np.array_equal(
            wav_samples(data / "x" / f"rec_nohash_{k}.wav"), samples[k * 4000 : k * 4000 + RATE]
        )


def test_clipping_is_counted_per_clip_and_no_clip_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "cry.wav"
    crying_recording(source, seconds=10.0)
    data = tmp_path / "data"
    argv = [source, "--out", data, "--label", "crying", "--fixed", "5000", "--gain_db", "20"]
    assert run(*argv, "--no_clip") == 64
    err = capsys.readouterr().err
    assert err.startswith("slice: error: --gain_db 20 with --no_clip: nothing written; ")
    reference = read_wav(source, RATE)
    headroom = math.floor(200 * math.log10(32767 / reference.max())) / 10
    assert "2 of 2 clips would clip (clip start, samples): 0.000 s (" in err
    assert f"at most +{headroom:.1f} dB would not clip" in err
    assert listing(data / "crying") == []

    assert run(*argv) == 0
    scaled = np.rint(reference.astype(np.float64) * 10.0)
    counts = [int(np.count_nonzero(np.abs(scaled[k * 80000 : (k + 1) * 80000]) > 32767)) for k in range(2)]
    assert min(counts) > 0
    warning = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert (
        f"--gain_db 20 clipped samples in 2 of 2 clips (clip, samples at full scale): "
        f"crying/cry_nohash_0.wav ({counts[0]}), crying/cry_nohash_1.wav ({counts[1]}); "
        f"at most +{headroom:.1f} dB would not clip" in warning
    )
    assert "2 clipped by the gain" in capsys.readouterr().out
    # Within the headroom --no_clip lets it through.
    assert (
        run(
            source,
            "--out",
            data,
            "--label",
            "crying",
            "--fixed",
            "5000",
            "--gain_db",
            str(headroom),
            "--no_clip",
        )
        == 0
    )


def test_a_folder_input_means_its_wav_files_sorted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "takes"
    folder.mkdir()
    for name in ("b.wav", "a.WAV", ".hidden.wav"):
        wavgen.write_wav(folder / name, int16(noise(1.0, rms=0.1)), RATE)
    (folder / "notes.txt").write_text("not audio")
    assert run(folder, "--out", tmp_path / "data", "--label", "x", "--fixed", "1000") == 0
    out = capsys.readouterr().out
    assert out.index("a.WAV:") < out.index("b.wav:")
    assert listing(tmp_path / "data" / "x") == ["a_nohash_0.wav", "b_nohash_0.wav"]
    assert "total: wrote 2 clips from 2 inputs" in out


# --------------------------------------------------------------------------------------
# Word clips.


def test_word_clips_are_centred_and_padded_with_the_recordings_audio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bursts = [(0.1, 0.2), *BURSTS]  # the first word is 100 ms from the start: zeros before it
    samples = bursts_recording(tmp_path / "take.wav", bursts)
    data = tmp_path / "data"
    assert run(tmp_path / "take.wav", "--out", data, "--label", "yes", "--words", "--speaker", "ann") == 0
    names = [f"ann_nohash_{k}.wav" for k in range(len(bursts))]
    assert listing(data / "yes") == names
    found = find_words(samples, RATE)
    out = capsys.readouterr().out
    for name, word, (start_s, length_s) in zip(names, found.words, bursts, strict=True):
        clip = wav_samples(data / "yes" / name)
        assert wav_header(data / "yes" / name) == (1, 2, RATE, RATE)
        assert np.array_equal(clip, centre_clip(samples, word.centre_sample, RATE))
        # The burst sits in the middle of the clip (its energy centroid within 1 ms of 500 ms).
        assert abs(energy_centroid(clip, 0, RATE) - RATE // 2) <= 16
        lead = round(start_s * RATE) - (word.centre_sample - RATE // 2)
        assert abs(lead - (RATE - round(length_s * RATE)) / 2) <= 16
        span = f"{word.start_sample / RATE:.3f}-{word.end_sample / RATE:.3f} s"
        assert f"{span}, centre {word.centre_sample / RATE:.3f} s -> yes/{name}" in out
    first = wav_samples(data / "yes" / names[0])
    zeros = RATE // 2 - found.words[0].centre_sample
    assert zeros > 0 and not first[:zeros].any()
    assert np.array_equal(first[zeros:], samples[: RATE - zeros])
    assert "wrote 5 clips of 1000 ms" in out


def test_skipped_words_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = noise(6.0)
    add_burst(x, 1.0, 0.3)
    add_burst(x, 2.5, 0.05)
    add_burst(x, 3.5, 1.2)
    wavgen.write_wav(tmp_path / "take.wav", int16(x), RATE)
    assert run(tmp_path / "take.wav", "--out", tmp_path / "data", "--label", "yes", "--words") == 0
    out = capsys.readouterr().out
    assert "  skipped 2.495-2.555 s: 60 ms, shorter than --min_word_ms (100 ms)" in out
    assert "  skipped 3.495-4.705 s: 1210 ms, longer than the clip (1000 ms)" in out
    assert "total: wrote 1 clip from 1 input" in out
    assert "2 parts skipped" in out


def test_neighbouring_words_inside_a_clip_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bursts_recording(tmp_path / "take.wav", [(1.0, 0.2), (1.6, 0.2)], seconds=4.0)
    assert run(tmp_path / "take.wav", "--out", tmp_path / "data", "--label", "yes", "--words") == 0
    out = capsys.readouterr().out
    assert "yes/take_nohash_0.wav (0.600-1.600 s); the clip also holds part of word 2 (1.595-1.805 s)" in out


@pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")
def test_spoken_words_from_espeak(tmp_path: Path) -> None:
    from kwsd_tools import synth

    voice = synth.make_voices(1, 1)[0]
    word = synth.trim(synth.speak(voice, "yes", voice.pitch, voice.speed_wpm))
    word *= 0.5 / np.max(np.abs(word))
    gap = round(0.7 * RATE)
    x = noise((5 * len(word) + 6 * gap) / RATE, rms=0.001, seed=2)
    starts = [gap + k * (len(word) + gap) for k in range(5)]
    for start in starts:
        x[start : start + len(word)] += word
    samples = int16(x)
    wavgen.write_wav(tmp_path / "yes.wav", samples, RATE)
    data = tmp_path / "data"
    assert run(tmp_path / "yes.wav", "--out", data, "--label", "yes", "--words") == 0
    assert listing(data / "yes") == [f"yes_nohash_{k}.wav" for k in range(5)]
    found = find_words(samples, RATE)
    # synth.trim keeps 10 ms before the first and after the last loud sample.
    for found_word, start in zip(found.words, starts, strict=True):
        assert abs(found_word.start_sample - start) <= 0.02 * RATE
        assert abs(found_word.end_sample - (start + len(word))) <= 0.02 * RATE
    clip = wav_samples(data / "yes" / "yes_nohash_2.wav")
    assert abs(energy_centroid(clip, 0, RATE) - RATE // 2) <= 16


# --------------------------------------------------------------------------------------
# Numbering, never overwriting, dry runs.


def test_numbering_continues_after_existing_files_which_stay_untouched(tmp_path: Path) -> None:
    bursts_recording(tmp_path / "take.wav")
    folder = tmp_path / "data" / "yes"
    folder.mkdir(parents=True)
    existing = {
        "take_nohash_0.wav": b"zero",
        "take_nohash_7.wav": b"seven",
        "take_nohash_x.wav": b"not a number",
        "other_nohash_9.wav": b"another speaker",
    }
    for name, content in existing.items():
        (folder / name).write_bytes(content)
    assert run(tmp_path / "take.wav", "--out", tmp_path / "data", "--label", "yes", "--words") == 0
    new = [f"take_nohash_{k}.wav" for k in range(8, 12)]
    assert listing(folder) == sorted([*existing, *new])
    for name, content in existing.items():
        assert (folder / name).read_bytes() == content
    # Twice: the numbers go on, and the new files are ordinary 0644-style files.
    assert run(tmp_path / "take.wav", "--out", tmp_path / "data", "--label", "yes", "--words") == 0
    assert "take_nohash_15.wav" in listing(folder)
    umask = os.umask(0)
    os.umask(umask)
    assert (folder / "take_nohash_15.wav").stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_name_taken_meanwhile_is_skipped_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    bursts_recording(tmp_path / "take.wav")
    folder = tmp_path / "data" / "yes"
    folder.mkdir(parents=True)
    (folder / "take_nohash_1.wav").write_bytes(b"someone else's")
    # As if another process wrote take_nohash_1.wav after the folder was scanned.
    monkeypatch.setattr(slice_tool, "next_number", lambda folder, speaker: 0)
    if not hard_links:  # a FAT-formatted USB stick

        def no_link(src: object, dst: object) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(slice_tool.os, "link", no_link)
    assert run(tmp_path / "take.wav", "--out", tmp_path / "data", "--label", "yes", "--words") == 0
    assert listing(folder) == [f"take_nohash_{k}.wav" for k in range(5)]
    assert (folder / "take_nohash_1.wav").read_bytes() == b"someone else's"
    assert wav_header(folder / "take_nohash_4.wav") == (1, 2, RATE, RATE)


def test_dry_run_writes_nothing_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bursts_recording(tmp_path / "take.wav")
    data = tmp_path / "data"
    assert run(tmp_path / "take.wav", "--out", data, "--label", "yes", "--words", "--dry_run") == 0
    assert not data.exists()
    out = capsys.readouterr().out
    assert "would write 4 clips of 1000 ms: yes/take_nohash_0.wav ... yes/take_nohash_3.wav" in out
    assert out.rstrip().endswith("dry run: nothing written")


# --------------------------------------------------------------------------------------
# Bad input and output.


def test_flags_of_the_other_mode_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bursts_recording(tmp_path / "take.wav")
    base = [tmp_path / "take.wav", "--out", tmp_path / "data", "--label", "yes"]
    assert run(*base, "--words", "--hop_ms", "500", "--pad_tail") == 64
    assert "--hop_ms, --pad_tail: only with --fixed (this run uses --words)" in capsys.readouterr().err
    assert run(*base, "--fixed", "1000", "--min_gap_ms", "10") == 64
    assert "--min_gap_ms: only with --words" in capsys.readouterr().err
    assert run(*base, "--fixed", "0") == 64
    assert "--fixed: expected a duration of at least one sample in ms, got 0" in capsys.readouterr().err
    assert run(*base, "--words", "--sample_rate", "0") == 64
    assert "--sample_rate: expected 1000..384000 Hz, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        run(*base, "--words", "--fixed", "1000")
    assert usage.value.code == 2


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (None, 66, "{path}: no such file (expected a WAV file)"),
        (b"", 65, "{path}: empty file (0 bytes, expected a WAV file)"),
        (b"hello, not audio", 65, "{path}: not a WAV file (starts with b'hell', expected b'RIFF')"),
        ("folder", 66, "{path}: a folder with no .wav files (expected WAV files)"),
    ],
)
def test_unusable_inputs_are_named_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: bytes | str | None, code: int, message: str
) -> None:
    good = tmp_path / "good.wav"
    bursts_recording(good)
    bad = tmp_path / "bad.wav"
    if make == "folder":
        bad.mkdir()
    elif isinstance(make, bytes):
        bad.write_bytes(make)
    assert run(good, bad, "--out", tmp_path / "data", "--label", "yes", "--words") == code
    assert capsys.readouterr().err == f"slice: error: {message.format(path=bad)}\n"
    assert listing(tmp_path / "data" / "yes") == []


def test_an_input_cut_off_mid_sample_stops_the_run_keeping_earlier_clips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bursts_recording(tmp_path / "a.wav")
    bursts_recording(tmp_path / "b.wav")

    def broken(path: object, rate: int) -> Int16Array:
        if str(path).endswith("b.wav"):
            raise StreamError(f"{path}: stream ended mid-sample")
        return read_wav(path, rate)  # type: ignore[arg-type]

    monkeypatch.setattr(slice_tool, "read_wav", broken)
    assert (
        run(tmp_path / "a.wav", tmp_path / "b.wav", "--out", tmp_path / "data", "--label", "yes", "--words")
        == 65
    )
    captured = capsys.readouterr()
    assert captured.err == f"slice: error: {tmp_path / 'b.wav'}: stream ended mid-sample\n"
    assert "stopped after 4 clips written and kept" in captured.out
    assert len(listing(tmp_path / "data" / "yes")) == 4


@contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[None]:
    """A tmpfs at ``where`` (root only, and only where mounting is allowed; else the test is skipped)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_an_unwritable_output_folder_stops_before_cutting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bursts_recording(tmp_path / "take.wav")
    assert run(tmp_path / "take.wav", "--out", "/proc/kwsd-slice-test", "--label", "yes", "--words") == 73
    assert capsys.readouterr().err.startswith("slice: error: /proc/kwsd-slice-test/yes: cannot write there (")
    (tmp_path / "file").write_text("in the way")
    assert run(tmp_path / "take.wav", "--out", tmp_path / "file", "--label", "yes", "--words") == 73
    assert (
        capsys.readouterr().err
        == f"slice: error: {tmp_path / 'file' / 'yes'}: cannot write there (Not a directory)\n"
    )


def test_a_read_only_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bursts_recording(tmp_path / "take.wav")
    data = tmp_path / "data"
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount instead
        context = mounted_tmpfs(data, "ro,size=64k")
        expected = f"slice: error: {data / 'yes'}: cannot write there (read-only file system)\n"
    else:
        (data / "yes").mkdir(parents=True)
        (data / "yes").chmod(0o555)
        context = contextmanager(lambda: (yield))()
        expected = f"slice: error: {data / 'yes'}: cannot write there (Permission denied)\n"
    with context:
        assert run(tmp_path / "take.wav", "--out", data, "--label", "yes", "--words") == 73
        assert capsys.readouterr().err == expected
        assert listing(data / "yes") == []
    if os.geteuid() != 0:
        (data / "yes").chmod(0o755)


def test_a_full_disk_keeps_what_was_saved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real 100 KiB tmpfs: three 1 s clips (32 KiB each) fit, the fourth does not."""
    wavgen.write_wav(tmp_path / "rec.wav", int16(noise(10.0, rms=0.1)), RATE)
    data = tmp_path / "data"
    with mounted_tmpfs(data, "size=100k"):
        assert run(tmp_path / "rec.wav", "--out", data, "--label", "x", "--fixed", "1000") == 73
        captured = capsys.readouterr()
        kept = listing(data / "x")
        assert kept == [f"rec_nohash_{k}.wav" for k in range(3)]  # no temporary file left either
        for name in kept:
            assert wav_header(data / "x" / name) == (1, 2, RATE, RATE)
        assert (
            captured.err == f"slice: error: {data / 'x'}: cannot write a clip (no space left on the device)\n"
        )
        assert "  wrote 3 clips of 1000 ms: x/rec_nohash_0.wav ... x/rec_nohash_2.wav" in captured.out
        assert captured.out.rstrip().endswith(f"stopped after 3 clips written and kept (in {data / 'x'})")


def test_a_full_disk_simulated_by_the_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer raises ENOSPC half-way through the third clip (works without root)."""
    wavgen.write_wav(tmp_path / "rec.wav", int16(noise(10.0, rms=0.1)), RATE)
    real_write = slice_tool.write_wav
    calls = []

    def filling_up(path: Path, samples: Int16Array, rate: int) -> None:
        calls.append(path)
        if len(calls) == 3:
            real_write(path, samples[: len(samples) // 2], rate)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, samples, rate)

    monkeypatch.setattr(slice_tool, "write_wav", filling_up)
    data = tmp_path / "data"
    assert run(tmp_path / "rec.wav", "--out", data, "--label", "x", "--fixed", "1000") == 73
    captured = capsys.readouterr()
    assert captured.err == f"slice: error: {data / 'x'}: cannot write a clip (no space left on the device)\n"
    assert listing(data / "x") == ["rec_nohash_0.wav", "rec_nohash_1.wav"]  # the half-written one is gone
    assert not calls[2].exists()
    assert "stopped after 2 clips written and kept" in captured.out


def test_runs_as_a_script_and_explains_the_speaker_name() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "slice.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0
    help_text = " ".join(done.stdout.split())
    assert "all clips with one name stay in one partition" in help_text
    assert "DATA_DIR/<label>/<speaker>_nohash_<n>.wav" in help_text
