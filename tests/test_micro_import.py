"""``kwsd model import`` the way a TinyML-course user meets it, on a model made here.

``tools/synth.py`` + ``tools/train.py --preprocess=micro --model_architecture=tiny_conv
--window_stride_ms=20`` make what train.py + the TFLite converter give such a user: a bare
int8 ``.tflite`` with micro_speech's flattened [1, 1960] input (49 x 40 micro features) and a
labels file. Then the commands the README shows run in a subprocess, exactly as typed: ``model
import``, ``model info``, ``label-wav``, ``calibrate`` and ``stream`` on a model imported with
the settings calibrate chose, plus one refusal (the wrong front end).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from training_tools import missing_training_tools

from kwsd.audio import float_to_int16, read_wav, write_wav
from kwsd.bundle import read_bundle
from kwsd.detection import DetectionSettings, resolve_detection
from kwsd.frontend import INT16_FULL_SCALE, FrontendKind, FrontendSpec, MicroParams, MicroState
from kwsd_tools.training.dataset import which_set

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"
#: What the README tells a user to type (micro_speech's C++ names for the labels).
README_LABELS = "silence,unknown,yes,no"
SAMPLE_RATE_HZ = 16000
#: What ``model import`` records for a micro model given no detection flag: the settings measured
#: on real speech in the README's import section (not micro_speech's firmware values).
MEASURED = {
    "clip_stride_ms": 20,
    "average_window_ms": 750,
    "threshold": 0.8,
    "suppression_ms": 500,
    "minimum_count": 3,
    "rule": "tf",
}
MEASURED_LINE = (
    "detection: clip stride 20 ms, threshold 0.8, average window 750 ms, suppression 500 ms, "
    "minimum count 3, rule tf (kwsd's settings measured for imported micro models, see the README's "
    "import section)"
)


def kwsd(*args: Any, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m kwsd ARGS`` in ``cwd``, as a user runs it from the folder holding the files
    (this checkout's kwsd comes first on the path, installed or not)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tool(name: str, *args: Any, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(TOOLS / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One quick micro_speech-style run of the tools a user runs: tools/synth.py, then
    tools/train.py with train.py's micro_speech flags; the bare model, its labels, the test clips."""
    reason = missing_training_tools()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("micro")
    data_dir = root / "data"
    _tool("synth.py", "--out", data_dir, "--words", "yes,no", "--voices", 60, "--seed", 1)
    result = _tool(
        "train.py",
        "--data_url=",
        f"--data_dir={data_dir}",
        f"--work_dir={root / 'work'}",
        "--summaries_dir=",
        "--wanted_words=yes,no",
        "--preprocess=micro",
        "--window_stride_ms=20",
        "--feature_bin_count=40",
        "--model_architecture=tiny_conv",
        "--how_many_training_steps=300",
        "--learning_rate=0.001",
        "--eval_step_interval=100",
        "--seed=1",
    )
    models = root / "work" / "models"
    shutil.copyfile(models / "tiny_conv.tflite", root / "model.tflite")
    shutil.copyfile(models / "tiny_conv_labels.txt", root / "model_labels.txt")
    test_clips = {
        word: sorted(p for p in (data_dir / word).glob("*.wav") if which_set(p.name, 10, 10) == "testing")
        for word in ("yes", "no")
    }
    return {"root": root, "data_dir": data_dir, "test_clips": test_clips, "stderr": result.stderr}


