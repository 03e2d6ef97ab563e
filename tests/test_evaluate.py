"""Streaming accuracy and calibration (kwsd/evaluate/, kwsd evaluate, kwsd calibrate)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from demo_words import SWAPPED

from kwsd import evaluate as ev
from kwsd.audio import write_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.config import parse_config
from kwsd.detection import resolve_detection
from kwsd.errors import OutputError
from kwsd.frontend import FrontendKind, FrontendSpec
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.pipeline import Detection
from kwsd.smoother import FiringRule, SmootherSettings

REPO = Path(__file__).resolve().parent.parent
DEMO_WAV = demo_wav_path()
DEMO_TRUTH = DEMO_WAV.with_suffix(".txt")
MFCC = FrontendSpec(FrontendKind.MFCC)  # windows span 990 ms
LABELS = (SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no")


def kwsd(*args: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


# --------------------------------------------------------------------------------------
# The reference's scoring.


def test_the_reference_scoring_example() -> None:
    # REFERENCE: truth a@1000 and b@9000; detections a@1200, b@5000, a@8700; tolerance 500:
    # 2 matched, 1 correct, 1 wrong, 1 false positive.
    truth = [("a", 1000.0), ("b", 9000.0)]
    starts = [("a", 1200), ("b", 5000), ("a", 8700)]
    scored = ev.score_detections(
        [Detection(label, 0.9, t) for label, t in starts], truth, window_ms=0.0, tolerance_ms=500
    )
    assert [s.outcome for s in scored] == [ev.CORRECT, ev.FALSE_POSITIVE, ev.WRONG]
    result = ev.figures(scored, truth, [SILENCE_LABEL, "a", "b"], audio_ms=10_000)
    assert (result.matched, result.correct, result.wrong, result.false_positive) == (2, 1, 1, 1)
    assert result.reference_text() == (
        "100.0% matched, 50.0% correct, 50.0% wrong, 50.0% false positive (of 2 words)"
    )
    # The same through kwsd's times: a detection is stamped at its window's end, 990 ms after
    # the clip start the truth gives.
    at_window_ends = [Detection(label, 0.9, t + 990) for label, t in starts]
    assert ev.score_stream(at_window_ends, truth, MFCC, tolerance_ms=500) == ev.StreamScore(2, 1, 1, 1)
    # Both keywords here: b@5000 and a@8700 are false accepts; b was missed.
    assert result.false_accepts == 2
    assert result.per_label["a"] == ev.LabelFigures(words=1, detected=1, false_accepts=1)
    assert result.per_label["b"] == ev.LabelFigures(words=1, detected=0, false_accepts=1)
    assert result.miss_rate == 0.5
    assert result.false_accepts_per_hour == pytest.approx(2 / (10 / 3600))


def test_any_hit_marks_a_word_matched_and_the_tolerance_is_inclusive() -> None:
    truth = [("yes", 1000.0)]
    # A wrong label first: the word is matched, so the right label after it is wrong too
    # (the reference's CalculateAccuracyStats).
    scored = ev.score_detections(
        [Detection("no", 0.9, 1000), Detection("yes", 0.9, 1100)], truth, window_ms=0.0, tolerance_ms=750
    )
    assert [s.outcome for s in scored] == [ev.WRONG, ev.WRONG]
    edge = ev.score_detections([Detection("yes", 0.9, 1750)], truth, window_ms=0.0, tolerance_ms=750)
    late = ev.score_detections([Detection("yes", 0.9, 1751)], truth, window_ms=0.0, tolerance_ms=750)
    assert (edge[0].outcome, late[0].outcome) == (ev.CORRECT, ev.FALSE_POSITIVE)


def test_unknown_detections_are_scored_but_are_not_false_accepts() -> None:
    truth = [("yes", 1000.0), (UNKNOWN_LABEL, 4000.0)]
    found = [Detection(UNKNOWN_LABEL, 0.9, 9000), Detection("yes", 0.9, 4100), Detection("no", 0.9, 20_000)]
    scored = ev.score_detections(found, truth, window_ms=0.0, tolerance_ms=750)
    result = ev.figures(scored, truth, LABELS, audio_ms=1_800_000)
    assert (result.correct, result.wrong, result.false_positive) == (0, 1, 2)
    assert result.false_accepts == 2  # yes on the unknown word, no on nothing; not _unknown_
    assert result.false_accepts_per_hour == 4.0
    assert result.miss_rate == 1.0  # the one keyword word
    assert result.per_label[UNKNOWN_LABEL].missed == 1
    combined = result + ev.figures([], [], LABELS, audio_ms=1_800_000)
    assert (combined.false_accepts, combined.hours, combined.false_accepts_per_hour) == (2, 1.0, 2.0)


# --------------------------------------------------------------------------------------
# Ground-truth files.


def test_truth_files_read_the_reference_format() -> None:
    text = "yes, 1234.562500\n\n# a comment\n_unknown_, 4000.000000\n"
    truth = ev.parse_truth(text, "t.txt")
    assert truth.words == (ev.TruthWord("yes", 1234.5625), ev.TruthWord(UNKNOWN_LABEL, 4000.0))
    assert truth.lines == (1, 4)
    assert ev.format_truth(truth.words) == "yes, 1234.562500\n_unknown_, 4000.000000\n"


def test_malformed_truth_lines_are_refused_with_their_numbers_or_skipped_and_counted() -> None:
    text = "yes, 1000\nno 2000\nstop, soon\n, 3000\ngo, -5\nyes, 4000, x\nno, 5000\n"
    with pytest.raises(ev.TruthError) as err:
        ev.parse_truth(text, "t.txt")
    assert str(err.value) == (
        "t.txt: 5 malformed line(s): line 2: expected 'label, time_ms', got 'no 2000'; "
        "line 3: time_ms: expected a number of milliseconds, got 'soon'; "
        "line 4: no label before the comma in ', 3000'; "
        "line 5: time_ms: expected a finite time >= 0, got '-5'; "
        "line 6: expected 'label, time_ms', got 'yes, 4000, x' "
        "(expected 'label, time_ms' lines; --skip-malformed leaves them out)"
    )
    truth = ev.parse_truth(text, "t.txt", skip_malformed=True)
    assert truth.words == (ev.TruthWord("yes", 1000.0), ev.TruthWord("no", 5000.0))
    assert [n for n, _ in truth.skipped] == [2, 3, 4, 5, 6]


def test_labels_the_model_does_not_know_are_refused() -> None:
    truth = ev.parse_truth("yes, 1000\nmaybe, 2000\nup, 3000\nmaybe, 4000\n", "t.txt")
    with pytest.raises(ev.TruthError) as err:
        ev.check_truth(truth, LABELS)
    assert str(err.value) == (
        "t.txt: label(s) the model does not know: 'maybe' (lines 2, 4); 'up' (line 3); the model's "
        "labels are _silence_, _unknown_, yes, no (words of no label are written _unknown_)"
    )
    late = ev.parse_truth("yes, 1000\nno, 9000\n", "t.txt")
    with pytest.raises(ev.TruthError, match=r"line 2: no at 9000 ms starts after the audio ends \(5000 ms\)"):
        ev.check_truth(late, LABELS, audio_ms=5000)


# --------------------------------------------------------------------------------------
# The command: the demo model on its demo audio, and bad input.


def test_evaluate_scores_the_demo_as_the_reference_would(tmp_path: Path) -> None:
    result = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    figures = report["figures"]
    # The shipped demo on its own stream (README, "Figures"): 6 of its 12 words (10 keywords, 2
    # other words) heard, each with its own label, nothing wrong or false.
    assert (figures["words"], figures["correct"], figures["wrong"], figures["false_positive"]) == (
        12,
        6,
        0,
        0,
    )
    assert (figures["false_accepts"], figures["miss_rate"]) == (0, 0.4)
    assert report["audio"]["file"] == "demo.wav"
    assert report["audio"]["sha256"] == ev.file_sha256(DEMO_WAV)
    assert report["model"] == {"name": "demo", "sha256": read_bundle(demo_bundle_path()).sha256}
    assert report["detection"]["threshold"] == 0.9  # the bundle's calibrated setting
    assert report["tolerance_ms"] == 750.0
    text = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH)
    assert "50.0% matched, 50.0% correct, 0.0% wrong, 0.0% false positive (of 12 words)" in text.stdout
    # The plain figure beside TensorFlow's: keyword words heard with their own label.
    assert "heard:   6 of 10 keyword words (60.0%), each with its own label\n" in text.stdout
    assert "can pass 100%" not in text.stdout  # said only when a second hit makes it so


def test_evaluate_refuses_bad_input_with_its_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(DEMO_TRUTH.read_text() + "stop at 31000\n")
    line = len(DEMO_TRUTH.read_text().splitlines()) + 1
    result = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", bad)
    assert result.returncode == 65
    assert (
        f"bad.txt: 1 malformed line(s): line {line}: expected 'label, time_ms', got 'stop at 31000'"
        in result.stderr
    )
    skipped = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", bad, "--skip-malformed", "--json")
    assert skipped.returncode == 0
    assert json.loads(skipped.stdout)["truth"]["skipped_lines"] == [
        {"line": line, "why": "expected 'label, time_ms', got 'stop at 31000'"}
    ]
    assert f"skipped 1 malformed line(s): line {line}" in skipped.stderr

    unknown = tmp_path / "unknown.txt"
    unknown.write_text("maybe, 500.0\n")
    result = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", unknown)
    assert result.returncode == 65
    assert "label(s) the model does not know: 'maybe' (line 1)" in result.stderr

    short = tmp_path / "short.wav"
    write_wav(short, np.zeros(8000, np.int16), 16000)
    result = kwsd("evaluate", "--audio", short, "--truth", DEMO_TRUTH)
    assert result.returncode == 65
    assert result.stderr.strip() == (
        f"kwsd: error: {short}: 500 ms of audio, shorter than one clip of the model (1000 ms): "
        "nothing to evaluate"
    )
    assert kwsd("evaluate", "--audio", DEMO_WAV, "--truth", tmp_path / "none.txt").returncode == 66
    assert kwsd("evaluate", "--audio", tmp_path / "none.wav", "--truth", DEMO_TRUTH).returncode == 66
    assert (
        kwsd("evaluate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--tolerance-ms", "0").returncode == 64
    )


# --------------------------------------------------------------------------------------
# Replaying settings on recorded scores.


def _scores(spec: list[tuple[int, int, int, float]], n: int, labels: tuple[str, ...] = LABELS) -> Any:
    """Window scores every 20 ms (window ends from 990 ms): silence at 0.95 except, for each
    (first window, last window, label index, score), that label at that score (and the rest
    shared by silence and unknown, so that it is the top label)."""
    scores = np.zeros((n, len(labels)), np.float32)
    scores[:, 0] = 0.95
    scores[:, 1] = 0.05
    for a, b, index, value in spec:
        scores[a:b] = 0.0
        scores[a:b, 0] = scores[a:b, 1] = (1 - value) / 2
        scores[a:b, index] = value
    times = np.arange(n, dtype=np.int64) * 20 + 990
    return ev.RecordedScores(labels, times, scores, 20, 990.0, float(times[-1] + 10))


def test_replayed_firing_is_recognize_commands_own() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    dominant = np.repeat(rng.integers(0, len(LABELS), n // 25), 25)
    scores = rng.random((n, len(LABELS))).astype(np.float32) * 0.5
    scores[np.arange(n), dominant] += rng.random(n).astype(np.float32)
    scores /= scores.sum(axis=1, keepdims=True)
    recorded = ev.RecordedScores(LABELS, np.arange(n, dtype=np.int64) * 20 + 990, scores, 20, 990.0, 41_000.0)
    for window in (100, 500, 1000):
        averages = ev.average_scores(recorded, window, 3)
        for rule in FiringRule:
            for suppression in (0, 300, 1500):
                for threshold, per_label in ((0.3, {}), (0.5, {"yes": 0.8}), (0.7, {SILENCE_LABEL: 0.2})):
                    settings = SmootherSettings(window, threshold, suppression, 3, rule, per_label or None)
                    replayed = ev.fire(
                        averages, ev.label_threshold_list(LABELS, threshold, per_label), suppression, rule
                    )
                    assert replayed == ev.smooth(recorded, settings)


def _sweeper(fa_score: float) -> ev.Sweeper:
    """Four words (yes 0.9, no 0.9, yes 0.9, no 0.45: a weak one) over 20 s, and 1 h of
    background audio (as 20 s repeated... here one 20 s stretch stands for it) with one
    spurious 'yes' at ``fa_score``."""
    truth = (
        ev.TruthWord("yes", 1000.0),
        ev.TruthWord("no", 5000.0),
        ev.TruthWord("yes", 9000.0),
        ev.TruthWord("no", 13000.0),
    )
    words = _scores([(50, 80, 2, 0.9), (250, 280, 3, 0.9), (450, 480, 2, 0.9), (650, 680, 3, 0.45)], 1000)
    noise = _scores([(500, 530, 2, fa_score)], 1000)
    audio = ev.AudioFacts("words.wav", "0" * 64, 20 * 16000, 16000)
    background = ev.AudioFacts("noise.wav", "1" * 64, 20 * 16000, 16000)
    return ev.Sweeper(
        [ev.Measured(audio, words, truth), ev.Measured(background, noise)],
        minimum_count=3,
        rule=FiringRule.TF,
    )


def test_calibration_picks_the_lowest_miss_rate_within_the_target() -> None:
    sweeper = _sweeper(fa_score=0.6)
    points = ev.sweep(
        sweeper, thresholds=(0.3, 0.4, 0.5, 0.7, 0.8), average_windows_ms=(250,), suppressions_ms=(500,)
    )
    hours = 40 / 3600
    by_threshold = {p.setting.threshold: (p.figures.false_accepts, p.miss_rate) for p in points}
    # Below 0.45 all four words are found; below 0.6 the spurious 'yes' fires.
    assert by_threshold == {0.3: (1, 0.0), 0.4: (1, 0.0), 0.5: (1, 0.25), 0.7: (0, 0.25), 0.8: (0, 0.25)}
    lenient = ev.choose(points, target_fa_per_hour=1 / hours)
    assert lenient.reachable and lenient.point.setting.threshold in (0.3, 0.4)
    assert lenient.point.miss_rate == 0.0
    strict = ev.choose(points, target_fa_per_hour=0.5)
    assert strict.reachable
    # 0.7 and 0.8 are as good: the lower middle of the two.
    assert (strict.point.setting.threshold, strict.point.miss_rate) == (0.7, 0.25)
    sweeper.check_replay(strict.point.setting)
    assert [p.setting.threshold for p in ev.frontier(points)] == [0.7, 0.3]


def test_an_unreachable_target_gives_the_closest_setting() -> None:
    sweeper = _sweeper(fa_score=0.99)  # above every threshold tried
    points = ev.sweep(sweeper, thresholds=(0.3, 0.5, 0.9), average_windows_ms=(250,), suppressions_ms=(500,))
    choice = ev.choose(points, target_fa_per_hour=0.5)
    assert not choice.reachable
    assert choice.point.figures.false_accepts == 1
    assert choice.point.setting.threshold == 0.3  # all have 1 false accept; it misses nothing


def test_per_label_thresholds_lower_the_misses_within_the_target() -> None:
    sweeper = _sweeper(fa_score=0.6)  # a spurious 'yes'; the weak word is a 'no'
    thresholds = (0.3, 0.4, 0.5, 0.7)
    points = ev.sweep(sweeper, thresholds=thresholds, average_windows_ms=(250,), suppressions_ms=(500,))
    start = ev.choose(points, target_fa_per_hour=0.5).point
    refined = ev.refine_per_label(sweeper, start, thresholds, 0.5)
    assert refined.miss_rate == 0.0 and refined.figures.false_accepts == 0
    # The weak 'no' needs a threshold below 0.45; 'yes' keeps the global 0.7 (above the spurious 0.6).
    assert refined.setting.threshold == 0.7
    assert dict(refined.setting.label_thresholds) == {"no": 0.4}
    sweeper.check_replay(refined.setting)


# --------------------------------------------------------------------------------------
# Writing config.yaml.


CONFIG = (REPO / "config.yaml").read_text()
VALUES = {
    "clip_stride_ms": 20,
    "average_window_ms": 750,
    "threshold": 0.65,
    "label_thresholds": {"yes": 0.7},
    "suppression_ms": 1000,
    "minimum_count": 3,
    "rule": "tf",
}


def test_detection_values_are_edited_in_place_keeping_every_comment(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    ev.write_detection(path, VALUES, parse=lambda text, source: parse_config(text, source, base_dir=tmp_path))
    new = path.read_text().splitlines()
    old = CONFIG.splitlines()
    assert len(new) == len(old)
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [
        ("  clip_stride_ms: null", "  clip_stride_ms: 20"),
        ("  average_window_ms: null", "  average_window_ms: 750"),
        ("  threshold: null", "  threshold: 0.65"),
        ("  label_thresholds: {}", '  label_thresholds: {"yes": 0.7}'),
        ("  suppression_ms: null", "  suppression_ms: 1000"),
        ("  minimum_count: null", "  minimum_count: 3"),
        ("  rule: null", "  rule: tf"),
    ]
    assert (tmp_path / "config.yaml.bak").read_text() == CONFIG
    assert dict(parse_config(path.read_text()).detection) == VALUES


def test_a_block_mapping_and_missing_keys_are_handled() -> None:
    text = (
        "model: null\ndetection:\n  # t\n  threshold: 0.5  # mine\n  label_thresholds:\n    no: 0.9\n"
        "\nlog_level: info\n"
    )
    new = ev.edit_detection_text(text, {"threshold": 0.7, "label_thresholds": {}, "suppression_ms": 900})
    assert new == (
        "model: null\ndetection:\n  # t\n  threshold: 0.7  # mine\n  label_thresholds: {}\n"
        "  suppression_ms: 900\n\nlog_level: info\n"
    )
    assert (
        ev.edit_detection_text("model: null\n", {"threshold": 0.7})
        == "model: null\n\ndetection:\n  threshold: 0.7\n"
    )


def test_an_unparsable_config_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    broken = CONFIG.replace("log_level: info", "log_level: [info")
    path.write_text(broken)
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--config", path)
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith(f"kwsd: error: {path}:")
    assert path.read_text() == broken
    assert not (tmp_path / "config.yaml.bak").exists()


def test_calibrate_writes_config_yaml_and_names_what_it_measured(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--config", path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert path.read_text() == CONFIG
    assert "measured on: demo.wav (0.010 h, 12 words): 0.010 h in all" in result.stdout
    snippet = result.stdout[result.stdout.index("# kwsd calibrate") :]
    assert "detection:\n  clip_stride_ms: 20\n" in snippet
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--config", path, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # On 36 s, no false accept is the only way under 0.5 per hour; the best such setting misses
    # 3 of the 10 keywords.
    assert report["reachable"] and report["figures"]["miss_rate"] == 0.3
    assert report["figures"]["false_accepts"] == 0
    assert report["audio"][0]["file"] == "demo.wav" and report["hours"] == pytest.approx(36 / 3600, abs=1e-4)
    written = parse_config(path.read_text(), base_dir=tmp_path).detection
    assert {k: v for k, v in report["detection"].items() if k != "label_thresholds"} == dict(written)
    # The chosen values, run through kwsd evaluate (the pipeline itself), give the same figures.
    settings = resolve_detection({}, dict(written), window_stride_ms=20)
    flags = [
        "--average-window-ms",
        settings.average_window_ms,
        "--threshold",
        settings.threshold,
        "--suppression-ms",
        settings.suppression_ms,
    ]
    check = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--json", *flags)
    assert json.loads(check.stdout)["figures"] == report["figures"]


def test_calibrate_never_leaves_a_config_whose_model_is_not_the_one_calibrated(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)  # model: null, the built-in demo
    other = tmp_path / "other.kwsd"
    shutil.copyfile(demo_bundle_path(), other)
    calibrate = ("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "-m", other, "--config", path)
    result = kwsd(*calibrate)
    assert result.returncode == 64, result.stderr
    assert result.stderr == (
        f"kwsd: error: -m {other}: {path} uses the model the built-in demo (model: null); calibrate the "
        "model the config uses (leave out -m), or add --set-model to write this one into the config too\n"
    )
    assert path.read_text() == CONFIG
    # --set-model writes the model and its settings together; kwsd run's own checks accept them.
    result = kwsd(*calibrate, "--set-model")
    assert result.returncode == 0, result.stderr
    config = parse_config(path.read_text(), base_dir=tmp_path)
    assert config.model == other
    assert [line for line in path.read_text().splitlines() if line.startswith("model:")] == [
        f'model: "{other}"'
    ]
    assert f"wrote {path}: model {other}, detection clip_stride_ms 20," in result.stdout
    check = kwsd("check-config", path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{path}: OK (model {other}: demo,")
    # --set-model needs both ends.
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--config", path, "--set-model")
    assert result.returncode == 64
    assert "--set-model: give the model to write with -m" in result.stderr


def test_evaluate_with_a_config_runs_its_model_with_the_settings_kwsd_run_gives_it(tmp_path: Path) -> None:
    # What a user checks after `kwsd calibrate -c`: the config's model at the config's settings
    # (a model's own detection over the top-level one, as kwsd run merges them), flags over both.
    from kwsd.bundle import make_bundle, write_bundle

    demo = read_bundle(demo_bundle_path())
    mine = write_bundle(demo, tmp_path / "mine.kwsd")
    other_labels = [label if label.startswith("_") else label + "_b" for label in demo.labels]
    other = write_bundle(
        make_bundle(
            demo.tflite, other_labels, demo.frontend, name="other", tool="test", detection=demo.detection
        ),
        tmp_path / "other.kwsd",
    )

    def figures(*args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        done = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--json", *args)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        return report["detection"], report["figures"]

    single = tmp_path / "single.yaml"
    single.write_text(f"model: {mine}\ndetection:\n  threshold: 0.6\n")
    detection, found = figures("-c", single)
    assert detection["threshold"] == 0.6
    assert (detection, found) == figures("-m", mine, "--threshold", "0.6")
    assert figures("-c", single, "--threshold", "0.9") == figures("-m", mine, "--threshold", "0.9")
    assert found != figures("-m", mine, "--threshold", "0.9")[1]  # the setting matters on this audio

    several = tmp_path / "several.yaml"
    entries = f"models:\n  - path: {mine}\n    detection: {{threshold: 0.6}}\n  - {other}\n"
    several.write_text(entries + "detection:\n  threshold: 0.95\n")
    assert kwsd("check-config", several).returncode == 0
    assert figures("-c", several, "-m", mine) == figures("-c", single)
    renamed = tmp_path / "other.txt"
    renamed.write_text(
        "".join(
            line if line.startswith("_") else line.replace(",", "_b,", 1)
            for line in DEMO_TRUTH.read_text().splitlines(keepends=True)
        )
    )
    done = kwsd("evaluate", "--audio", DEMO_WAV, "--truth", renamed, "--json", "-c", several, "-m", other)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["detection"]["threshold"] == 0.95
    # Refused, naming what to give: no model picked of several; a model the config does not use.
    words = ("--audio", DEMO_WAV, "--truth", DEMO_TRUTH)
    result = kwsd("evaluate", *words, "-c", several)
    assert result.returncode == 64 and f"-c {several}: it has 2 models" in result.stderr
    result = kwsd("evaluate", *words, "-c", single, "-m", other)
    assert result.returncode == 64 and f"-m {other}: {single} does not use it" in result.stderr
    # A config kwsd run refuses, refused the same way (exit 78), before any audio is read.
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {mine}\ndetection:\n  threshold: 2\n")
    result = kwsd("evaluate", "--audio", tmp_path / "no.wav", "--truth", DEMO_TRUTH, "-c", bad)
    assert result.returncode == 78 and "threshold" in result.stderr and "Traceback" not in result.stderr


def test_calibrate_refuses_a_config_with_several_models_instead_of_tuning_the_demo(tmp_path: Path) -> None:
    # A config with models: has no model: key, which calibrate read as the built-in demo; and each
    # model's own detection goes over the top-level section it writes. Refused, nothing written.
    path = tmp_path / "config.yaml"
    bundle = tmp_path / "mine.kwsd"
    shutil.copyfile(demo_bundle_path(), bundle)
    text = f"models:\n  - path: {bundle}\n    detection: {{threshold: 0.8}}\ndetection:\n  threshold: 0.9\n"
    path.write_text(text)
    assert kwsd("check-config", path).returncode == 0  # kwsd run takes it
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--config", path)
    assert result.returncode == 64, result.stderr
    assert result.stderr.startswith(f"kwsd: error: -c {path}: it lists its models under models:")
    assert f"-m {bundle}" in result.stderr and "Traceback" not in result.stderr
    assert path.read_text() == text and not path.with_name("config.yaml.bak").exists()


def test_calibrate_says_when_no_setting_reaches_the_target(tmp_path: Path) -> None:
    # Every word given the wrong label: every keyword detection is a false accept.
    swap = SWAPPED
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(
        "".join(f"{swap.get(w.label, w.label)}, {w.start_ms:f}\n" for w in ev.read_truth(DEMO_TRUTH).words)
    )
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    result = kwsd(
        "calibrate",
        "--audio",
        DEMO_WAV,
        "--truth",
        wrong,
        "--config",
        path,
        "--thresholds",
        "0.3,0.4",
        "--target-fa-per-hour",
        "0.5",
    )
    assert result.returncode == 1
    assert (
        "kwsd: error: no setting reaches 0.5 false accepts per hour on this audio; the closest: "
        in result.stderr
    )
    assert "nothing written" in result.stderr
    assert path.read_text() == CONFIG and not (tmp_path / "config.yaml.bak").exists()


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "det.png"
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--plot", png)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------
# The demo model on a stream made by tools/make_stream.py from synthetic voices.


@pytest.fixture(scope="module")
def synthetic_stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    from kwsd_tools import make_stream, synth

    root = tmp_path_factory.mktemp("synthetic")
    data = root / "data"
    synth.synthesise(data, ["yes", "no", "stop", "go"], ["up", "left"], voice_count=3, repetitions=1, seed=5)
    clips = sorted(
        p.relative_to(data).as_posix() for p in data.glob("*/*.wav") if p.parent.name != "_background_noise_"
    )
    (data / "testing_list.txt").write_text("\n".join(clips) + "\n")
    (data / "validation_list.txt").write_text("")
    settings = make_stream.StreamSettings(duration_s=90.0, background_volume=0.05)
    stream = make_stream.generate(data, ["yes", "no", "stop", "go"], settings, seed=1)
    wav, txt = root / "stream.wav", root / "stream.txt"
    write_wav(wav, stream.audio, 16000)
    txt.write_text(ev.format_truth(stream.truth()))
    return wav, txt


def test_figures_on_a_generated_stream_are_consistent(synthetic_stream: tuple[Path, Path]) -> None:
    wav, txt = synthetic_stream
    bundle = read_bundle(demo_bundle_path())
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=20)
    truth = ev.read_truth(txt)
    assert len(truth.words) == 30
    detections, recorded, audio = ev.run_stream(
        wav,
        bundle.frontend,
        TfliteClassifier(bundle),
        bundle.labels,
        settings=settings,
    )
    assert audio.audio_ms == 90_000
    # Replaying the recorded scores gives the pipeline's own detections.
    assert ev.smooth(recorded, settings.smoother) == detections
    scored = ev.score_detections(detections, truth.words, window_ms=recorded.window_ms)
    result = ev.figures(scored, truth.words, bundle.labels, audio.audio_ms)
    assert result.words == 30
    assert result.matched == result.correct + result.wrong
    assert result.correct + result.wrong + result.false_positive == len(detections)
    assert sum(f.detected for f in result.per_label.values()) == result.correct
    assert sum(f.words for f in result.per_label.values()) == 30
    keyword_bad = sum(s.outcome != ev.CORRECT and ev.is_keyword(s.detection.label) for s in scored)
    assert result.false_accepts == keyword_bad == sum(f.false_accepts for f in result.per_label.values())
    assert result.correct > 0  # the checks above had detections of every kind to count
    cli = kwsd("evaluate", "--audio", wav, "--truth", txt, "--json")
    assert json.loads(cli.stdout)["figures"] == result.to_dict()


def test_a_window_starts_its_span_before_it_ends() -> None:
    # 49 frames of 30 ms every 20 ms cover 990 ms of a 1000 ms clip.
    assert ev.clip_start_ms(MFCC, 2990) == 2000.0
    micro = FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)
    assert ev.clip_start_ms(micro, 2990) == 2000.0
    # 98 frames of 30 ms every 10 ms cover all of it.
    assert ev.clip_start_ms(FrontendSpec(FrontendKind.MFCC, window_stride_ms=10), 2990) == 1990.0


def test_smooth_reports_kwsd_smoother_detections_at_window_ends() -> None:
    # REFERENCE.md's worked example: labels _silence_, a, b; window 1000 / threshold 0.2 /
    # suppression 500 / minimum count 3; [0,1,0] at 0..900 fires "a" at 300; [0,0,1] at
    # 1000..1900 fires "b" at 1500 with score 6/11. Then silence wins, and is not reported.
    labels = [SILENCE_LABEL, "a", "b"]
    times = np.arange(0, 4000, 100)
    scores = np.array([[0, 1, 0]] * 10 + [[0, 0, 1]] * 10 + [[1, 0, 0]] * 20, np.float32)
    detections = ev.smooth_scores(times, scores, labels, SmootherSettings(1000, 0.2, 500, 3))
    assert [(d.label, d.audio_time_ms) for d in detections] == [("a", 300), ("b", 1500)]
    assert [d.score for d in detections] == pytest.approx([1.0, 6 / 11])


def test_stream_scoring_counts_like_the_reference_from_window_starts() -> None:
    truth = [("yes", 1000.0), ("no", 4000.0)]
    detections = [  # (label, score, window end); the window starts 990 ms earlier
        Detection("yes", 0.9, 2190),  # correct
        Detection("yes", 0.9, 2490),  # second hit on a matched word: wrong
        Detection("go", 0.9, 5090),  # wrong label: wrong
        Detection("no", 0.9, 8990),  # nothing within 750 ms: false positive
    ]
    assert ev.score_stream(detections, truth, MFCC) == ev.StreamScore(2, 1, 2, 1)
    # The tolerance is measured from the window's start (end - 990 ms), not end - 1000 ms.
    edge = 1000 + 990 + 750
    assert ev.score_stream([Detection("yes", 0.9, edge)], truth, MFCC).correct == 1
    late = ev.score_stream([Detection("yes", 0.9, edge + 1)], truth, MFCC)
    assert late.false_positive == 1


def test_the_edited_config_and_its_backup_keep_the_configs_permissions(tmp_path: Path) -> None:
    # A config may hold an MQTT password: 0640 stays 0640 in both files, never the umask's 0644.
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    path.chmod(0o640)
    old_umask = os.umask(0o022)
    try:
        ev.write_detection(
            path, VALUES, parse=lambda text, source: parse_config(text, source, base_dir=tmp_path)
        )
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "config.yaml.bak").stat().st_mode) == 0o640
    # A backup name that is not a regular file is not written through.
    (tmp_path / "config.yaml.bak").unlink()
    (tmp_path / "config.yaml.bak").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="not a regular file; not replacing it"):
        ev.write_detection(
            path, VALUES, parse=lambda text, source: parse_config(text, source, base_dir=tmp_path)
        )
    assert not (tmp_path / "elsewhere").exists()


def calibrate_at_its_own_settings(bundle_path: Path, wav: Path, truth: Path) -> tuple[Any, Any]:
    """``ev.calibrate`` on a grid of one point, the bundle's own settings: (the result, those settings)."""
    bundle = read_bundle(bundle_path)
    current = resolve_detection(bundle.detection, {}, window_stride_ms=bundle.frontend.window_stride_ms)
    result = ev.calibrate(
        str(wav),
        ev.read_truth(truth),
        [],
        spec=bundle.frontend,
        classifier=TfliteClassifier(bundle),
        labels=bundle.labels,
        current=current,
        thresholds=[current.threshold],
        average_windows_ms=[current.average_window_ms],
        suppressions_ms=[current.suppression_ms],
        target_fa_per_hour=1e9,
    )
    return result, current


