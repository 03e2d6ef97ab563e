"""tools/train_demo.py: smoother tuning and scoring, and one real (tiny) training run.

The slow tests run ``train_demo.py --quick`` once (espeak-ng + sox data, TensorFlow
training, export) and check what it wrote with kwsd's own reader and classifier; the
stored test accuracy is recomputed here from the audio, independently of the tool.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_tools import missing_training_tools

from kwsd import __version__
from kwsd.audio import read_wav
from kwsd.bundle import read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.detection import check_detection, resolve_detection
from kwsd.frontend import FrontendKind, FrontendSpec, compute_features
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.pipeline import Detection, Pipeline
from kwsd.smoother import FiringRule, RecognizeCommands, SmootherSettings
from tools.training.dataset import which_set

REPO = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO / "tools"
sys.path.insert(0, str(TOOLS_DIR))

import train_demo  # noqa: E402  (tools/ is not a package)

QUICK_LABELS = [SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no", "stop", "go"]


# --------------------------------------------------------------------------------------
# Fast tests.


# The split rule and reading files: tests/test_dataset.py (tools/training/dataset.py).


MFCC_SPEC = FrontendSpec(FrontendKind.MFCC)


def test_a_window_starts_its_span_before_it_ends() -> None:
    # 49 frames of 30 ms every 20 ms cover 990 ms of a 1000 ms clip.
    assert train_demo.clip_start_ms(MFCC_SPEC, 2990) == 2000.0
    micro = FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)
    assert train_demo.clip_start_ms(micro, 2990) == 2000.0
    # 98 frames of 30 ms every 10 ms cover all of it.
    assert train_demo.clip_start_ms(FrontendSpec(FrontendKind.MFCC, window_stride_ms=10), 2990) == 1990.0


def test_smooth_reports_kwsd_smoother_detections_at_window_ends() -> None:
    # REFERENCE.md's worked example: labels _silence_, a, b; window 1000 / threshold 0.2 /
    # suppression 500 / minimum count 3; [0,1,0] at 0..900 fires "a" at 300; [0,0,1] at
    # 1000..1900 fires "b" at 1500 with score 6/11. Then silence wins, and is not reported.
    labels = [SILENCE_LABEL, "a", "b"]
    times = np.arange(0, 4000, 100)
    scores = np.array([[0, 1, 0]] * 10 + [[0, 0, 1]] * 10 + [[1, 0, 0]] * 20, np.float32)
    detections = train_demo.smooth(times, scores, labels, SmootherSettings(1000, 0.2, 500, 3))
    assert [(d.label, d.time_ms) for d in detections] == [("a", 300), ("b", 1500)]
    assert [d.score for d in detections] == pytest.approx([1.0, 6 / 11])


def test_stream_scoring_counts_like_the_reference_from_window_starts() -> None:
    truth = [("yes", 1000.0), ("no", 4000.0)]
    detections = [  # (label, score, window end); the window starts 990 ms earlier
        Detection("yes", 0.9, 2190),  # correct
        Detection("yes", 0.9, 2490),  # second hit on a matched word: wrong
        Detection("go", 0.9, 5090),  # wrong label: wrong
        Detection("no", 0.9, 8990),  # nothing within 750 ms: false positive
    ]
    assert train_demo.score_stream(detections, truth, MFCC_SPEC) == train_demo.StreamScore(2, 1, 2, 1)
    # The tolerance is measured from the window's start (end - 990 ms), not end - 1000 ms.
    edge = 1000 + 990 + 750
    assert train_demo.score_stream([Detection("yes", 0.9, edge)], truth, MFCC_SPEC).correct == 1
    late = train_demo.score_stream([Detection("yes", 0.9, edge + 1)], truth, MFCC_SPEC)
    assert late.false_positive == 1


def _tuning_scores(
    truth: list[tuple[str, float]], labels: list[str], *, end_ms: int, peak: float
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Window scores every 20 ms: each word's label at ``peak`` (the rest on silence) in
    the windows that hold most of the word, silence at 0.95 elsewhere."""
    times = np.arange(990, end_ms, 20)
    scores = np.zeros((len(times), len(labels)), np.float32)
    scores[:, 0] = 0.95
    scores[:, 1] = 0.05
    for label, start in truth:
        inside = (times >= start + 700) & (times <= start + 1300)
        scores[inside] = 0.0
        scores[inside, labels.index(label)] = peak
        scores[inside, 0] = 1 - peak
    return times, scores


