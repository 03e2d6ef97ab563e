"""tools/plot.py: a confusion matrix and a spectrogram as PNG files, and its one-line errors.

The pictures need matplotlib (skipped without it); the confusion matrix also needs espeak-ng and
sox (tools/synth.py makes its data set, about a second). The errors need neither.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from demo_words import WORDS

from kwsd.audio import read_wav, write_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.frontend import compute_features
from kwsd_tools import plot, synth
from kwsd_tools.training.dataset import which_set

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install matplotlib)",
)
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng and sox are needed"
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOICES = 20
SYNTH_SEED = 1
SPLIT = plot.SplitChoice(validation_percentage=30.0, testing_percentage=30.0)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def pixels(figure: Any) -> tuple[int, int]:
    width_in, height_in = figure.get_size_inches()
    return int(width_in * plot.DPI + 1e-6), int(height_in * plot.DPI + 1e-6)  # matplotlib truncates


def panels(figure: Any) -> list[Any]:
    return [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plot") / "synth"
    synth.synthesise(out, WORDS, ("bed",), voice_count=VOICES, repetitions=1, seed=SYNTH_SEED)
    return out


# --------------------------------------------------------------------------------------
# The confusion matrix.


@needs_matplotlib
@needs_espeak
def test_the_confusion_matrix_of_the_demo_bundle_names_its_labels_and_counts_the_testing_clips(
    synth_dir: Path, tmp_path: Path
) -> None:
    bundle = read_bundle(demo_bundle_path())
    result = plot.confusion_of(bundle, synth_dir, partition="testing", split=SPLIT, workers=1)

    # Rows are the truth: every testing clip once, in the bundle's label order.
    testing_voices = sum(
        which_set(f"{voice.tag}_nohash_0.wav", 30, 30) == "testing"
        for voice in synth.make_voices(VOICES, SYNTH_SEED)
    )
    extra = math.ceil(len(WORDS) * testing_voices * 10 / 100)  # silence and unknown items, 10% each
    assert result.labels == bundle.labels == ("_silence_", "_unknown_", *WORDS)
    assert result.matrix.sum(axis=1).tolist() == [extra, extra, *[testing_voices] * len(WORDS)]
    assert result.count == (len(WORDS) * testing_voices + 2 * extra)

    figure = plot.confusion_figure(result)
    (ax,) = panels(figure)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(bundle.labels)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(bundle.labels)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted label", "true label")
    assert ax.get_title() == (
        f"demo on synth (testing): accuracy {100 * result.accuracy:.1f}% "
        f"({result.correct}/{result.count}), N = {result.count}"
    )
    assert [int(t.get_text()) for t in ax.texts] == result.matrix.ravel().tolist()
    # Colour is the share of the row.
    share = ax.images[0].get_array()
    np.testing.assert_allclose(share.sum(axis=1), 1.0)

    out = plot.save_figure(figure, tmp_path / "confusion.png")
    assert png_size(out) == pixels(figure)


@needs_matplotlib
@needs_espeak
def test_the_confusion_command_writes_the_png_and_says_the_accuracy(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.png"
    argv = ["confusion", str(demo_bundle_path()), "--data_dir", str(synth_dir), "--out", str(out)]
    code = plot.main([*argv, "--validation_percentage", "30", "--testing_percentage", "30"])
    printed = capsys.readouterr()
    assert (code, printed.err) == (0, "")
    assert printed.out.startswith(f"{out}: demo on testing: accuracy ")
    width, height = png_size(out)
    assert (width, height) == (1396, 1252)  # 12 labels


# --------------------------------------------------------------------------------------
# The spectrogram and the features.


@needs_matplotlib
def test_the_spectrogram_shows_the_whole_file_over_the_model_features_frame_by_frame(tmp_path: Path) -> None:
    bundle = read_bundle(demo_bundle_path())
    spec = bundle.frontend
    samples = read_wav(demo_wav_path(), spec.sample_rate_hz)
    duration_s = len(samples) / spec.sample_rate_hz

    figure = plot.spectrogram_figure(demo_wav_path(), bundle, model_given=False)
    top, bottom = panels(figure)
    assert top.get_shared_x_axes().joined(top, bottom)
    assert bottom.get_xlim() == (0.0, duration_s)
    assert bottom.get_xlabel() == "time (s)"
    assert (top.get_ylabel(), bottom.get_ylabel()) == ("frequency (Hz)", "MFCC index (0: log energy)")

    # Top: 30 ms Hann windows every 10 ms at 16 kHz, a 512-point FFT: 257 bins up to 8000 Hz.
    spectrogram = top.images[0].get_array()
    assert spectrogram.shape == (257, 1 + (len(samples) - 480) // 160)
    assert top.images[0].get_extent()[2:] == [0.0, 8000.0]

    # Bottom: one row per feature, one column per frame the daemon computes; each clip's frames
    # are exactly the training path's.
    features = np.asarray(bottom.images[0].get_array())
    frames = 1 + (len(samples) - spec.window_samples) // spec.stride_samples
    assert features.shape == (spec.feature_count, frames) == (13, frames)
    np.testing.assert_allclose(
        features[:, : spec.frame_count], compute_features(spec, samples[: spec.clip_samples]).T, rtol=1e-5
    )

    out = plot.save_figure(figure, tmp_path / "spectrogram.png")
    assert png_size(out) == pixels(figure)


@needs_matplotlib
def test_the_spectrogram_command_uses_the_bundle_window_with_m(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.png"
    argv = ["spectrogram", str(demo_wav_path()), "-m", str(demo_bundle_path()), "--out", str(out)]
    assert plot.main(argv) == 0
    assert capsys.readouterr().out == f"{out}: spectrogram and demo's features of {demo_wav_path()}\n"
    assert png_size(out) == (1920, 900)


@needs_matplotlib
def test_a_stereo_44100_hz_file_is_drawn_at_its_own_rate_and_its_features_at_the_model_rate(
    tmp_path: Path,
) -> None:
    t = np.arange(44100) / 44100
    tone = np.rint(np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16)
    wav = tmp_path / "stereo.wav"
    write_wav(wav, tone, 44100)
    figure = plot.spectrogram_figure(wav, read_bundle(demo_bundle_path()), model_given=False)
    top, bottom = panels(figure)
    assert top.images[0].get_extent()[3] == 22050.0
    assert bottom.images[0].get_array().shape == (13, 1 + (16000 - 480) // 320)
    assert bottom.get_xlim() == (0.0, 1.0)


# --------------------------------------------------------------------------------------
# Bad input: one line, kwsd's exit codes, no picture.


def test_a_wav_that_does_not_exist_is_exit_66(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.wav"
    out = tmp_path / "x.png"
    assert plot.main(["spectrogram", str(missing), "--out", str(out)]) == 66
    assert capsys.readouterr().err == f"plot: error: {missing}: no such file (expected a WAV file)\n"
    assert not out.exists()


def test_a_file_that_is_not_a_bundle_is_exit_67(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "model.kwsd"
    fake.write_text("not a bundle\n")
    message = (
        f"plot: error: {fake}: not a kwsd model bundle (not a valid zip archive: File is not a zip file)\n"
    )
    out = tmp_path / "x.png"
    assert plot.main(["spectrogram", str(demo_wav_path()), "-m", str(fake), "--out", str(out)]) == 67
    assert capsys.readouterr().err == message
    assert plot.main(["confusion", str(fake), "--data_dir", str(tmp_path), "--out", str(out)]) == 67
    assert capsys.readouterr().err == message
    assert not out.exists()


def test_a_data_folder_without_the_bundle_words_is_refused_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    write_wav(data / "cat" / "a_nohash_0.wav", np.zeros(16000, np.int16), 16000)
    out = tmp_path / "x.png"
    bundle = demo_bundle_path()
    assert plot.main(["confusion", str(bundle), "--data_dir", str(data), "--out", str(out)]) == 65
    assert capsys.readouterr().err == (
        f"plot: error: {data}: none of the bundle's words ({', '.join(WORDS)}) has a folder of .wav files "
        f"here (its word folders: cat); expected {data}/<word>/*.wav for the words of {bundle}\n"
    )
    (data / "yes").mkdir()
    write_wav(data / "yes" / "a_nohash_0.wav", np.zeros(16000, np.int16), 16000)
    assert plot.main(["confusion", str(bundle), "--data_dir", str(data), "--out", str(out)]) == 65
    assert capsys.readouterr().err == (
        f"plot: error: {data}: no .wav files for the bundle's word(s) {', '.join(WORDS[1:])} "
        f"(the bundle's words: {', '.join(WORDS)}; the folder's: cat, yes)\n"
    )
    assert not out.exists()


def test_an_output_folder_that_does_not_exist_is_exit_73_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "x.png"
    assert plot.main(["spectrogram", str(demo_wav_path()), "--out", str(out)]) == 73
    assert capsys.readouterr().err == f"plot: error: {out}: the folder {out.parent} does not exist\n"


def test_without_matplotlib_the_message_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "x.png"
    assert plot.main(["spectrogram", str(demo_wav_path()), "--out", str(out)]) == 69
    assert capsys.readouterr().err == (
        "plot: error: matplotlib is not installed: pip install matplotlib (or pip install 'kwsd[train]')\n"
    )
    assert not out.exists()