def test_calibrate_as_a_library_function_replays_what_the_pipeline_does() -> None:
    # What `kwsd calibrate` runs, without the command line: the demo over its own words. A grid
    # of one point, the bundle's own settings, must give back exactly the pipeline's figures
    # (the replay is RecognizeCommands' arithmetic, not an approximation of it).
    result, _ = calibrate_at_its_own_settings(demo_bundle_path(), DEMO_WAV, DEMO_TRUTH)
    assert len(result.points) == 1 and result.choice.reachable
    assert result.choice.point.figures == result.current_figures
    assert result.current_figures.words == 12 and result.hours == pytest.approx(36 / 3600, abs=1e-4)


# --------------------------------------------------------------------------------------
# Reviewed captures (kwsd.capture, kwsd review) as audio to calibrate on.


def keep_and_review_captures(folder: Path, threshold: float) -> tuple[int, int]:
    """The demo over demo.wav as the daemon runs it with capture on (threshold ``threshold``),
    then every capture filed by the truth as a person would: (right, wrong)."""
    import datetime as dt

    from kwsd.audio import open_audio
    from kwsd.capture import CaptureRecorder, CaptureSettings, CaptureWriter
    from kwsd.pipeline import Pipeline
    from kwsd.review import file_capture, pending_captures

    bundle = read_bundle(demo_bundle_path())
    settings = resolve_detection(
        bundle.detection, {"threshold": threshold}, window_stride_ms=bundle.frontend.window_stride_ms
    )
    pipeline = Pipeline(bundle.frontend, TfliteClassifier(bundle), bundle.labels, settings)
    capture = CaptureSettings(folder, 2500, 500, None, 1000, 100)
    writer = CaptureWriter(capture, "pi", 16000).start()
    recorder = CaptureRecorder(
        capture,
        writer,
        bundle.labels,
        sample_rate_hz=16000,
        model={"name": bundle.name, "sha256": bundle.sha256},
        detection=settings.to_dict(),
        thresholds={label: settings.threshold_of(label) for label in bundle.labels},
    )
    pipeline.on_smoothed = recorder.scores
    with open_audio(DEMO_WAV, 16000) as reader:
        for block in reader.blocks(1600):
            recorder.feed(block)
            for found in pipeline.feed(block):
                recorder.detected(found.label, found.score, found.audio_time_ms, dt.datetime.now(dt.UTC))
    recorder.feed(np.zeros(16000, np.int16))  # the last capture's post_ms
    writer.close()
    truth = ev.read_truth(DEMO_TRUTH)
    right = wrong = 0
    for item in pending_captures(folder):
        assert not isinstance(item, str)
        start = item.sidecar["audio_time_ms"] - 990
        ok = any(w.label == item.label and abs(w.start_ms - start) <= 750 for w in truth.words)
        file_capture(folder, item, "correct" if ok else "wrong", item.label if ok else UNKNOWN_LABEL)
        right, wrong = right + ok, wrong + (not ok)
    return right, wrong