@pytest.fixture(scope="module")
def imported(trained: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kwsd(
        "model",
        "import",
        "model.tflite",
        "--labels",
        README_LABELS,
        "--frontend",
        "micro",
        "--window-stride-ms",
        "20",
        "-o",
        "micro.kwsd",
        cwd=trained["root"],
    )


def test_the_tool_leaves_a_bare_model_and_a_labels_file(trained: dict[str, Any]) -> None:
    root = trained["root"]
    # REFERENCE.md: tiny_conv has 16,652 parameters at 49x40 with 4 labels.
    assert "model: tiny_conv: 49x40 features -> 4 logits, 16,652 parameters" in trained["stderr"].splitlines()
    assert (root / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert (root / "model_labels.txt").read_text() == "_silence_\n_unknown_\nyes\nno\n"
    # Each partition has test clips of both words, so the checks below have something to hear.
    assert all(len(clips) >= 3 for clips in trained["test_clips"].values())


def test_model_import_as_the_readme_shows(trained: dict[str, Any], imported: Any) -> None:
    assert imported.returncode == 0, imported.stderr
    report = imported.stdout
    assert report.startswith("wrote micro.kwsd: model, labels _silence_, _unknown_, yes, no, micro 16000 Hz")
    wrote, detection = report.rstrip().splitlines()[-2:]
    assert wrote.endswith(
        "(labels renamed as train.py names them: silence -> _silence_, unknown -> _unknown_)"
    )
    assert detection == MEASURED_LINE
    assert "input int8 [1,1960] (scale " in report
    assert "output int8 [1,4] (scale 0.00390625, zero point -128)" in report
    bundle = read_bundle(trained["root"] / "micro.kwsd")
    assert bundle.labels == ("_silence_", "_unknown_", "yes", "no")
    # per_clip by default: each window gets the features train.py trained the model on.
    assert bundle.frontend == FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)
    assert bundle.frontend.micro == MicroParams(state=MicroState.PER_CLIP)
    assert bundle.provenance["tool"] == "kwsd model import"


def test_model_import_records_the_measured_detection_settings(trained: dict[str, Any], imported: Any) -> None:
    assert imported.returncode == 0, imported.stderr
    assert read_bundle(trained["root"] / "micro.kwsd").detection == MEASURED
    # The daemon's own resolution of them (no flags on the command line): exactly those values.
    bundle = read_bundle(trained["root"] / "micro.kwsd")
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=20)
    assert settings == DetectionSettings(
        clip_stride_ms=20, average_window_ms=750, threshold=0.8, suppression_ms=500, minimum_count=3
    )


def test_model_import_detection_flags_override_the_measured_settings(trained: dict[str, Any]) -> None:
    args = ["model", "import", "model.tflite", "--labels", README_LABELS, "--frontend", "micro"]
    some = kwsd(*args, "--threshold", "0.9", "--rule", "micro", "-o", "some.kwsd", cwd=trained["root"])
    assert some.returncode == 0, some.stderr
    assert read_bundle(trained["root"] / "some.kwsd").detection == {
        **MEASURED,
        "threshold": 0.9,
        "rule": "micro",
    }
    assert some.stdout.rstrip().splitlines()[-1] == (
        "detection: clip stride 20 ms, threshold 0.9, average window 750 ms, suppression 500 ms, "
        "minimum count 3, rule micro (--threshold, --rule as given, the rest kwsd's settings measured "
        "for imported micro models, see the README's import section)"
    )
    firmware = ["--rule", "micro", "--average-window-ms", "1000", "--threshold", "0.78", "--suppression-ms"]
    every = [*firmware, "1500", "--minimum-count", "3", "--clip-stride-ms", "20"]
    all_given = kwsd(*args, *every, "-o", "all.kwsd", cwd=trained["root"])
    assert all_given.returncode == 0, all_given.stderr
    assert read_bundle(trained["root"] / "all.kwsd").detection == {
        "clip_stride_ms": 20,
        "average_window_ms": 1000,
        "threshold": 0.78,
        "suppression_ms": 1500,
        "minimum_count": 3,
        "rule": "micro",
    }
    assert all_given.stdout.rstrip().splitlines()[-1] == (
        "detection: clip stride 20 ms, threshold 0.78, average window 1000 ms, suppression 1500 ms, "
        "minimum count 3, rule micro (from the flags given)"
    )