def test_tuning_picks_a_valid_setting_in_the_middle_of_the_best_thresholds() -> None:
    labels = [SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no"]
    truth = [("yes", 500.0), ("no", 3500.0), ("yes", 6500.0), ("no", 9500.0)]
    times, scores = _tuning_scores(truth, labels, end_ms=12_000, peak=0.72)
    detection, result = train_demo.tune_detection(times, scores, truth, labels, MFCC_SPEC)
    assert result == train_demo.StreamScore(4, 4, 0, 0)
    # Written into the bundle as it is: it must be what kwsd.detection accepts, unchanged.
    assert check_detection(detection) == detection
    settings, clip_stride_ms = resolve_detection(detection, {}, window_stride_ms=20)
    assert clip_stride_ms == 20
    assert settings.rule is FiringRule.TF
    assert settings.minimum_count == 3
    # Every window and suppression finds all four words for thresholds below the averaged
    # peak; the widest run of equally good thresholds is the shortest window's (its average
    # reaches the full 0.72), 0.30..0.70, whose middle is 0.50; suppression nearest 1000 ms.
    assert (settings.average_window_ms, settings.threshold, settings.suppression_ms) == (500, 0.5, 1000)
    # And the chosen setting, run through kwsd's smoother, finds exactly the four words.
    found = train_demo.smooth(times, scores, labels, settings)
    assert [d.label for d in found] == [label for label, _ in truth]


def test_argmax_runs_are_stamped_with_window_ends() -> None:
    labels = [SILENCE_LABEL, UNKNOWN_LABEL, "yes"]
    times = np.arange(990, 990 + 20 * 10, 20)
    scores = np.zeros((10, 3), np.float32)
    scores[:, 0] = 1.0
    scores[2:6] = [0.1, 0.0, 0.9]
    scores[4, 2] = 0.95
    scores[8] = [0.0, 1.0, 0.0]  # a single window: too short for a run
    assert train_demo.argmax_runs(times, scores, labels) == [("yes", 1030, 1090, pytest.approx(0.95))]


def test_bare_tflite_leaves_a_labels_file_beside_it_train_py_style(tmp_path: Path) -> None:
    target = tmp_path / "models" / "tiny_conv.tflite"
    written = train_demo.write_bare_tflite(b"model", [SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no"], target)
    assert target.read_bytes() == b"model"
    assert (tmp_path / "models" / "tiny_conv_labels.txt").read_text() == "_silence_\n_unknown_\nyes\nno\n"
    assert written == {
        "tflite": str(target),
        "labels_file": str(tmp_path / "models" / "tiny_conv_labels.txt"),
        "bytes": 5,
    }


def test_architecture_flags_parse_and_bad_ones_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert train_demo._pair("2,13") == (2, 13)
    for bad in ("2", "2,x", "0,4"):
        with pytest.raises(SystemExit) as exit_info:
            train_demo.main(["--out", "/nonexistent", "--first_stride", bad])
        assert exit_info.value.code == 2
        assert "--first_stride" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_demo.main(["--out", "/nonexistent", "--preprocess", "average"])
    assert "--preprocess: invalid choice" in capsys.readouterr().err


def test_micro_front_end_is_micro_speech_s() -> None:
    settings = train_demo.Settings(preprocess=FrontendKind.MICRO)
    spec = train_demo.frontend_for(settings)
    assert spec == FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)
    assert spec.feature_shape == (49, 40)
    assert train_demo.frontend_for(train_demo.Settings()).feature_shape == (49, 13)


# --------------------------------------------------------------------------------------
# One real quick training run.


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = missing_training_tools()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("train_quick")
    out, work = root / "out", root / "work"
    result = subprocess.run(
        [
            sys.executable,
            str(TOOLS_DIR / "train_demo.py"),
            "--quick",
            "--out",
            str(out),
            "--work_dir",
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, f"train_demo.py --quick failed:\n{result.stderr[-4000:]}"
    assert "test accuracy" in result.stdout
    return {"out": out, "work": work}


def _read_wav(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.int16)


@pytest.mark.slow
def test_quick_run_writes_loadable_bundles(quick_run: dict[str, Path]) -> None:
    out = quick_run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["demo-float.kwsd", "demo.kwsd", "demo.txt", "demo.wav"]
    expected_dtype = {"demo.kwsd": "int8", "demo-float.kwsd": "float32"}
    for name, dtype in expected_dtype.items():
        bundle = read_bundle(out / name)
        assert list(bundle.labels) == QUICK_LABELS
        assert bundle.frontend == FrontendSpec(FrontendKind.MFCC)
        classifier = TfliteClassifier(bundle)
        assert classifier.input_description.startswith(f"{dtype} [1,49,13]")
        assert classifier.output_description.startswith(f"{dtype} [1,6]")
        scores = classifier.classify(np.zeros((49, 13), np.float32))
        assert scores.shape == (6,)
        assert float(scores.sum()) == pytest.approx(1.0, abs=0.02)
        assert (out / name).stat().st_size < 200 * 1024


@pytest.mark.slow
def test_quick_run_records_provenance_and_detection(quick_run: dict[str, Path]) -> None:
    bundle = read_bundle(quick_run["out"] / "demo.kwsd")
    provenance = bundle.provenance
    assert provenance["tool"] == "tools/train_demo.py"
    assert provenance["tool_version"] == f"kwsd {__version__}"
    dataset = provenance["dataset"]
    assert dataset["source"] == "synthetic"
    assert dataset["words"] == ["yes", "no", "stop", "go"]
    assert dataset["unknown_words"] == ["up", "down", "left", "right", "on", "off"]
    assert dataset["seed"] == 1
    assert dataset["voices"] == 24
    assert set(dataset["clips_per_partition"]) == {"training", "validation", "testing"}
    assert sum(dataset["voices_per_partition"].values()) == 24
    assert set(bundle.detection) == {
        "rule",
        "clip_stride_ms",
        "average_window_ms",
        "threshold",
        "suppression_ms",
        "minimum_count",
    }
    assert bundle.detection["clip_stride_ms"] == 20
    assert bundle.detection["rule"] == "tf"
    # The recommendation is what kwsd stream would resolve, and valid for kwsd's smoother.
    settings, clip_stride_ms = resolve_detection(bundle.detection, {}, window_stride_ms=20)
    assert clip_stride_ms == 20
    RecognizeCommands(bundle.labels, settings)


@pytest.mark.slow
def test_quick_run_demo_detections_are_what_kwsd_stream_makes(quick_run: dict[str, Path]) -> None:
    """The tool smooths recorded scores; the pipeline, with the bundle's recommendation,
    must report the very same detections (label, window end time, score) on demo.wav."""
    bundle = read_bundle(quick_run["out"] / "demo.kwsd")
    settings, clip_stride_ms = resolve_detection(
        bundle.detection, {}, window_stride_ms=bundle.frontend.window_stride_ms
    )
    pipeline = Pipeline(
        bundle.frontend, TfliteClassifier(bundle), RecognizeCommands(bundle.labels, settings), clip_stride_ms
    )
    audio = read_wav(quick_run["out"] / "demo.wav", 16000)
    streamed = [d.to_dict() for d in pipeline.feed(audio)]
    summary = json.loads((quick_run["work"] / "summary.json").read_text())
    assert summary["demo_wav"]["detections"] == streamed


@pytest.mark.slow
def test_quick_run_test_accuracy_is_measured(quick_run: dict[str, Path]) -> None:
    """Rebuild the test partition from the audio and re-measure the float model."""
    listing = json.loads((quick_run["work"] / "test_items.json").read_text())
    data_dir = Path(listing["data_dir"])
    items = listing["items"]
    # The listed items are the test partition of the hash split, with the reference's counts.
    wanted_test = sorted(
        p.relative_to(data_dir).as_posix()
        for w in ("yes", "no", "stop", "go")
        for p in (data_dir / w).glob("*.wav")
        if which_set(p.name, 10, 10) == "testing"
    )
    assert sorted(i["path"] for i in items if i["label"] in QUICK_LABELS[2:]) == wanted_test
    silence = [i for i in items if i["label"] == SILENCE_LABEL]
    unknown = [i for i in items if i["label"] == UNKNOWN_LABEL]
    assert len(silence) == len(unknown) == math.ceil(len(wanted_test) * 10 / 100)
    for item in unknown:
        assert item["path"].split("/")[0] not in QUICK_LABELS
        assert which_set(item["path"], 10, 10) == "testing"
    for item in items:  # test items are not augmented; silence is noise alone
        assert item["shift_samples"] == 0
        assert (item["noise"] is not None) == (item["label"] == SILENCE_LABEL)

    spec = FrontendSpec(FrontendKind.MFCC)
    bundle = read_bundle(quick_run["out"] / "demo-float.kwsd")
    classifier = TfliteClassifier(bundle)
    correct = 0
    for item in items:
        audio = np.zeros(spec.clip_samples)
        if item["path"] is not None:
            clip = _read_wav(data_dir / item["path"])
            assert len(clip) == spec.clip_samples
            audio = clip / 32768.0
        if item["noise"] is not None:
            noise = _read_wav(data_dir / "_background_noise_" / item["noise"]) / 32768.0
            start = item["noise_offset"]
            audio = np.clip(audio + noise[start : start + spec.clip_samples] * item["noise_volume"], -1, 1)
        samples = np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)
        scores = classifier.classify(compute_features(spec, samples))
        correct += int(np.argmax(scores)) == bundle.labels.index(item["label"])
    assert bundle.metrics["test_count"] == len(items)
    assert bundle.metrics["test_accuracy"] == correct / len(items)
    assert 0.0 <= bundle.metrics["validation_accuracy"] <= 1.0


@pytest.mark.slow
def test_quick_run_demo_wav_matches_its_ground_truth(quick_run: dict[str, Path]) -> None:
    out = quick_run["out"]
    audio = _read_wav(out / "demo.wav")
    lines = (out / "demo.txt").read_text().splitlines()
    truth = [(label, float(time_ms)) for label, time_ms in (line.split(", ") for line in lines)]
    assert sorted(label for label, _ in truth) == sorted(
        ["yes", "no", "stop", "go"] * 2 + [UNKNOWN_LABEL] * 2
    )
    times = [t for _, t in truth]
    gaps = np.diff(times) - 1000  # clip end to next clip start
    assert np.all((gaps >= 1500) & (gaps <= 2500))
    assert times[-1] + 1000 <= len(audio) / 16 <= 30_000
    for _, t in truth:  # each clip holds a word louder than the background
        start = round(t * 16)
        clip_peak = np.abs(audio[start : start + 16000].astype(np.int32)).max()
        assert clip_peak > 4 * np.abs(audio[:start][-8000:].astype(np.int32)).max()