def test_reviewed_false_alarms_count_per_hour_of_the_listening_they_were_kept_from(tmp_path: Path) -> None:
    folder = tmp_path / "captures"
    right, wrong = keep_and_review_captures(folder, threshold=0.5)
    assert wrong >= 1 and right >= 5  # a low threshold: words heard, and false alarms kept
    captures = ev.read_reviewed(folder)
    assert captures.listened_ms == 37000  # demo.wav and the second after it, not the captures' 3 s each
    bundle = read_bundle(demo_bundle_path())
    current = resolve_detection(
        bundle.detection, {"threshold": 0.5}, window_stride_ms=bundle.frontend.window_stride_ms
    )
    result = ev.calibrate(
        None,
        None,
        [],
        captures=captures,
        spec=bundle.frontend,
        classifier=TfliteClassifier(bundle),
        labels=bundle.labels,
        current=current,
        thresholds=[0.5, 0.99],
        average_windows_ms=[current.average_window_ms],
        suppressions_ms=[current.suppression_ms],
        target_fa_per_hour=1e6,
    )
    low, high = sorted(result.points, key=lambda p: p.setting.threshold)
    # Each capture replayed from its own start: the false alarms fire again at the threshold
    # they were kept at, and count over the 37 s listened.
    assert low.figures.false_accepts >= 1
    assert low.fa_per_hour == pytest.approx(low.figures.false_accepts / (37000 / 3_600_000))
    assert high.figures.false_accepts < low.figures.false_accepts
    assert result.hours == pytest.approx(37000 / 3_600_000)