def test_model_import_records_the_continuous_state_when_asked(trained: dict[str, Any]) -> None:
    args = ["model", "import", "model.tflite", "--labels", README_LABELS, "--frontend"]
    result = kwsd(*args, "micro", "--micro-state", "continuous", "-o", "cont.kwsd", cwd=trained["root"])
    assert result.returncode == 0, result.stderr
    assert "30/20 ms window/stride, 49x40 features, state continuous, input int8" in result.stdout
    spec = read_bundle(trained["root"] / "cont.kwsd").frontend
    assert spec.micro == MicroParams(state=MicroState.CONTINUOUS)
    refused = kwsd(*args, "mfcc", "--micro-state", "continuous", "-o", "x.kwsd", cwd=trained["root"])
    assert refused.returncode == 64
    expected = "--micro-state: given for a mfcc front end (it is for --frontend micro)"
    assert refused.stderr.strip().endswith(expected)


def test_model_import_reads_the_labels_file_train_py_style(trained: dict[str, Any]) -> None:
    result = kwsd(
        "model",
        "import",
        "model.tflite",
        "--labels-file",
        "model_labels.txt",
        "--frontend",
        "micro",
        "-o",
        "from-file.kwsd",
        cwd=trained["root"],
    )
    assert result.returncode == 0, result.stderr
    assert read_bundle(trained["root"] / "from-file.kwsd").labels == ("_silence_", "_unknown_", "yes", "no")


