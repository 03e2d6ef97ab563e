"""tools/kwsd_tools/training/dataset.py: layout, split, checks of every file, bad input, --data_url.

Data sets are written here with numpy and the stdlib ``wave`` module (and one with
tools/synth.py); no TensorFlow, no network (the http test serves a file on loopback).
"""

from __future__ import annotations

import http.server
import io
import json
import math
import re
import shutil
import tarfile
import threading
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kwsd.audio import write_wav
from kwsd.dataset_layout import speaker_of
from kwsd.errors import AudioFormatError, InputNotFoundError
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd_tools.training import dataset as ds
from kwsd_tools.training.dataset import (
    PARTITIONS,
    DatasetError,
    DatasetSettings,
    Item,
    download_and_extract,
    load_dataset,
    which_set,
)
from tests.helpers import speakers

RATE = 16000
YES_NO = DatasetSettings(wanted_words=("yes", "no"))


def tone(n: int, level: float = 0.25, hz: float = 440.0, rate: int = RATE) -> np.ndarray[Any, Any]:
    return np.rint(np.sin(2 * np.pi * hz * np.arange(n) / rate) * level * 32767).astype(np.int16)


def write_pcm(path: Path, frames: np.ndarray[Any, Any], rate: int, width: int = 2) -> Path:
    """frames: int array (n,) or (n, channels), already in the width's range."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames)
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    flat = frames.reshape(-1).astype(np.int64)
    if width == 3:
        data = (flat & 0xFFFFFF).astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    elif width == 1:
        data = flat.astype(np.uint8).tobytes()
    else:
        data = flat.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(data)
    return path


def make_set(
    root: Path,
    words: dict[str, list[str]],
    *,
    noise: bool = True,
    samples: int = RATE,
    rate: int = RATE,
    repetitions: int = 1,
) -> Path:
    """root/<word>/<speaker>_nohash_<n>.wav, each a distinct tone; noise: 2 s of white noise."""
    for w, (word, names) in enumerate(sorted(words.items())):
        (root / word).mkdir(parents=True, exist_ok=True)
        for s, name in enumerate(names):
            for rep in range(repetitions):
                clip = tone(samples, hz=200 + 40 * w + 3 * s + rep, rate=rate)
                write_wav(root / word / f"{name}_nohash_{rep}.wav", clip, rate)
    if noise:
        (root / "_background_noise_").mkdir(parents=True, exist_ok=True)
        white = np.random.default_rng(0).integers(-3000, 3000, 2 * rate).astype(np.int16)
        write_wav(root / "_background_noise_" / "white.wav", white, rate)
    return root


@pytest.fixture
def spread(tmp_path: Path) -> Path:
    """yes/no by 3 training, 2 validation, 2 testing speakers; 'cat' and 'dog' as other words."""
    names = speakers("training", 3) + speakers("validation", 2) + speakers("testing", 2)
    return make_set(tmp_path / "data", {"yes": names, "no": names, "cat": names, "dog": names})


# --------------------------------------------------------------------------------------
# The split rule.


@pytest.mark.parametrize(
    ("filename", "expected_set", "expected_percentage"),
    [
        # REFERENCE.md's four computed examples at validation = testing = 10.
        ("pete_nohash_0.wav", "training", 35.93),
        ("spk015_nohash_0.wav", "validation", 2.08),
        ("heidi_nohash_0.wav", "testing", 10.10),
        ("a5d485dc_nohash_0.wav", "training", 23.08),
    ],
)
def test_which_set_matches_the_reference_examples(
    filename: str, expected_set: str, expected_percentage: float
) -> None:
    assert which_set(filename, 10, 10) == expected_set
    assert ds.hash_percentage(filename) == pytest.approx(expected_percentage, abs=0.01)


def test_which_set_ignores_folder_and_repetition_number() -> None:
    assert which_set("yes/heidi_nohash_0.wav", 10, 10) == "testing"
    assert which_set("/data/no/heidi_nohash_7.wav", 10, 10) == "testing"
    assert ds.hash_percentage("heidi_nohash_3.wav") == ds.hash_percentage("heidi")
    assert speaker_of("yes/heidi_nohash_3.wav") == "heidi"


def test_which_set_hashes_a_name_without_nohash_whole() -> None:
    # "heidi.wav" hashes with its extension: a different speaker from heidi_nohash_*.
    assert ds.hash_percentage("heidi.wav") != ds.hash_percentage("heidi_nohash_0.wav")


# --------------------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"sample_rate_hz": 22050, "clip_duration_ms": 1001},
            "--clip_duration_ms: 1001 ms is not a whole number of samples at --sample_rate 22050 Hz",
        ),
        ({"sample_rate_hz": 0}, "--sample_rate: expected a positive whole number, got 0"),
        ({"wanted_words": ()}, "--wanted_words: expected at least one word, got none"),
        (
            {"wanted_words": ("Yes",)},
            "--wanted_words: 'Yes' has upper-case letters; folder names are lower-cased into labels, "
            "so use 'yes'",
        ),
        ({"wanted_words": ("yes", "yes")}, "--wanted_words: 'yes' is given twice"),
        (
            {"wanted_words": ("_silence_",)},
            "--wanted_words: '_silence_' is not a word (it is added or ignored by the tool; "
            "a word is the name of a folder in the data folder)",
        ),
        ({"unknown_percentage": 101}, "--unknown_percentage: expected a percentage from 0 to 100, got 101"),
        (
            {"validation_percentage": 60, "testing_percentage": 40},
            "--validation_percentage 60 + --testing_percentage 40: expected less than 100 together "
            "(the rest is for training)",
        ),
    ],
)
def test_settings_refuse_what_cannot_work_naming_the_flag(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(DatasetError) as error:
        DatasetSettings(**changes)
    assert str(error.value) == message


def test_settings_take_a_list_of_words_and_derive_the_clip_samples() -> None:
    settings = DatasetSettings(sample_rate_hz=22050, clip_duration_ms=5000, wanted_words=["crying"])  # type: ignore[arg-type]
    assert settings.wanted_words == ("crying",)
    assert settings.clip_samples == 110250


# --------------------------------------------------------------------------------------
# Labels, split, counts.


def test_labels_and_indices_follow_train_py(spread: Path) -> None:
    (spread / "yes").rename(spread / "YES")  # folder names are lower-cased
    data = load_dataset(spread, DatasetSettings(wanted_words=("no", "yes")), seed=1)
    assert data.labels == [SILENCE_LABEL, UNKNOWN_LABEL, "no", "yes"]
    assert [data.label_index(x) for x in data.labels] == [0, 1, 2, 3]
    every = [item for p in PARTITIONS for item in data.items[p]]
    assert {item.label for item in every} == set(data.labels)
    for item in every:
        if item.label == SILENCE_LABEL:
            assert item.path is None
        elif item.label == UNKNOWN_LABEL:
            assert item.path is not None and item.path.split("/")[0] in ("cat", "dog")
        else:
            assert item.path is not None and item.path.split("/")[0].lower() == item.label
    assert "_background_noise_" not in data.labels
    assert sorted(data.noise) == ["white.wav"]


def test_hash_split_and_silence_and_unknown_counts_per_partition(tmp_path: Path) -> None:
    names = speakers("training", 7) + speakers("validation", 3) + speakers("testing", 2)
    root = make_set(tmp_path / "data", {"yes": names, "no": names, "cat": names, "dog": names})
    settings = DatasetSettings(wanted_words=("yes", "no"), silence_percentage=30, unknown_percentage=25)
    data = load_dataset(root, settings, seed=3)
    for partition in PARTITIONS:
        items = data.items[partition]
        wanted = sorted(i.path for i in items if i.label in ("yes", "no") and i.path)
        expected = sorted(
            f"{w}/{n}_nohash_0.wav"
            for w in ("yes", "no")
            for n in names
            if which_set(n + "_nohash_0", 10, 10) == partition
        )
        assert wanted == expected
        n = len(expected)
        counts = data.counts()[partition]
        assert counts == {
            SILENCE_LABEL: math.ceil(n * 30 / 100),
            UNKNOWN_LABEL: math.ceil(n * 25 / 100),
            "yes": n // 2,
            "no": n // 2,
        }
        for item in items:
            if item.label == UNKNOWN_LABEL:
                assert item.path is not None and which_set(item.path, 10, 10) == partition
    assert data.report.notes[0] == (
        "split by the hash of each file name before _nohash_ "
        "(--validation_percentage 10 --testing_percentage 10)"
    )
    # words: every usable file, unknown words included, per partition.
    assert sorted(data.words["testing"]) == ["cat", "dog", "no", "yes"]
    assert len(data.words["training"]["cat"]) == 7


def test_the_same_seed_gives_the_same_items_and_another_seed_another_order(spread: Path) -> None:
    first = load_dataset(spread, YES_NO, seed=5).items
    assert load_dataset(spread, YES_NO, seed=5).items == first
    other = load_dataset(spread, YES_NO, seed=6).items
    assert other != first
    assert [len(other[p]) for p in PARTITIONS] == [len(first[p]) for p in PARTITIONS]
    for p in PARTITIONS:  # the wanted items are the same files, in another order
        assert sorted(str(i.path) for i in other[p] if i.label in ("yes", "no")) == sorted(
            str(i.path) for i in first[p] if i.label in ("yes", "no")
        )
    # A Generator can be passed to continue one stream: the same as the int seed's.
    assert load_dataset(spread, YES_NO, seed=np.random.default_rng(5)).items == first


def test_validation_and_testing_lists_decide_the_split_when_present(spread: Path) -> None:
    # Against the hash: put training speakers' files in the lists.
    train_names = speakers("training", 3)
    (spread / "validation_list.txt").write_text(
        f"yes/{train_names[0]}_nohash_0.wav\nno/{train_names[0]}_nohash_0.wav\n./cat/{train_names[0]}_nohash_0.wav\n"
        "yes/gone_nohash_0.wav\n\n"
    )
    (spread / "testing_list.txt").write_text(
        f"yes/{train_names[1]}_nohash_0.wav\nno/{train_names[2]}_nohash_0.wav\n"
    )
    data = load_dataset(spread, YES_NO, seed=1)
    wanted = {
        p: sorted(i.path for i in data.items[p] if i.label in ("yes", "no") and i.path) for p in PARTITIONS
    }
    assert wanted["validation"] == [f"no/{train_names[0]}_nohash_0.wav", f"yes/{train_names[0]}_nohash_0.wav"]
    assert wanted["testing"] == [f"no/{train_names[2]}_nohash_0.wav", f"yes/{train_names[1]}_nohash_0.wav"]
    assert len(wanted["training"]) == 14 - 4  # every other file, whatever its hash
    assert data.words["validation"]["cat"] == [f"cat/{train_names[0]}_nohash_0.wav"]
    assert data.report.notes[0] == (
        "split by validation_list.txt (3 files) and testing_list.txt (2 files); every other file is training "
        "(the --validation_percentage and --testing_percentage hash split is not used); "
        "1 listed entr(y/ies) name no .wav file here"
    )


def test_one_list_without_the_other_is_refused(spread: Path) -> None:
    (spread / "validation_list.txt").write_text("yes/x_nohash_0.wav\n")
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, YES_NO, seed=1)
    assert str(error.value) == (
        f"{spread / 'testing_list.txt'}: missing while validation_list.txt is there (expected both lists, "
        "or neither to split by the hash of the file names)"
    )


# --------------------------------------------------------------------------------------
# Checks of every file.


def test_a_44k_stereo_24_bit_file_is_resampled_and_listed(spread: Path) -> None:
    name = speakers("training", 1)[0]
    t = np.arange(44100) / 44100
    wave24 = np.rint(np.sin(2 * np.pi * 440 * t) * 0.5 * 2**23).astype(np.int64)
    write_pcm(spread / "yes" / f"{name}_nohash_0.wav", np.column_stack((wave24, wave24)), 44100, width=3)
    data = load_dataset(spread, YES_NO, seed=1)
    rel = f"yes/{name}_nohash_0.wav"
    assert data.report.converted == {rel: "44100 Hz, 2 channels, pcm24"}
    clip = data.clip(rel)
    assert clip.dtype == np.float64 and clip.shape == (RATE,)
    assert int(np.argmax(np.abs(np.fft.rfft(clip)))) == 440  # 1 s at 16 kHz: bin = Hz
    assert abs(clip).max() == pytest.approx(0.5, abs=0.01)
    assert rel not in data.report.cropped and rel not in data.report.padded  # 1 s is exactly the clip
    assert (
        "1 file(s) were converted to 16000 Hz mono int16 by kwsd's reader: "
        f"1 x 44100 Hz, 2 channels, pcm24 (e.g. {rel})"
    ) in data.report.lines()
    assert "of these, 1 resampled to 16000 Hz with soxr, 1 mixed down to mono (channels averaged)" in (
        data.report.lines()
    )


def test_with_resampling_off_a_file_at_another_rate_is_refused_naming_it(spread: Path) -> None:
    name = speakers("testing", 1)[0]
    path = write_pcm(spread / "no" / f"{name}_nohash_0.wav", tone(8000, rate=8000), 8000)
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, DatasetSettings(wanted_words=("yes", "no"), resample=False), seed=1)
    assert str(error.value) == (
        f"{path}: 8000 Hz, expected 16000 Hz (--sample_rate; resampling is off) "
        "(fix or remove it, or leave bad files out with skip_bad_files)"
    )
    settings = DatasetSettings(wanted_words=("yes", "no"), resample=False, skip_bad_files=True)
    data = load_dataset(spread, settings, seed=1)
    rel = f"no/{name}_nohash_0.wav"
    assert data.report.skipped == {rel: "8000 Hz, expected 16000 Hz (--sample_rate; resampling is off)"}
    assert all(item.path != rel for p in PARTITIONS for item in data.items[p])
    assert rel not in data.words["testing"]["no"]
    assert f"1 file(s) skipped (skip_bad_files): {rel}: 8000 Hz, expected 16000 Hz" in data.report.text()


def test_other_encodings_are_converted_and_listed(spread: Path) -> None:
    names = speakers("training", 3)
    write_pcm(spread / "yes" / f"{names[0]}_nohash_0.wav", np.full(RATE, 128 + 64), RATE, width=1)
    write_pcm(spread / "yes" / f"{names[1]}_nohash_0.wav", np.full(RATE, 2**29), RATE, width=4)
    data = load_dataset(spread, YES_NO, seed=1)
    assert data.report.converted == {
        f"yes/{names[0]}_nohash_0.wav": "16000 Hz, 1 channel, pcm8",
        f"yes/{names[1]}_nohash_0.wav": "16000 Hz, 1 channel, pcm32",
    }
    assert set(data.clip(f"yes/{names[0]}_nohash_0.wav").tolist()) == {0.5}
    assert set(data.clip(f"yes/{names[1]}_nohash_0.wav").tolist()) == {0.25}


def test_long_clips_are_cut_and_listed_short_ones_padded_and_counted(spread: Path) -> None:
    names = speakers("training", 2)
    long_rel, short_rel = f"yes/{names[0]}_nohash_0.wav", f"no/{names[1]}_nohash_0.wav"
    write_wav(spread / long_rel, tone(RATE * 3 // 2), RATE)
    write_wav(spread / short_rel, tone(4000), RATE)
    data = load_dataset(spread, YES_NO, seed=1)
    assert data.report.cropped == {long_rel: 1500.0}
    assert data.report.padded == {short_rel: 250.0}
    np.testing.assert_array_equal(data.clip(long_rel), tone(RATE * 3 // 2)[:RATE] / 32768)
    short = data.clip(short_rel)
    assert short.shape == (RATE,) and not short[4000:].any() and short[:4000].any()
    lines = data.report.lines()
    assert (
        "1 clip(s) longer than 1000 ms: only their first 1000 ms are used (train.py's rule; cut them or "
        f"raise --clip_duration_ms): {long_rel} (1500 ms)"
    ) in lines
    assert (
        f"1 clip(s) shorter than 1000 ms are padded with zeros at the end (train.py's rule); the shortest: "
        f"{short_rel} (250 ms)"
    ) in lines


def test_clips_are_cached_and_unchosen_unknown_files_read_on_demand(spread: Path) -> None:
    data = load_dataset(spread, DatasetSettings(wanted_words=("yes", "no"), unknown_percentage=0), seed=1)
    assert data.counts()["training"][UNKNOWN_LABEL] == 0
    unknown = data.words["training"]["cat"][0]
    assert unknown not in data._clips
    checked = data.report.checked
    np.testing.assert_array_equal(data.clip(unknown), data.clip(unknown))
    assert unknown in data._clips and data.report.checked == checked  # read once, counted once
    wanted = data.items["training"][0]
    assert wanted.path in data._clips or wanted.path is None
    assert data.memory_bytes == sum(a.nbytes for a in data._clips.values()) + sum(
        a.nbytes for a in data.noise.values()
    )


def test_ignored_entries_are_reported_not_read(spread: Path) -> None:
    (spread / "yes" / "notes.txt").write_text("not audio")
    (spread / "yes" / "._hidden.wav").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble debris
    (spread / "__MACOSX" / "yes").mkdir(parents=True)
    (spread / "__MACOSX" / "yes" / "._a.wav").write_bytes(b"junk")
    (spread / "README.md").write_text("top-level files are not looked at")
    data = load_dataset(spread, YES_NO, seed=1)
    assert data.report.ignored == ["__MACOSX/", "yes/._hidden.wav", "yes/notes.txt"]
    assert (
        "3 entr(y/ies) ignored (hidden, not .wav, or below a word folder): __MACOSX/, yes/._hidden.wav, "
        "yes/notes.txt" in data.report.lines()
    )


def test_without_a_noise_folder_silence_is_zeros_and_the_report_says_so(tmp_path: Path) -> None:
    names = speakers("training", 2) + speakers("validation", 1) + speakers("testing", 1)
    root = make_set(tmp_path / "data", {"yes": names, "no": names}, noise=False)
    data = load_dataset(root, YES_NO, seed=1)
    assert data.noise == {}
    assert data.report.notes[-1] == (
        f"no background noise ({root / '_background_noise_'} does not exist): no noise augmentation, "
        "silence items are digital zeros"
    )
    assert data.counts()["validation"] == {SILENCE_LABEL: 1, UNKNOWN_LABEL: 0, "yes": 1, "no": 1}
    assert (
        f"validation: 0 {UNKNOWN_LABEL} item(s) instead of 1 (--unknown_percentage 10): no folder other than "
        "the wanted words" in data.report.notes
    )


def test_noise_is_checked_and_converted_like_the_clips(spread: Path) -> None:
    hum = tone(48000 * 2, rate=48000, hz=50)
    write_pcm(spread / "_background_noise_" / "hum.wav", np.column_stack((hum, hum)), 48000)
    data = load_dataset(spread, YES_NO, seed=1)
    assert sorted(data.noise) == ["hum.wav", "white.wav"]
    assert data.noise["hum.wav"].dtype == np.float64 and len(data.noise["hum.wav"]) == 2 * RATE
    assert data.report.converted == {"_background_noise_/hum.wav": "48000 Hz, 2 channels, pcm16"}
    assert data.noise["white.wav"].min() >= -1 and data.noise["white.wav"].max() < 1
    assert "background noise: 2 file(s), 4 s" in data.report.notes


def test_reader_warnings_are_kept_in_the_report(spread: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = speakers("training", 1)[0]
    path = spread / "yes" / f"{name}_nohash_0.wav"
    path.write_bytes(path.read_bytes()[:-1001])  # cut off mid-sample: the header says more
    data = load_dataset(spread, YES_NO, seed=1)
    assert data.report.reader_warnings == [
        f"{path}: header said 32000 bytes of audio, file has 30999 (a recording cut off?); "
        "using what is there",
        f"{path}: dropping a trailing partial frame (1 of 2 bytes)",
    ]
    assert data.report.padded == {f"yes/{name}_nohash_0.wav": 968.6875}
    assert any("header said 32000 bytes" in r.getMessage() for r in caplog.records)  # still logged


# --------------------------------------------------------------------------------------
# Bad input: each a DatasetError naming the file, folder or flag.


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path / "nope", YES_NO, seed=1)
    assert str(error.value) == (
        f"{tmp_path / 'nope'}: no such data folder (--data_dir; expected {tmp_path / 'nope'}/<word>/*.wav)"
    )


def test_no_wavs_found_names_the_folder_and_the_layout(tmp_path: Path) -> None:
    (tmp_path / "yes").mkdir()
    (tmp_path / "yes" / "readme.txt").write_text("nothing here")
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path, YES_NO, seed=1)
    assert str(error.value) == (
        f"{tmp_path}: no .wav files found (expected one folder per word: {tmp_path}/<word>/*.wav)"
    )
    write_wav(tmp_path / "a.wav", tone(100), RATE)
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path, YES_NO, seed=1)
    assert str(error.value).endswith(
        "; 1 .wav file(s) lie directly in it (e.g. a.wav): put each word's files in its own folder)"
    )


def test_no_wavs_found_points_at_the_folder_one_level_down(tmp_path: Path) -> None:
    make_set(tmp_path / "archive" / "mydata", {"yes": ["a"], "no": ["a"]}, noise=False)
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path / "archive", YES_NO, seed=1)
    assert str(error.value) == (
        f"{tmp_path / 'archive'}: no .wav files found (expected one folder per word: "
        f"{tmp_path / 'archive'}/<word>/*.wav; found .wav files deeper, e.g. mydata/no/a_nohash_0.wav: "
        f"point --data_dir at {tmp_path / 'archive' / 'mydata'})"
    )


def test_a_wanted_word_with_no_folder(spread: Path) -> None:
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, DatasetSettings(wanted_words=("yes", "bird", "fish")), seed=1)
    assert str(error.value) == (
        f"--wanted_words: no folder for 'bird', 'fish' in {spread} (its word folders: cat, dog, no, yes)"
    )
    (spread / "bird").mkdir()
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, DatasetSettings(wanted_words=("yes", "bird")), seed=1)
    assert str(error.value) == (
        f"--wanted_words: the folder for 'bird' in {spread} has no .wav files (expected {spread}/bird/*.wav)"
    )


def test_an_empty_background_noise_folder(spread: Path) -> None:
    (spread / "_background_noise_" / "white.wav").unlink()
    (spread / "_background_noise_" / "README.md").write_text("Speech Commands ships one of these")
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, YES_NO, seed=1)
    assert str(error.value) == (
        f"{spread / '_background_noise_'}: empty _background_noise_ folder (expected long noise recordings "
        "as .wav files; remove the folder to train without background noise)"
    )


def test_a_noise_file_shorter_than_a_clip(spread: Path) -> None:
    write_wav(spread / "_background_noise_" / "click.wav", tone(RATE // 2), RATE)
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, YES_NO, seed=1)
    assert str(error.value) == (
        f"{spread / '_background_noise_' / 'click.wav'}: background noise of 500 ms is shorter than one clip "
        "(1000 ms, --clip_duration_ms); use a longer recording or remove it"
    )


def test_a_corrupt_wav_stops_the_load_naming_it(spread: Path) -> None:
    name = speakers("validation", 1)[0]
    bad = spread / "yes" / f"{name}_nohash_0.wav"
    bad.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, YES_NO, seed=1)
    assert str(error.value) == (
        f"{bad}: not a WAV file (starts with b'<htm', expected b'RIFF') "
        "(fix or remove it, or leave bad files out with skip_bad_files)"
    )


def test_every_bad_file_is_named_in_one_message(spread: Path) -> None:
    names = speakers("training", 3)
    (spread / "yes" / f"{names[0]}_nohash_0.wav").write_bytes(b"")
    (spread / "cat" / f"{names[1]}_nohash_0.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVE")
    with pytest.raises(DatasetError) as error:
        load_dataset(spread, YES_NO, seed=1)
    assert str(error.value) == (
        f"{spread}: 2 files cannot be used: "
        f"cat/{names[1]}_nohash_0.wav: no fmt chunk (the WAV ends after 12 bytes); "
        f"yes/{names[0]}_nohash_0.wav: empty file (0 bytes, expected a WAV file) "
        "(fix or remove them, or leave bad files out with skip_bad_files)"
    )


def test_skip_bad_files_leaves_them_out_and_lists_why(spread: Path) -> None:
    names = speakers("training", 3)
    (spread / "yes" / f"{names[0]}_nohash_0.wav").write_bytes(b"")
    (spread / "_background_noise_" / "broken.wav").write_bytes(b"RIFF")
    settings = DatasetSettings(wanted_words=("yes", "no"), skip_bad_files=True)
    data = load_dataset(spread, settings, seed=1)
    assert data.report.skipped == {
        "_background_noise_/broken.wav": "WAV header cut off after 4 bytes (expected b'RIFF', size, b'WAVE')",
        f"yes/{names[0]}_nohash_0.wav": "empty file (0 bytes, expected a WAV file)",
    }
    assert sorted(data.noise) == ["white.wav"]
    assert data.counts()["training"]["yes"] == 2


def test_a_partition_without_wanted_clips_says_why(tmp_path: Path) -> None:
    names = speakers("training", 3) + speakers("testing", 1)
    root = make_set(tmp_path / "data", {"yes": names, "no": names}, repetitions=2)
    with pytest.raises(DatasetError) as error:
        load_dataset(root, YES_NO, seed=1)
    assert str(error.value) == (
        f"{root}: the validation partition has no clips of the wanted words (the split keeps every file "
        "of a speaker (the name before _nohash_) in one partition, and too few speakers or files fall in "
        "this one at --validation_percentage 10 --testing_percentage 10: add files from more speakers or "
        "raise the percentage)"
    )


# --------------------------------------------------------------------------------------
# Capture sets: a folder of reviewed kwsd captures (kwsd run's WAVs with their sidecars).

#: A capture of 3 s: 1 s of one thing, then the 1 s the model heard when it fired, then 1 s after.
CAPTURE_FIRST_MS = 41_000  # the audio time of the WAV's first sample
CAPTURE_DECISION_MS = 43_000  # the end of the window that fired: 2 s into the WAV


def planted(rate: int = RATE) -> np.ndarray[Any, Any]:
    """Before the window: a constant 1000; the window: a ramp 1..rate; after it: -1000."""
    return np.concatenate((np.full(rate, 1000), np.arange(1, rate + 1) % 30000, np.full(rate, -1000))).astype(
        np.int16
    )


def make_capture(
    root: Path,
    folder: str,
    name: str,
    samples: np.ndarray[Any, Any] | None = None,
    *,
    rate: int = RATE,
    decision_ms: float = CAPTURE_DECISION_MS,
    first_ms: float = CAPTURE_FIRST_MS,
    sidecar: dict[str, Any] | None = None,
) -> Path:
    """root/<folder>/<name>.wav and its sidecar, as kwsd run writes them and kwsd review files them."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    wav = root / folder / f"{name}.wav"
    write_wav(wav, planted(rate) if samples is None else samples, rate)
    verdict = "wrong" if folder == UNKNOWN_LABEL else "correct"
    side = {
        "kind": "detection",
        "label": "yes",
        "score": 0.91,
        "audio_time_ms": decision_ms,
        "first_sample_audio_time_ms": first_ms,
        "sample_rate_hz": rate,
        "model": {"name": "demo", "sha256": "ab" * 32},
        "review": {"verdict": verdict, "label": folder, "time": "2026-01-02T03:04:05Z"},
    }
    if sidecar is not None:
        side = sidecar
    wav.with_suffix(".json").write_text(json.dumps(side), encoding="utf-8")
    return wav


