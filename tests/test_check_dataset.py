"""tools/check_dataset.py: the report, its verdict and exit code, bad input, and --fix.

Data sets are written here with numpy, kwsd.audio.write_wav and tests/wavgen.py (every
encoding, malformed files); no TensorFlow. Partitions come from the real split: speakers are
picked by :func:`which_set` so that each lands where the test needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kwsd.audio import open_audio, write_wav
from kwsd_tools import check_dataset as cd
from kwsd_tools.training.dataset import DatasetSettings, load_dataset, read_samples
from tests import wavgen
from tests.helpers import speakers

RATE = 16000
REPO = Path(__file__).resolve().parent.parent
Int16Array = npt.NDArray[np.int16]


TRAINING, VALIDATION, TESTING = (speakers(p, 1)[0] for p in ("training", "validation", "testing"))
_tone_index = iter(range(1_000_000))


def tone(duration_ms: int = 1000, level: float = 0.3, rate: int = RATE) -> npt.NDArray[np.float64]:
    """A sine at a frequency no other call gives (so no two clips are identical), full scale 1.0."""
    hz = 200 + 7 * next(_tone_index)
    return level * np.sin(2 * np.pi * hz * np.arange(rate * duration_ms // 1000) / rate)


def int16(signal: npt.NDArray[np.float64]) -> Int16Array:
    return wavgen.as_int16(signal)


def clip(root: Path, rel: str, samples: Int16Array | None = None, rate: int = RATE) -> Path:
    """A 16-bit mono WAV at ``root/rel`` (a fresh tone unless ``samples``)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, int16(tone()) if samples is None else samples, rate)
    return path


def clean_set(root: Path, words: tuple[str, ...] = ("yes", "no"), per_speaker: int = 3) -> Path:
    """``per_speaker`` clips of each word from one speaker per partition, and 2 s of noise."""
    for word in words:
        for speaker in (TRAINING, VALIDATION, TESTING):
            for n in range(per_speaker):
                clip(root, f"{word}/{speaker}_nohash_{n}.wav")
    noise = np.random.default_rng(1).normal(0, 0.05, 2 * RATE)
    clip(root, "_background_noise_/white.wav", int16(noise))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cd.main(list(argv))
    out = capsys.readouterr().out
    return code, out


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out = run(capsys, *argv, "--json")
    return code, json.loads(out)


def finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    """The one finding of ``check`` among errors, warnings and notes."""
    found = [f for kind in ("errors", "warnings", "notes") for f in report[kind] if f["check"] == check]
    assert len(found) == 1, (check, found)
    return found[0]


def checks(report: dict[str, Any], kind: str) -> list[str]:
    return [f["check"] for f in report[kind]]


# --------------------------------------------------------------------------------------
# A clean set: the tables and the verdict.