def test_model_info_describes_the_imported_model(trained: dict[str, Any], imported: Any) -> None:
    result = kwsd("model", "info", "micro.kwsd", cwd=trained["root"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "labels:     _silence_, _unknown_, yes, no" in lines
    assert (
        "front end:  micro 16000 Hz, 1000 ms clip, 30/20 ms window/stride, 49x40 features, state per_clip"
        in lines
    )
    assert any(line.startswith("input:      int8 [1,1960] (scale ") for line in lines)
    assert any(line.startswith("made by:    kwsd model import") for line in lines)


def test_label_wav_hears_most_test_clips(trained: dict[str, Any], imported: Any) -> None:
    # Four test-partition clips of each word (voices the model never trained on); the
    # quick model gets all 8 (and all 14 of the partition) right, the test asks for 6.
    clips = [(word, path) for word in ("yes", "no") for path in trained["test_clips"][word][:4]]
    result = kwsd(
        "label-wav", "-m", "micro.kwsd", "--json", *(path for _, path in clips), cwd=trained["root"]
    )
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["file"] for a in answers] == [str(path) for _, path in clips]
    assert all(len(a["labels"]) == 3 for a in answers)
    correct = sum(a["labels"][0]["label"] == word for (word, _), a in zip(clips, answers, strict=True))
    assert correct >= 6, f"only {correct} of {len(clips)} test clips heard right: {answers}"


#: A detection counts for a word when its window started within this of the word's clip
#: start (the reference's streaming tolerance).
TOLERANCE_MS = 750
#: kwsd stamps a detection with the end of its window; the window started this long before
#: (49 frames of 30 ms every 20 ms: 990 ms of the 1000 ms clip).
WINDOW_SPAN_MS = FrontendSpec(FrontendKind.MICRO, window_stride_ms=20).span_samples * 1000 // SAMPLE_RATE_HZ


def _write_stream(path: Path, trained: dict[str, Any], words: list[str]) -> list[float]:
    """Test clips of ``words`` at 3 s intervals (first at 0.5 s) over the data set's pink
    noise at 0.05, like the demo WAV; returns the clip start times in ms."""
    noise = read_wav(trained["data_dir"] / "_background_noise_" / "pink_noise.wav", SAMPLE_RATE_HZ)
    total = SAMPLE_RATE_HZ * (3 * len(words) + 1)
    audio = np.resize(noise / INT16_FULL_SCALE, total) * 0.05
    starts_ms: list[float] = []
    used = {"yes": 0, "no": 0}
    for k, word in enumerate(words):
        clip = read_wav(trained["test_clips"][word][used[word]], SAMPLE_RATE_HZ)[:SAMPLE_RATE_HZ]
        used[word] += 1
        start = SAMPLE_RATE_HZ * (500 + 3000 * k) // 1000
        audio[start : start + len(clip)] += clip / INT16_FULL_SCALE
        starts_ms.append(500.0 + 3000 * k)
    write_wav(path, float_to_int16(np.clip(audio, -1.0, 1.0)), SAMPLE_RATE_HZ)
    return starts_ms


def _heard_right(detections: list[dict[str, Any]], truth: list[tuple[str, float]]) -> list[bool]:
    """Per word, in order: did the first detection whose window started within
    TOLERANCE_MS of the word's start have the word's label (and no other word claim it)?"""
    heard: list[str | None] = [None] * len(truth)
    for d in detections:
        start_ms = d["audio_time_ms"] - WINDOW_SPAN_MS
        hit = next((i for i, (_, t) in enumerate(truth) if abs(t - start_ms) <= TOLERANCE_MS), None)
        if hit is not None and heard[hit] is None:
            heard[hit] = d["label"]
    return [label == word for label, (word, _) in zip(heard, truth, strict=True)]


def test_stream_with_the_tuned_settings_hears_the_words(trained: dict[str, Any], imported: Any) -> None:
    # What a user does next: calibrate the imported model on a stream of validation voices
    # (tools/make_stream.py), then import it again with the settings calibrate chose.
    root = trained["root"]
    _tool(
        "make_stream.py",
        f"--data_dir={trained['data_dir']}",
        f"--output_audio_file={root / 'validation.wav'}",
        "--wanted_words=yes,no",
        "--duration_s=180",
        "--partition=validation",
    )
    # Three minutes resolve false accepts only to 20 per hour: the target says how many of
    # those the user accepts on such a short stream (0.5, the default, would allow none).
    calibrated = kwsd(
        "calibrate", "--json", "-m", "micro.kwsd", "--audio", "validation.wav", "--truth", "validation.txt",
        "--target-fa-per-hour", "100", cwd=root,
    )  # fmt: skip
    assert calibrated.returncode in (0, 1), calibrated.stderr  # 1: the target not reached
    tuned = json.loads(calibrated.stdout)["detection"]
    tuned = {k: v for k, v in tuned.items() if k != "label_thresholds"}
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in sorted(tuned.items())]
    result = kwsd(
        "model",
        "import",
        "model.tflite",
        "--labels",
        README_LABELS,
        "--frontend",
        "micro",
        *flags,
        "-o",
        "tuned.kwsd",
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    # Flags given override the measured settings; what they leave out keeps the measured value.
    assert read_bundle(root / "tuned.kwsd").detection == {**MEASURED, **tuned}

    words = ["yes", "no"] * 4
    starts_ms = _write_stream(trained["root"] / "recording.wav", trained, words)
    result = kwsd("stream", "recording.wav", "-m", "tuned.kwsd", cwd=trained["root"])
    assert result.returncode == 0, result.stderr
    detections = [json.loads(line) for line in result.stdout.splitlines()]
    for d in detections:
        assert set(d) == {"label", "score", "audio_time_ms"}
        # micro_speech's "silence" was imported as _silence_, which is never reported.
        assert d["label"] in {"_unknown_", "yes", "no"}
        assert 0.0 < d["score"] <= 1.0
        assert 0 < d["audio_time_ms"] <= 3000 * len(words) + 1000
    times = [d["audio_time_ms"] for d in detections]
    assert times == sorted(times)
    # The quick model on synthetic voices: at least 6 of 8 right, at most one extra detection.
    right = _heard_right(detections, list(zip(words, starts_ms, strict=True)))
    assert sum(right) >= 6, f"heard {sum(right)} of 8 right with {tuned}: {detections}"
    assert len(detections) <= len(words) + 1, f"false detections with {tuned}: {detections}"


def test_import_with_the_mfcc_front_end_is_refused(trained: dict[str, Any]) -> None:
    result = kwsd(
        "model",
        "import",
        "model.tflite",
        "--labels",
        README_LABELS,
        "--frontend",
        "mfcc",
        "-o",
        "wrong.kwsd",
        cwd=trained["root"],
    )
    assert result.returncode == 67
    message = result.stderr.strip()
    assert message.startswith("kwsd: error: model.tflite: ")
    assert "expects input [1,1960] int8" in message
    assert "makes [49,13]" in message
    assert not (trained["root"] / "wrong.kwsd").exists()