def test_calibrate_takes_reviewed_captures_beside_the_words_audio(tmp_path: Path) -> None:
    folder = tmp_path / "captures"
    right, wrong = keep_and_review_captures(folder, threshold=0.5)
    (folder / "pending" / "yes").mkdir(parents=True, exist_ok=True)
    result = kwsd("calibrate", "--audio", DEMO_WAV, "--truth", DEMO_TRUTH, "--captures", folder, "--json")
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    assert report["captures"]["reviewed"] == right + wrong
    assert report["captures"]["listened_hours"] == pytest.approx(37000 / 3_600_000, abs=1e-6)
    assert report["hours"] == pytest.approx(report["audio"][0]["hours"] + 37000 / 3_600_000, abs=1e-5)
    assert "only scores above 0.50 were kept" in result.stderr  # thresholds 0.30..0.45 are partial


def test_calibrate_refuses_captures_it_cannot_count(tmp_path: Path) -> None:
    missing = kwsd("calibrate", "--captures", tmp_path / "nowhere")
    assert missing.returncode == 66 and "--captures" in missing.stderr and "no such folder" in missing.stderr
    (tmp_path / "old" / "reviewed" / "_unknown_").mkdir(parents=True)
    no_ledger = kwsd("calibrate", "--captures", tmp_path / "old")
    assert no_ledger.returncode != 0 and "no listened.json" in no_ledger.stderr, no_ledger.stderr
    half = kwsd("calibrate", "--audio", DEMO_WAV)
    assert half.returncode == 64 and "--audio: give --truth with it" in half.stderr
    assert "Traceback" not in missing.stderr + no_ledger.stderr + half.stderr