@pytest.fixture
def captures(tmp_path: Path) -> Path:
    """reviewed/: 3 false alarms in _unknown_/, 2 correct yes, 1 filed as another word (hey)."""
    root = tmp_path / "reviewed"
    for n in range(3):
        make_capture(root, UNKNOWN_LABEL, f"pi_nohash_{n}")
    for n in range(2):
        make_capture(root, "yes", f"pi_nohash_{n}")
    make_capture(root, "hey", "pi_nohash_0")
    return root


def test_a_capture_set_uses_every_clip_with_its_folder_s_label_all_in_training(captures: Path) -> None:
    data = load_dataset(captures, YES_NO, seed=1)
    assert data.capture_set
    assert data.labels == [SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no"]
    assert sorted((i.label, i.path) for i in data.items["training"]) == [
        (UNKNOWN_LABEL, "_unknown_/pi_nohash_0.wav"),
        (UNKNOWN_LABEL, "_unknown_/pi_nohash_1.wav"),
        (UNKNOWN_LABEL, "_unknown_/pi_nohash_2.wav"),
        (UNKNOWN_LABEL, "hey/pi_nohash_0.wav"),  # another word: a negative too
        ("yes", "yes/pi_nohash_0.wav"),
        ("yes", "yes/pi_nohash_1.wav"),
    ]
    # No silence, no sampling, no held-out part; "no" has no folder and needs none.
    assert data.items["validation"] == [] and data.items["testing"] == []
    assert data.counts()["training"] == {SILENCE_LABEL: 0, UNKNOWN_LABEL: 4, "yes": 2, "no": 0}
    assert data.words["training"] == {
        "_unknown_": ["_unknown_/pi_nohash_0.wav", "_unknown_/pi_nohash_1.wav", "_unknown_/pi_nohash_2.wav"],
        "hey": ["hey/pi_nohash_0.wav"],
        "yes": ["yes/pi_nohash_0.wav", "yes/pi_nohash_1.wav"],
    }
    assert data.report.lines() == [
        "checked 6 file(s) with kwsd's reader",
        "reviewed kwsd captures: 6 clip(s) (_unknown_ 4, yes 2), each cut to the 1000 ms the model heard "
        "when it fired (a near-miss: at its peak); all training (held-out figures come from the other "
        "sources); _unknown_ from the folders _unknown_/ 3, hey/ 1",
        f"no background noise ({captures / '_background_noise_'} does not exist): its clips get no "
        "background mix (they are room audio already)",
    ]  # the sidecars are read, not listed as ignored
    assert data.noise == {}


def test_each_capture_is_cut_to_the_window_the_model_heard(captures: Path) -> None:
    data = load_dataset(captures, YES_NO, seed=1)
    window = planted()[RATE : 2 * RATE]  # the second second: the ramp, nothing before or after it
    for item in data.items["training"]:
        assert item.path is not None
        np.testing.assert_array_equal(data.clip(item.path), window / 32768)
        assert data.capture_ends[item.path] == 2 * RATE
    assert data.report.cropped == {} and data.report.padded == {} and data.report.capture_padded == {}


def test_a_capture_that_began_late_is_zero_padded_at_the_start(tmp_path: Path) -> None:
    root = tmp_path / "reviewed"
    # kwsd had heard only 600 ms when it fired: the capture starts at audio time 0.
    make_capture(root, "yes", "pi_nohash_0", planted(), decision_ms=600, first_ms=0)
    data = load_dataset(root, YES_NO, seed=1)
    clip = data.clip("yes/pi_nohash_0.wav")
    np.testing.assert_array_equal(clip[: RATE * 400 // 1000], 0)
    np.testing.assert_array_equal(clip[RATE * 400 // 1000 :], planted()[: RATE * 600 // 1000] / 32768)
    assert data.report.capture_padded == {"yes/pi_nohash_0.wav": 600.0}
    assert (
        "1 capture(s) hold less than the 1000 ms the model heard (the capture began late): the rest of the "
        "window is zeros; the least: yes/pi_nohash_0.wav (600 ms)"
    ) in data.report.lines()


def test_a_capture_at_another_rate_is_resampled_and_cut_in_its_own_time(tmp_path: Path) -> None:
    root = tmp_path / "reviewed"
    t = np.arange(3 * 48000) / 48000
    fired = (t >= 1.0) & (t < 2.0)  # a 1 kHz tone in the window that fired, silence around it
    audio = np.rint(np.sin(2 * np.pi * 1000 * t) * 0.5 * 32767 * fired).astype(np.int16)
    make_capture(root, UNKNOWN_LABEL, "pi_nohash_0", audio, rate=48000)
    data = load_dataset(root, YES_NO, seed=1)
    clip = data.clip("_unknown_/pi_nohash_0.wav")
    assert clip.shape == (RATE,)
    assert int(np.argmax(np.abs(np.fft.rfft(clip)))) == 1000  # 1 s at 16 kHz: bin = Hz
    assert np.sqrt(np.mean(clip[200:-200] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert data.report.converted == {"_unknown_/pi_nohash_0.wav": "48000 Hz, 1 channel, pcm16"}


def test_a_capture_set_with_list_files_is_split_by_them(captures: Path) -> None:
    (captures / "validation_list.txt").write_text("_unknown_/pi_nohash_0.wav\n")
    (captures / "testing_list.txt").write_text("yes/pi_nohash_1.wav\n")
    data = load_dataset(captures, YES_NO, seed=1)
    assert [(i.label, i.path) for i in data.items["validation"]] == [
        (UNKNOWN_LABEL, "_unknown_/pi_nohash_0.wav")
    ]
    assert [(i.label, i.path) for i in data.items["testing"]] == [("yes", "yes/pi_nohash_1.wav")]
    assert len(data.items["training"]) == 4
    assert data.report.notes[0].endswith(
        "; training 4, validation 1, testing 1 (by the list files); _unknown_ from the folders "
        "_unknown_/ 3, hey/ 1"
    )


def test_a_wav_without_its_sidecar_in_a_capture_set_is_named(captures: Path) -> None:
    lost = captures / "yes" / "pi_nohash_1.wav"
    lost.with_suffix(".json").unlink()
    with pytest.raises(DatasetError) as error:
        load_dataset(captures, YES_NO, seed=1)
    assert str(error.value) == (
        f"{lost}: no capture sidecar pi_nohash_1.json beside it, while 5 of the 6 .wav files in {captures} "
        "have one (1 have none): in a folder of kwsd captures every WAV needs its sidecar (kwsd review keeps "
        "them), in a folder of ordinary clips none has one; restore it or move the WAV out"
    )


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        (
            "{not json",
            "its capture sidecar pi_nohash_0.json is not valid JSON (Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1))",
        ),
        ("[1, 2]", "its capture sidecar pi_nohash_0.json is not a JSON object"),
        (
            '{"audio_time_ms": 43000, "sample_rate_hz": 16000}',
            "its capture sidecar pi_nohash_0.json has none for first_sample_audio_time_ms (expected a "
            "number of ms, as kwsd run writes it)",
        ),
        (
            '{"audio_time_ms": "soon", "first_sample_audio_time_ms": 0, "sample_rate_hz": 16000}',
            "its capture sidecar pi_nohash_0.json has 'soon' for audio_time_ms (expected a number of ms, "
            "as kwsd run writes it)",
        ),
        (
            '{"audio_time_ms": 43000, "first_sample_audio_time_ms": 41000}',
            "its capture sidecar pi_nohash_0.json has none for sample_rate_hz (expected a positive whole "
            "number)",
        ),
        (
            '{"audio_time_ms": 43000, "first_sample_audio_time_ms": 41000, "sample_rate_hz": 48000}',
            "its capture sidecar pi_nohash_0.json says sample_rate_hz 48000, the WAV is 16000 Hz (not the "
            "recording the sidecar describes)",
        ),
        (
            '{"audio_time_ms": 49000, "first_sample_audio_time_ms": 41000, "sample_rate_hz": 16000}',
            "its capture sidecar pi_nohash_0.json puts the model's window at 7000..8000 ms, outside the "
            "recording (0..3000 ms)",
        ),
    ],
)
def test_a_bad_sidecar_stops_the_load_naming_the_wav_or_is_skipped(
    captures: Path, sidecar: str, reason: str
) -> None:
    bad = captures / "yes" / "pi_nohash_0.wav"
    bad.with_suffix(".json").write_text(sidecar, encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        load_dataset(captures, YES_NO, seed=1)
    assert (
        str(error.value) == f"{bad}: {reason} (fix or remove it, or leave bad files out with skip_bad_files)"
    )
    settings = DatasetSettings(wanted_words=("yes", "no"), skip_bad_files=True)
    data = load_dataset(captures, settings, seed=1)
    assert data.report.skipped == {"yes/pi_nohash_0.wav": reason}
    assert [i.path for i in data.items["training"] if i.label == "yes"] == ["yes/pi_nohash_1.wav"]


def test_a_capture_without_review_is_used_and_said(captures: Path) -> None:
    make_capture(captures, "yes", "pi_nohash_7", sidecar={
        "audio_time_ms": CAPTURE_DECISION_MS, "first_sample_audio_time_ms": CAPTURE_FIRST_MS,
        "sample_rate_hz": RATE,
    })  # fmt: skip
    data = load_dataset(captures, YES_NO, seed=1)
    assert data.counts()["training"]["yes"] == 3
    assert data.report.notes[1] == (
        "1 capture(s) have no review in their sidecar (not filed by kwsd review): their folder is taken "
        "as their label, e.g. yes/pi_nohash_7.wav"
    )


def test_the_capture_windows_are_in_the_feature_cache_key(captures: Path) -> None:
    from kwsd.frontend import FrontendKind, FrontendSpec
    from kwsd_tools.training.features import Augmentation, _cache_key

    spec = FrontendSpec(FrontendKind.MFCC, window_stride_ms=20)
    key = _cache_key(load_dataset(captures, YES_NO, seed=1), spec, "training", augmentation=Augmentation(),
                     copies=1, seed=1)  # fmt: skip
    side = captures / "yes" / "pi_nohash_0.json"
    moved = {**json.loads(side.read_text()), "audio_time_ms": CAPTURE_DECISION_MS - 500}
    side.write_text(json.dumps(moved))
    again = _cache_key(load_dataset(captures, YES_NO, seed=1), spec, "training", augmentation=Augmentation(),
                       copies=1, seed=1)  # fmt: skip
    assert again != key


# Capture sets among the sources (tools/kwsd_tools/training/sources.py).


def test_a_capture_set_beside_a_data_set_loads_with_its_held_out_parts_empty(
    captures: Path, spread: Path
) -> None:
    from kwsd_tools.training.sources import DataSource, load_sources

    sources = [DataSource("words", spread), DataSource("room", captures, 2.0)]
    words, room = load_sources(sources, YES_NO, seed=1)
    assert not words.capture_set and room.capture_set
    assert [len(room.items[p]) for p in PARTITIONS] == [6, 0, 0]
    assert all(words.items[p] for p in PARTITIONS)


def test_a_capture_set_alone_is_refused_unless_lists_split_it(captures: Path) -> None:
    from kwsd_tools.training.sources import DataSource, load_sources
    from kwsd_tools.training.trainer import TrainingError

    with pytest.raises(TrainingError) as error:
        load_sources([DataSource("reviewed", captures)], YES_NO, seed=1)
    assert str(error.value) == (
        f"--data_dir reviewed={captures}:1: no source has validation clips (reviewed kwsd captures are all "
        f"training data): give the captures beside a data set that has them, e.g. --data_dir words=DIR "
        f"--data_dir reviewed={captures}:2, or split them with validation_list.txt and testing_list.txt"
    )
    (captures / "validation_list.txt").write_text("_unknown_/pi_nohash_0.wav\n")
    (captures / "testing_list.txt").write_text("yes/pi_nohash_1.wav\n")
    (data,) = load_sources([DataSource("reviewed", captures)], YES_NO, seed=1)
    assert [len(data.items[p]) for p in PARTITIONS] == [4, 1, 1]


def test_a_capture_set_for_evaluation_only_is_refused(captures: Path, spread: Path) -> None:
    from kwsd_tools.training.sources import DataSource, load_sources
    from kwsd_tools.training.trainer import TrainingError

    with pytest.raises(TrainingError) as error:
        load_sources([DataSource("words", spread), DataSource("room", captures, 0.0)], YES_NO, seed=1)
    assert str(error.value) == (
        f"--data_dir room={captures}:0: reviewed kwsd captures are all training data, so weight 0 "
        "(evaluation only) leaves nothing of them to use: give it a weight above 0, or split it with "
        "validation_list.txt and testing_list.txt"
    )


# --------------------------------------------------------------------------------------
# Custom data: crying vs silence, 22.05 kHz, 5 s clips; and a set made by tools/synth.py.


def test_crying_versus_silence_at_22050_hz_and_5_s_clips(tmp_path: Path) -> None:
    root = tmp_path / "baby"
    rng = np.random.default_rng(2)
    (root / "crying").mkdir(parents=True)
    (root / "silence").mkdir()
    for i in range(20):  # names without _nohash_: each file hashes on its own
        cry = tone(5 * 22050, level=0.5, hz=400 + 10 * i, rate=22050)
        write_wav(root / "crying" / f"cry{i:02d}.wav", cry, 22050)
        quiet = rng.integers(-100, 100, 5 * 22050).astype(np.int16)
        write_wav(root / "silence" / f"room{i:02d}.wav", quiet, 22050)
    settings = DatasetSettings(
        sample_rate_hz=22050, clip_duration_ms=5000, wanted_words=("crying", "silence")
    )
    data = load_dataset(root, settings, seed=1)
    assert data.labels == [SILENCE_LABEL, UNKNOWN_LABEL, "crying", "silence"]
    assert data.label_index("silence") == 3  # the user's folder, not _silence_
    assert data.clip_samples == 110250
    for partition in PARTITIONS:
        assert data.items[partition], partition
        for item in data.items[partition]:
            if item.path is not None:
                assert data.clip(item.path).shape == (110250,)
    assert sum(len(data.items[p]) for p in PARTITIONS) == 40 + sum(
        data.counts()[p][SILENCE_LABEL] for p in PARTITIONS
    )
    assert data.report.converted == {} and data.report.cropped == {} and data.report.padded == {}
    assert data.noise == {}


def test_a_synthetic_set_from_tools_synth_loads(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed")
    from kwsd_tools import synth

    synth.synthesise(tmp_path / "synth", ("yes", "no"), ("up",), voice_count=8, repetitions=1, seed=6)
    data = load_dataset(tmp_path / "synth", YES_NO, seed=1)
    assert sorted(data.noise) == ["brown_noise.wav", "mains_hum.wav", "pink_noise.wav", "white_noise.wav"]
    assert data.report.converted == {} and data.report.cropped == {} and data.report.padded == {}
    assert data.report.checked == 8 * 3 + 4
    for partition in PARTITIONS:
        voices = {speaker_of(i.path) for i in data.items[partition] if i.path}
        for other in PARTITIONS:
            if other != partition:
                assert not voices & {speaker_of(i.path) for i in data.items[other] if i.path}


# --------------------------------------------------------------------------------------
# read_clip (kwsd's reader, as the tools use it).


def test_read_clip_resamples_and_mixes_down_and_says_what_it_converted(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    pure = np.rint(np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
    path = write_pcm(tmp_path / "stereo_44k.wav", np.column_stack((pure, pure)), 44100)
    samples, converted = ds.read_clip(path, 16000)
    assert converted == "44100 Hz, 2 channels, pcm16"
    assert samples.dtype == np.int16
    assert len(samples) == 16000
    assert int(np.argmax(np.abs(np.fft.rfft(samples.astype(np.float64))))) == 440


def test_read_clip_passes_16_bit_mono_through(tmp_path: Path) -> None:
    clip = np.random.default_rng(0).integers(-20000, 20000, 16000).astype("<i2")
    samples, converted = ds.read_clip(write_pcm(tmp_path / "a.wav", clip, 16000), 16000)
    assert converted is None
    np.testing.assert_array_equal(samples, clip)


def test_read_clip_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError) as missing:
        ds.read_clip(tmp_path / "nope.wav", 16000)
    assert str(missing.value) == f"{tmp_path / 'nope.wav'}: no such file (expected a WAV file)"
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(AudioFormatError) as not_wav:
        ds.read_clip(text, 16000)
    assert str(not_wav.value).startswith(f"{text}: not a WAV file")


def test_converted_text_is_one_line_by_format() -> None:
    assert ds.converted_text(
        {
            "_background_noise_/hum.wav": "48000 Hz, 1 channel, pcm16",
            "yes/b_nohash_0.wav": "16000 Hz, 2 channels, pcm16",
        },
        16000,
    ) == (
        "2 file(s) were converted to 16000 Hz mono int16 by kwsd's reader: "
        "1 x 16000 Hz, 2 channels, pcm16 (e.g. yes/b_nohash_0.wav); "
        "1 x 48000 Hz, 1 channel, pcm16 (e.g. _background_noise_/hum.wav)"
    )


# --------------------------------------------------------------------------------------
# --data_url.


def _tar_gz(archive: Path, source: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    return archive


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    names = speakers("training", 2) + speakers("validation", 1) + speakers("testing", 1)
    source = make_set(tmp_path / "source", {"yes": names, "no": names})
    return _tar_gz(tmp_path / "speech_commands_test.tar.gz", source)


def test_a_file_url_archive_is_extracted_once(tmp_path: Path, archive: Path) -> None:
    data_dir = tmp_path / "data"
    url = archive.as_uri()
    download_and_extract(url, data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == [
        ".kwsd_extracted",
        "_background_noise_",
        "no",
        "yes",
    ]
    assert (data_dir / ".kwsd_extracted").read_text() == url + "\n"
    assert load_dataset(data_dir, YES_NO, seed=1).counts()["training"]["yes"] == 2
    victim = next((data_dir / "yes").iterdir())
    victim.unlink()
    download_and_extract(url, data_dir)  # done before: nothing happens
    assert not victim.exists()
    shutil.rmtree(data_dir / "yes")
    shutil.rmtree(data_dir / "no")
    with pytest.raises(DatasetError) as error:
        load_dataset(data_dir, YES_NO, seed=1)
    assert str(error.value) == (
        f"{data_dir}: no .wav files found (expected one folder per word: {data_dir}/<word>/*.wav; "
        f".kwsd_extracted says an archive was extracted here before ({url}): delete that file to extract "
        "it again)"
    )
    download_and_extract("", tmp_path / "untouched")  # local data only
    assert not (tmp_path / "untouched").exists()


def test_a_zip_is_extracted_too(tmp_path: Path) -> None:
    zipped = tmp_path / "custom.zip"
    with zipfile.ZipFile(zipped, "w") as out:
        out.writestr("crying/a.wav", b"RIFF")
        out.writestr("../escape.txt", b"no")  # zipfile drops the ..
    download_and_extract(zipped.as_uri(), tmp_path / "data")
    assert (tmp_path / "data" / "crying" / "a.wav").read_bytes() == b"RIFF"
    assert not (tmp_path / "escape.txt").exists()


def test_data_url_errors_name_the_url(tmp_path: Path) -> None:
    cases = {
        "ftp://example.org/a.tar.gz": "--data_url ftp://example.org/a.tar.gz: expected an http://, "
        "https:// or file:// URL (or an empty value for local data only)",
        (tmp_path / "none.tgz").as_uri(): f"--data_url {(tmp_path / 'none.tgz').as_uri()}: no such file "
        f"{tmp_path / 'none.tgz'}",
    }
    not_archive = tmp_path / "a.tar.gz"
    not_archive.write_bytes(b"this is not gzip")
    cases[not_archive.as_uri()] = (
        f"--data_url {not_archive.as_uri()}: {not_archive} is not an archive "
        "(expected .tar.gz, .tgz, .tar or .zip)"
    )
    for url, message in cases.items():
        with pytest.raises(DatasetError) as error:
            download_and_extract(url, tmp_path / "data")
        assert str(error.value) == message
    assert not (tmp_path / "data" / ".kwsd_extracted").exists()


def test_a_tar_with_a_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"no"))
    with pytest.raises(DatasetError) as error:
        download_and_extract(evil.as_uri(), tmp_path / "data")
    assert str(error.value).startswith(f"--data_url {evil.as_uri()}: cannot extract {evil} (")
    assert not (tmp_path / "outside.txt").exists()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on loopback serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_download_shows_progress_and_keeps_the_archive(
    tmp_path: Path, archive: Path, http_root: tuple[str, Path]
) -> None:
    base, www = http_root
    shutil.copy(archive, www / archive.name)
    bar = io.StringIO()
    data_dir = tmp_path / "data"
    download_and_extract(f"{base}/{archive.name}", data_dir, progress_stream=bar)
    size_mb = archive.stat().st_size / 1e6
    last = bar.getvalue().split("\r")[-1]
    assert re.fullmatch(
        rf"{re.escape(archive.name)}  {size_mb:.1f}/{size_mb:.1f} MB  100%  [0-9.]+ MB/s  ETA 0:00\n", last
    ), repr(last)
    assert (data_dir / archive.name).read_bytes() == archive.read_bytes()
    assert not (data_dir / (archive.name + ".part")).exists()
    assert (data_dir / "yes").is_dir()


def test_an_http_error_names_the_url_and_leaves_no_part_file(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, _ = http_root
    with pytest.raises(DatasetError) as error:
        download_and_extract(f"{base}/missing.tar.gz", tmp_path / "data", progress=False)
    assert str(error.value) == f"--data_url {base}/missing.tar.gz: download failed (HTTP 404 File not found)"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []


def test_items_are_plain_values() -> None:
    assert Item("yes", "yes/a_nohash_0.wav") == Item("yes", "yes/a_nohash_0.wav")
    assert hash(Item(SILENCE_LABEL, None)) == hash(Item(SILENCE_LABEL, None))