def test_a_clean_set_is_ok_with_counts_per_label_and_partition(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    clip(data, f"up/{TRAINING}_nohash_9.wav")

    code, out = run(capsys, str(data), "--wanted_words", "yes,no", "--min_clips_per_speaker", "3")

    assert code == 0
    lines = out.splitlines()
    table = lines[lines.index("usable clips per label and partition:") :][:8]
    assert table == [
        "usable clips per label and partition:",
        "  label                 training  validation     testing    total",
        "  yes *                        3           3           3        9",
        "  no *                         3           3           3        9",
        "  up                           1           0           0        1",
        "  total                        7           6           6       19",
        "  _background_noise_: 1 usable file(s), 2.0 s",
        "  (* wanted word; the other folders are _unknown_ to train.py)",
    ]
    assert "  16000 Hz, 1 channel, pcm16            20  target" in lines
    assert lines[-1] == "verdict: OK (0 error(s), 0 warning(s))"
    assert lines[2] == (
        "partitions: split by the hash of each file name before _nohash_ "
        "(--validation_percentage 10 --testing_percentage 10)"
    )

    code, report = run_json(capsys, str(data), "--wanted_words", "yes,no", "--min_clips_per_speaker", "3")
    assert code == 0
    assert report["verdict"] == "OK"
    assert report["counts"] == {
        "yes": {"training": 3, "validation": 3, "testing": 3},
        "no": {"training": 3, "validation": 3, "testing": 3},
        "up": {"training": 1, "validation": 0, "testing": 0},
    }
    assert report["background_noise"] == {"files": 1, "seconds": 2.0}
    assert report["formats"] == [
        {"sample_rate_hz": 16000, "channels": 1, "encoding": "pcm16", "files": 20, "target": True}
    ]
    assert report["durations_ms"]["yes"] == {"min": 1000.0, "median": 1000.0, "max": 1000.0}
    assert (report["errors"], report["warnings"], report["notes"]) == ([], [], [])


def test_the_split_is_train_py_s_and_follows_the_lists_when_there(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data", words=("yes",), per_speaker=1)
    # The hash split says training, validation, testing for the three speakers; the lists swap two.
    (data / "validation_list.txt").write_text(f"yes/{TESTING}_nohash_0.wav\n")
    (data / "testing_list.txt").write_text(f"yes/{VALIDATION}_nohash_0.wav\nyes/{TRAINING}_nohash_0.wav\n")

    code, report = run_json(capsys, str(data), "--min_clips_per_speaker", "0")

    assert code == 0
    assert report["counts"] == {"yes": {"training": 0, "validation": 1, "testing": 2}}
    assert report["split"].startswith("split by validation_list.txt (1 files) and testing_list.txt (2 files)")
    # "training" has no yes clip: without --wanted_words that is a warning, with it an error.
    assert finding(report, "empty_partition")["items"] == ["yes: no usable clip in training"]
    assert finding(report, "empty_partition")["severity"] == "warning"
    code, report = run_json(capsys, str(data), "--min_clips_per_speaker", "0", "--wanted_words", "yes")
    assert code == 1
    assert finding(report, "empty_partition")["severity"] == "error"


def test_one_split_list_without_the_other_is_an_error(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    (data / "validation_list.txt").write_text(f"yes/{TRAINING}_nohash_0.wav\n")

    code, report = run_json(capsys, str(data))

    assert code == 1
    assert finding(report, "split_lists")["summary"] == (
        f"{data / 'testing_list.txt'}: missing while validation_list.txt is there (expected both lists, "
        f"or neither to split by the hash of the file names)"
    )
    assert report["counts"]["yes"] == {"training": 3, "validation": 3, "testing": 3}  # hash, for the report


# --------------------------------------------------------------------------------------
# Bad input (the list): mixed rates, stereo files, unreadable files.


def test_mixed_rates_stereo_and_24_bit_are_listed_as_warnings(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    stereo = np.stack([tone(rate=44100), tone(rate=44100)], axis=1)
    wavgen.write_wav(data / f"yes/{TRAINING}_nohash_3.wav", np.rint(stereo * 2**23), 44100, "pcm24")
    wavgen.write_wav(data / f"no/{TRAINING}_nohash_3.wav", int16(tone(rate=8000)), 8000)
    wavgen.write_wav(data / f"no/{VALIDATION}_nohash_3.wav", tone().astype(np.float32), RATE, "float32")

    code, out = run(capsys, str(data))

    assert code == 0
    lines = out.splitlines()
    assert lines[lines.index("formats (sample rate, channels, encoding):") :][:5] == [
        "formats (sample rate, channels, encoding):",
        "  16000 Hz, 1 channel, pcm16            19  target",
        "  8000 Hz, 1 channel, pcm16              1",
        "  16000 Hz, 1 channel, float32           1",
        "  44100 Hz, 2 channels, pcm24            1",
    ]
    warning = lines.index("WARNINGS (1):")
    assert lines[warning + 1 : warning + 5] == [
        "  format: 3 file(s) not 16000 Hz, 1 channel, pcm16: kwsd's trainer converts them as it reads "
        "them (soxr, channels averaged), TensorFlow's train.py would misread them; --fix converts them "
        "in place",
        f"      no/{TRAINING}_nohash_3.wav (8000 Hz, 1 channel, pcm16)",
        f"      no/{VALIDATION}_nohash_3.wav (16000 Hz, 1 channel, float32)",
        f"      yes/{TRAINING}_nohash_3.wav (44100 Hz, 2 channels, pcm24)",
    ]
    assert lines[-1] == "verdict: WARNINGS (0 error(s), 1 warning(s))"

    # tools/train.py --no_resample refuses other rates: then they are errors (float32 stays a warning).
    code, report = run_json(capsys, str(data), "--no_resample")
    assert code == 1
    assert report["verdict"] == "ERRORS"
    errors = [f for f in report["errors"] if f["check"] == "format"]
    assert [e["files"] for e in errors] == [[f"no/{TRAINING}_nohash_3.wav", f"yes/{TRAINING}_nohash_3.wav"]]
    warnings = [f for f in report["warnings"] if f["check"] == "format"]
    assert [w["files"] for w in warnings] == [[f"no/{VALIDATION}_nohash_3.wav"]]


def test_most_files_at_another_rate_suggest_the_flag_is_wrong(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "data"
    for speaker in (TRAINING, VALIDATION, TESTING):
        clip(data, f"yes/{speaker}_nohash_0.wav", int16(tone(rate=48000)), rate=48000)

    code, report = run_json(capsys, str(data), "--min_clips_per_speaker", "1")

    assert code == 0
    assert finding(report, "majority_format")["summary"] == (
        "most files (3 of 3) are 48000 Hz, 1 channel, pcm16: is --sample_rate 16000 what you want?"
    )


def test_unreadable_files_are_errors_with_the_reason(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    (data / "yes/empty_nohash_0.wav").write_bytes(b"")
    (data / "yes/text_nohash_0.wav").write_text("hello, not audio")
    header_only = wavgen.riff(wavgen.fmt_chunk(1, 1, RATE, 16), wavgen.chunk(b"data", b""))
    (data / "no/header_nohash_0.wav").write_bytes(header_only)
    mu_law = wavgen.riff(wavgen.fmt_chunk(7, 1, 8000, 8), wavgen.chunk(b"data", bytes(8000)))
    (data / "no/mulaw_nohash_0.wav").write_bytes(mu_law)
    (data / "_background_noise_/cut.wav").write_bytes(b"RIFF\x10\x00\x00\x00WA")

    code, report = run_json(capsys, str(data), "--min_clips_per_speaker", "0")

    assert code == 1
    assert report["verdict"] == "ERRORS"
    path = data / "no/mulaw_nohash_0.wav"
    assert report["unreadable"] == {
        "_background_noise_/cut.wav": "WAV header cut off after 10 bytes (expected b'RIFF', size, b'WAVE')",
        "no/header_nohash_0.wav": (
            "no audio samples (the data chunk holds 0 bytes and the file 0 after it; expected at least "
            "one 2-byte frame)"
        ),
        "no/mulaw_nohash_0.wav": (
            f"unsupported WAV encoding: format tag 7 (mu-law) (expected PCM or IEEE float); convert it "
            f"with: sox {path} -b 16 OUT.wav"
        ),
        "yes/empty_nohash_0.wav": "empty file (0 bytes, expected a WAV file)",
        "yes/text_nohash_0.wav": "not a WAV file (starts with b'hell', expected b'RIFF')",
    }
    unreadable = finding(report, "unreadable")
    assert unreadable["severity"] == "error"
    assert unreadable["files"] == sorted(report["unreadable"])
    assert report["counts"]["yes"] == {"training": 3, "validation": 3, "testing": 3}  # usable clips only

    code, out = run(capsys, str(data), "--min_clips_per_speaker", "0")
    lines = out.splitlines()
    assert lines[lines.index("ERRORS (1):") + 1] == (
        "  unreadable: 5 file(s) kwsd's reader cannot read (training stops on them; fix or remove them)"
    )
    assert "      yes/empty_nohash_0.wav: empty file (0 bytes, expected a WAV file)" in lines
    assert lines[-1] == "verdict: ERRORS (1 error(s), 0 warning(s))"


def test_a_fifo_and_a_name_that_is_not_utf8_are_reported_not_fatal(tmp_path: Path, capsys: Any) -> None:
    # A FIFO named *.wav once blocked the check forever, and a file name that is not UTF-8
    # (kept by Python as surrogates) once ended it with a traceback while hashing its speaker.
    data = clean_set(tmp_path / "data")
    os.mkfifo(data / "yes/pipe_nohash_0.wav")
    odd = os.fsdecode(b"caf\xe9_nohash_0.wav")  # Latin-1 on disk
    clip(data, f"no/{odd}")

    code, report = run_json(capsys, str(data), "--min_clips_per_speaker", "0")

    assert code == 1
    assert report["unreadable"] == {"yes/pipe_nohash_0.wav": "cannot read it (not a regular file)"}
    assert sum(report["counts"]["no"].values()) == 3 * 3 + 1  # the odd name's clip is counted
    with pytest.raises(OSError, match="not a regular file"):
        read_samples(data / "yes/pipe_nohash_0.wav", RATE)


def test_a_file_cut_short_is_a_reader_warning(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    whole = wavgen.wav_bytes(int16(tone()), RATE)
    (data / f"yes/{TRAINING}_nohash_0.wav").write_bytes(whole[:-16000])

    code, report = run_json(capsys, str(data))

    assert code == 0
    assert finding(report, "reader_warnings")["items"] == [
        f"yes/{TRAINING}_nohash_0.wav: header said 32000 bytes of audio, file has 16000 (a recording cut "
        f"off?); using what is there"
    ]


# --------------------------------------------------------------------------------------
# Levels, lengths, duplicates, speakers.


def test_clipped_silent_short_and_long_clips_are_listed(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    clip(data, f"yes/{TRAINING}_nohash_3.wav", int16(tone(level=1.5)))  # hard clipped
    run_of_three = int16(tone(level=0.5))
    run_of_three[5000:5003] = 32767
    clip(data, f"yes/{TRAINING}_nohash_4.wav", run_of_three)
    two_apart = int16(tone(level=0.5))
    two_apart[[5000, 9000]] = 32767  # two lone full-scale samples: not clipping
    clip(data, f"yes/{TRAINING}_nohash_5.wav", two_apart)
    clip(data, f"no/{TRAINING}_nohash_3.wav", int16(tone(level=0.001)))  # -60 dBFS
    clip(data, f"no/{TRAINING}_nohash_4.wav", np.zeros(RATE, np.int16))
    clip(data, f"no/{VALIDATION}_nohash_4.wav", np.zeros(RATE, np.int16))  # not a "leak"
    clip(data, f"no/{TRAINING}_nohash_5.wav", int16(tone(400)))
    clip(data, f"no/{TRAINING}_nohash_6.wav", int16(tone(1500)))
    clip(data, f"no/{TRAINING}_nohash_7.wav", int16(tone(600)))  # short, but not listed

    code, report = run_json(capsys, str(data))

    assert code == 0
    assert report["verdict"] == "WARNINGS"
    assert sorted(checks(report, "warnings")) == ["clipped", "long", "short", "silent"]
    clipped = finding(report, "clipped")
    assert clipped["files"] == [f"yes/{TRAINING}_nohash_3.wav", f"yes/{TRAINING}_nohash_4.wav"]
    assert (
        clipped["items"][1] == f"yes/{TRAINING}_nohash_4.wav (3 samples at full scale, 0.02%; longest run 3)"
    )
    silent = finding(report, "silent")
    assert silent["summary"] == "3 near-silent clip(s) (peak below -50 dBFS, --silent_dbfs)"
    assert silent["items"] == [
        f"no/{TRAINING}_nohash_4.wav (digital silence)",
        f"no/{VALIDATION}_nohash_4.wav (digital silence)",
        f"no/{TRAINING}_nohash_3.wav (peak -59.9 dBFS, RMS -63.0 dBFS)",
    ]
    assert finding(report, "long")["items"] == [f"no/{TRAINING}_nohash_6.wav (1500 ms)"]
    assert finding(report, "short")["items"] == [f"no/{TRAINING}_nohash_5.wav (400 ms)"]
    assert report["durations_ms"]["no"] == {"min": 400.0, "median": 1000.0, "max": 1500.0}


def test_identical_audio_across_partitions_is_an_error_and_within_one_a_warning(
    tmp_path: Path, capsys: Any
) -> None:
    data = clean_set(tmp_path / "data")
    source = data / f"yes/{TRAINING}_nohash_0.wav"
    samples = read_samples(source, RATE)[0]
    # The same audio under another label, in testing, with another header (a LIST chunk): a leak.
    info = wavgen.chunk(b"LIST", b"INFOISFT\x06\x00\x00\x00kwsd\x00\x00")
    wavgen.write_wav(data / f"no/{TESTING}_nohash_7.wav", samples, RATE, before_data=(info,))
    # A plain copy in the same partition: a warning.
    (data / f"no/{TRAINING}_nohash_8.wav").write_bytes(source.read_bytes())

    code, report = run_json(capsys, str(data))

    assert code == 1
    leak = finding(report, "cross_partition_duplicates")
    assert leak["severity"] == "error"
    assert leak["items"] == [
        f"no/{TRAINING}_nohash_8.wav (training) = no/{TESTING}_nohash_7.wav (testing) = "
        f"yes/{TRAINING}_nohash_0.wav (training)"
    ]
    assert "duplicates" not in checks(report, "warnings")  # the group is reported once, as the leak

    (data / f"no/{TESTING}_nohash_7.wav").unlink()
    code, report = run_json(capsys, str(data))
    assert code == 0
    copies = finding(report, "duplicates")
    assert copies["severity"] == "warning"
    assert copies["items"] == [
        f"no/{TRAINING}_nohash_8.wav (training) = yes/{TRAINING}_nohash_0.wav (training)"
    ]


def test_speakers_with_few_clips_and_names_without_nohash(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    clip(data, "yes/petr_nohash_0.wav")  # a misspelt "pete"?
    clip(data, "no/recording1.wav")

    code, report = run_json(capsys, str(data))

    assert code == 0
    few = finding(report, "few_clips_speakers")
    assert few["summary"] == (
        "1 of 4 speaker(s) with fewer than 5 clips "
        "(--min_clips_per_speaker; a misspelt name before _nohash_?)"
    )
    assert few["items"] == ["petr (1 clip(s))"]
    assert finding(report, "no_nohash")["files"] == ["no/recording1.wav"]
    code, report = run_json(capsys, str(data), "--min_clips_per_speaker", "0")
    assert checks(report, "warnings") == ["no_nohash"]


def test_wanted_words_need_a_folder_and_clips_in_every_partition(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    clip(data, f"up/{TRAINING}_nohash_0.wav")

    code, report = run_json(capsys, str(data), "--wanted_words", "yes,up,maybe")

    assert code == 1
    assert finding(report, "missing_word")["summary"] == (
        "--wanted_words: no folder for 'maybe' (the word folders: no, up, yes)"
    )
    assert finding(report, "empty_partition")["items"] == ["up: no usable clip in validation, testing"]
    assert list(report["counts"]) == ["yes", "up", "maybe", "no"]


def test_background_noise_problems(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    clip(data, "_background_noise_/short.wav", int16(tone(500)))

    code, report = run_json(capsys, str(data))
    assert code == 1
    assert finding(report, "noise")["items"] == ["_background_noise_/short.wav (500 ms)"]

    for wav in (data / "_background_noise_").iterdir():
        wav.unlink()
    code, report = run_json(capsys, str(data))
    assert code == 1
    assert finding(report, "noise")["summary"].startswith("_background_noise_/ has no .wav files")

    (data / "_background_noise_").rmdir()
    code, report = run_json(capsys, str(data))
    assert code == 0
    assert finding(report, "noise")["severity"] == "note"


def test_the_text_names_the_first_files_then_how_many_more(tmp_path: Path, capsys: Any) -> None:
    data = clean_set(tmp_path / "data")
    for n in range(12):
        clip(data, f"no/take{n:02d}.wav")

    code, out = run(capsys, str(data), "--min_clips_per_speaker", "0")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("WARNINGS (1):") + 1
    assert lines[start + 1 : start + 13] == [f"      no/take{n:02d}.wav" for n in range(10)] + [
        "      and 2 more",
        "",
    ]
    _, out = run(capsys, str(data), "--min_clips_per_speaker", "0", "--max_listed", "0")
    assert "      no/take11.wav" in out.splitlines()


# --------------------------------------------------------------------------------------
# --fix.


def bad_format_set(root: Path) -> dict[str, bytes]:
    """A clean set plus three files in other formats; returns those files' bytes."""
    clean_set(root)
    stereo = np.stack([tone(rate=44100), tone(rate=44100, level=0.1)], axis=1)
    wavgen.write_wav(root / f"yes/{TRAINING}_nohash_3.wav", np.rint(stereo * 2**23), 44100, "pcm24")
    wavgen.write_wav(
        root / f"no/{TESTING}_nohash_3.wav", tone(rate=48000).astype(np.float32), 48000, "float32"
    )
    wavgen.write_wav(root / "_background_noise_/hum.wav", int16(tone(3000, rate=22050)), 22050)
    return {
        rel: (root / rel).read_bytes()
        for rel in (
            f"yes/{TRAINING}_nohash_3.wav",
            f"no/{TESTING}_nohash_3.wav",
            "_background_noise_/hum.wav",
        )
    }


def test_fix_converts_in_place_keeps_the_originals_and_a_second_check_is_clean(
    tmp_path: Path, capsys: Any
) -> None:
    data = tmp_path / "data"
    originals = bad_format_set(data)
    expected = {rel: read_samples(data / rel, RATE)[0] for rel in originals}
    os.chmod(data / f"yes/{TRAINING}_nohash_3.wav", 0o640)

    code, report = run_json(capsys, str(data), "--fix")

    assert code == 0
    assert report["verdict"] == "OK"
    assert report["fixed"] == {
        "_background_noise_/hum.wav": "22050 Hz, 1 channel, pcm16",
        f"no/{TESTING}_nohash_3.wav": "48000 Hz, 1 channel, float32",
        f"yes/{TRAINING}_nohash_3.wav": "44100 Hz, 2 channels, pcm24",
    }
    assert finding(report, "fixed")["severity"] == "note"
    for rel, before in originals.items():
        assert (data / (rel + ".orig")).read_bytes() == before
        with open_audio(data / rel, RATE) as reader:
            assert (reader.info.sample_rate_hz, reader.info.channels, reader.info.encoding) == (
                RATE,
                1,
                "pcm16",
            )
            converted = np.concatenate(list(reader.blocks()))
        np.testing.assert_array_equal(converted, expected[rel])  # exactly what the trainer would read
    assert (data / f"yes/{TRAINING}_nohash_3.wav").stat().st_mode & 0o777 == 0o640
    leftovers = sorted(p.name for p in data.rglob(".*"))
    assert leftovers == []

    code, out = run(capsys, str(data))
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "verdict: OK (0 error(s), 0 warning(s))"
    assert (
        "  originals: 3 original(s) kept by --fix (*.wav.orig; train.py and kwsd's loader do not read them)"
        in (lines)
    )
    # kwsd's loader reads the fixed set without converting anything and skips the originals.
    loaded = load_dataset(data, DatasetSettings(wanted_words=("yes", "no")), seed=1)
    assert loaded.report.converted == {}
    assert sorted(loaded.report.ignored) == sorted(rel + ".orig" for rel in originals)


def test_fix_never_overwrites_an_original_and_leaves_the_file_alone(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "data"
    originals = bad_format_set(data)
    rel = f"yes/{TRAINING}_nohash_3.wav"
    (data / (rel + ".orig")).write_bytes(b"kept from before")

    code, report = run_json(capsys, str(data), "--fix")

    assert code == 1
    failed = finding(report, "fix_failed")
    assert failed["items"] == [
        f"{rel}: {TRAINING}_nohash_3.wav.orig already exists (an original kept before?); move it away first"
    ]
    assert (data / rel).read_bytes() == originals[rel]
    assert (data / (rel + ".orig")).read_bytes() == b"kept from before"
    assert sorted(report["fixed"]) == ["_background_noise_/hum.wav", f"no/{TESTING}_nohash_3.wav"]
    assert "format" not in checks(report, "warnings")  # the failure is the error, not listed twice


def test_fix_falls_back_to_a_copy_without_hard_links(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    originals = bad_format_set(data)

    def no_links(source: Any, target: Any) -> None:
        raise PermissionError(1, "Operation not permitted")  # what vfat says

    monkeypatch.setattr(os, "link", no_links)
    code, report = run_json(capsys, str(data), "--fix")

    assert code == 0
    assert len(report["fixed"]) == 3
    for rel, before in originals.items():
        assert (data / (rel + ".orig")).read_bytes() == before


# --------------------------------------------------------------------------------------
# The command line.


def test_the_script_runs_and_exits_1_on_errors(tmp_path: Path) -> None:
    data = clean_set(tmp_path / "data")
    (data / "yes/empty_nohash_0.wav").write_bytes(b"")

    done = subprocess.run(
        [sys.executable, str(REPO / "tools/check_dataset.py"), str(data), "--json"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["unreadable"] == {
        "yes/empty_nohash_0.wav": "empty file (0 bytes, expected a WAV file)"
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "check_dataset: error: {missing}: no such folder (expected {missing}/<word>/*.wav)"),
        (
            ["{data}", "--validation_percentage", "60", "--testing_percentage", "40"],
            "check_dataset: error: --validation_percentage 60 + --testing_percentage 40: expected less "
            "than 100 together (the rest is for training)",
        ),
        (["{data}", "--wanted_words", "Yes"], "check_dataset: error: --wanted_words: 'Yes' has upper-case"),
        (["{data}", "--silent_dbfs", "3"], "check_dataset: error: --silent_dbfs: expected a level of 0 dBFS"),
    ],
)
def test_bad_flags_exit_2(tmp_path: Path, capsys: Any, argv: list[str], message: str) -> None:
    names = {"missing": str(tmp_path / "missing"), "data": str(tmp_path)}
    code = cd.main([a.format(**names) for a in argv])
    assert code == 2
    assert capsys.readouterr().err.startswith(message.format(**names))