# --------------------------------------------------------------------------------------
# Sounds that last: a state label is scored by its on, where the sound started; its off is not
# a detection.

#: "yes" as a sound that lasts: on after 1.5 s above 0.5, off after 0.5 s below 0.2.
YES_STATE = {"yes": {"on_threshold": 0.5, "off_threshold": 0.2, "min_on_ms": 1500, "min_off_ms": 500}}


def test_a_state_on_is_scored_where_the_sound_started_and_its_off_not_at_all() -> None:
    from kwsd.state import StateChange

    truth = [("yes", 1000.0), ("no", 3000.0)]
    on = StateChange("yes", True, 0.9, audio_time_ms=3990, started_ms=1990)
    off = StateChange("yes", False, 0.1, audio_time_ms=6000, started_ms=1990, ended_ms=5000)
    found = [
        Detection("no", 0.9, 3990),  # fired before the on was reported, scored after it
        Detection("yes", 0.9, on.audio_time_ms, on),
        Detection("yes", 0.1, off.audio_time_ms, off),
    ]
    scored = ev.score_detections(found, truth, window_ms=990.0)
    # The on at its start, 1990 - 990 = 1000: the word at 1000 (at its report, 3990 - 990 =
    # 3000, it would take the word "no" starts at). The off is left out.
    assert [(s.detection, s.start_ms, s.outcome) for s in scored] == [
        (found[1], 1000.0, ev.CORRECT),
        (found[0], 3000.0, ev.CORRECT),
    ]
    result = ev.figures(scored, truth, LABELS, audio_ms=10_000)
    assert (result.correct, result.wrong, result.false_positive, result.false_accepts) == (2, 0, 0, 0)


def test_events_are_scored_at_their_window_ends_in_the_order_given() -> None:
    # An event-only stream is scored as before state labels: each detection at its own window
    # end minus the window, in the pipeline's order.
    bundle = read_bundle(demo_bundle_path())
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=bundle.frontend.window_stride_ms)
    detections, recorded, _ = ev.run_stream(
        DEMO_WAV, bundle.frontend, TfliteClassifier(bundle), bundle.labels, settings=settings
    )
    scored = ev.score_detections(detections, ev.read_truth(DEMO_TRUTH).words, window_ms=recorded.window_ms)
    assert [(s.detection, s.start_ms) for s in scored] == [
        (d, d.audio_time_ms - recorded.window_ms) for d in detections
    ]
    assert len(detections) == 6


@pytest.fixture(scope="module")
def lasting_yes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 10.5 s WAV of the demo's own audio: quiet, "yes" three times over (a 3 s sound from
    1300 ms), quiet, "no" at 6900 ms, quiet; its truth; and the demo with "yes" a state label."""
    import dataclasses

    from kwsd.audio import read_wav
    from kwsd.bundle import write_bundle

    root = tmp_path_factory.mktemp("lasting")
    audio = read_wav(DEMO_WAV, 16000)
    quiet, yes, no = audio[: 1300 * 16], audio[1300 * 16 : 2300 * 16], audio[4738 * 16 + 8 : 5738 * 16 + 8]
    wav, txt = root / "lasting.wav", root / "lasting.txt"
    write_wav(wav, np.concatenate([quiet, yes, yes, yes, quiet, quiet, no, quiet, quiet]), 16000)
    txt.write_text("yes, 1300.000000\nno, 6900.000000\n")
    demo = read_bundle(demo_bundle_path())
    states = write_bundle(
        dataclasses.replace(demo, detection={**demo.detection, "states": YES_STATE}), root / "states.kwsd"
    )
    return wav, txt, states


def test_evaluate_scores_a_state_labels_on_and_does_not_count_its_off(
    lasting_yes: tuple[Path, Path, Path],
) -> None:
    wav, txt, states = lasting_yes
    result = kwsd("evaluate", "-m", states, "--audio", wav, "--truth", txt, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The pipeline reports "yes" on at 3430 ms (above 0.5 since 1930 ms, for 1.5 s) and off at
    # 5710 ms: one sound, matched by its on at 1930 - 990 = 940 ms, within 750 ms of 1300.
    figures = report["figures"]
    assert (figures["words"], figures["correct"], figures["wrong"], figures["false_positive"]) == (2, 2, 0, 0)
    assert (figures["false_accepts"], figures["miss_rate"]) == (0, 0.0)
    assert figures["per_label"]["yes"] == {
        "words": 1,
        "detected": 1,
        "missed": 0,
        "miss_rate": 0.0,
        "false_accepts": 0,
    }
    assert report["state_labels"] == {
        "labels": ["yes"],
        "scored": ev.STATE_SCORING,
        "ons": 1,
        "offs_not_counted": 1,
    }
    assert report["detection"]["states"] == YES_STATE
    text = kwsd("evaluate", "-m", states, "--audio", wav, "--truth", txt)
    assert (
        "state labels (yes): each on scored like an event, at the window where the sound started "
        "(started_audio_time_ms); offs not counted (1 on, 1 off in this audio)\n"
    ) in text.stdout
    assert "false accepts: 0 (0.00 per hour)" in text.stdout
    # The same audio with "yes" an event: the same figures, and nothing said of state labels.
    events = kwsd("evaluate", "--audio", wav, "--truth", txt, "--json")
    assert json.loads(events.stdout)["figures"] == figures
    assert "state_labels" not in json.loads(events.stdout)
    assert "state labels" not in kwsd("evaluate", "--audio", wav, "--truth", txt).stdout


def test_calibrate_replays_a_state_label_as_the_pipeline_reports_it(
    lasting_yes: tuple[Path, Path, Path],
) -> None:
    # A grid of one point, the current settings: the replay (RecognizeCommands' averages and a
    # StateTracker over them) gives exactly the pipeline's figures, the on counted, the off not.
    wav, txt, states = lasting_yes
    result, current = calibrate_at_its_own_settings(states, wav, txt)
    assert result.choice.point.figures == result.current_figures
    assert (result.current_figures.correct, result.current_figures.false_accepts) == (2, 0)
    recorded = result.measured[0].recorded
    ons_and_offs = [
        (d.state.on, d.audio_time_ms, d.state.started_ms)
        for d in ev.smooth(recorded, current.smoother, current.states)
        if d.state is not None
    ]
    assert ons_and_offs == [(True, 3430, 1930), (False, 5710, 1930)]


def test_calibrate_says_state_settings_are_not_calibrated_and_keeps_them(
    lasting_yes: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    wav, txt, _ = lasting_yes
    path = tmp_path / "config.yaml"
    states_line = '    "yes": {on_threshold: 0.5, off_threshold: 0.2, min_on_ms: 1500, min_off_ms: 500}\n'
    path.write_text(CONFIG.replace("  states: {}\n", "  states:\n" + states_line))
    result = kwsd("calibrate", "--audio", wav, "--truth", txt, "--config", path, "--json")
    assert result.returncode == 0, result.stderr
    assert (
        "state labels (yes): their on/off settings (on_threshold, off_threshold, min_on_ms, "
        "min_off_ms) are not calibrated"
    ) in result.stderr
    report = json.loads(result.stdout)
    assert report["state_labels"] == {"labels": ["yes"], "scored": ev.STATE_SCORING, "calibrated": False}
    # The values chosen are written; the state settings stay as they were.
    assert states_line in path.read_text()
    written = parse_config(path.read_text(), base_dir=tmp_path).detection
    assert written["states"] == YES_STATE
    assert {k: v for k, v in written.items() if k != "states"} == {
        k: v for k, v in report["detection"].items() if k != "label_thresholds" or v
    }
