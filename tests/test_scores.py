"""kwsd.scores: the meter line and the MQTT peaks, on scripted scores."""

from __future__ import annotations

import io

import numpy as np
import pytest

from kwsd.detection import DetectionSettings
from kwsd.scores import MIN_BAR, ScoreDisplay, ScorePeaks
from kwsd.smoother import RecognizeCommands, SmootherSettings

LABELS = ("_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SETTINGS = DetectionSettings(clip_stride_ms=20, threshold=0.9, label_thresholds={"up": 0.5})


def scores(**given: float) -> np.ndarray:
    return np.array([given.get(label, 0.0) for label in LABELS])


def test_peaks_are_each_labels_highest_score_over_each_interval_of_audio():
    peaks = ScorePeaks(LABELS, 100)
    messages = [peaks.window(t, scores(yes=t / 1000)) for t in range(1000, 1400, 20)]
    sent = [m for m in messages if m is not None]
    assert [m["audio_time_ms"] for m in sent] == [1100, 1200, 1300]
    assert [m["interval_ms"] for m in sent] == [100, 100, 100]
    assert [m["peak_scores"]["yes"] for m in sent] == [1.1, 1.2, 1.3]  # the max, not the last or mean
    assert list(sent[0]["peak_scores"]) == list(LABELS)
    peaks = ScorePeaks(LABELS, 100)
    peaks.window(0, scores(no=0.8))
    assert peaks.window(100, scores(no=0.1))["peak_scores"]["no"] == 0.8
    with pytest.raises(ValueError):
        ScorePeaks(LABELS, 0)


def test_the_meter_fits_the_terminal_and_marks_each_threshold(monkeypatch):
    display = ScoreDisplay(io.StringIO(), LABELS, lambda: SETTINGS, meter=True)
    now = scores(yes=0.95, up=0.6, stop=0.2, no=0.05)
    monkeypatch.setenv("COLUMNS", "250")
    wide = display.render(2250, now)
    assert "_silence_" not in wide and "_unknown_" not in wide  # keyword labels only
    assert wide.index("YES [") < wide.index(" no [") < wide.index("UP [") < wide.index(" go [")
    bar = wide.split("YES [")[1].split("]")[0]
    assert len(bar) > MIN_BAR and bar[round(0.9 * len(bar))] == "|"
    up_bar = wide.split("UP [")[1].split("]")[0]
    assert up_bar[round(0.5 * len(up_bar))] == "|"  # its own threshold
    monkeypatch.setenv("COLUMNS", "80")
    narrow = display.render(2250, now)
    assert len(narrow) < 80
    # Too many labels for 80 columns: the highest scores, highest first.
    assert narrow.split()[2:6] == ["YES", f"[{'#' * (MIN_BAR - 1)}|]", "0.95", "UP"]


def test_lines_go_above_the_meter_and_json_lines_otherwise():
    out = io.StringIO()
    display = ScoreDisplay(out, LABELS, lambda: SETTINGS, meter=True)
    display.window(1000, scores(yes=0.5))
    display.window(1020, scores(yes=0.6))  # within REDRAW_MS: not drawn
    display.line('{"label": "yes"}')
    display.close()
    text = out.getvalue()
    assert text.count("1.00 s") == 2 and "1.02 s" not in text  # drawn, then redrawn after the line
    assert '\r\x1b[K{"label": "yes"}\n' in text and text.endswith("\n")
    out = io.StringIO()
    display = ScoreDisplay(out, LABELS, lambda: SETTINGS, meter=False)
    display.window(1000, scores(yes=0.123456))
    display.line('{"label": "yes"}')
    assert out.getvalue().splitlines()[0].startswith('{"audio_time_ms": 1000, "scores": {"_silence_": 0.0,')
    assert '"yes": 0.1235' in out.getvalue() and out.getvalue().endswith('{"label": "yes"}\n')


def test_the_smoothers_average_is_what_the_threshold_is_compared_with():
    smoother = RecognizeCommands(["a", "b"], SmootherSettings(average_window_ms=100, minimum_count=1))
    assert smoother.average_scores() is None
    smoother.update(np.array([0.2, 0.8], np.float32), 1000)
    smoother.update(np.array([0.6, 0.4], np.float32), 1050)
    assert smoother.average_scores() == pytest.approx([0.4, 0.6])
    result = smoother.update(np.array([1.0, 0.0], np.float32), 1150)  # 1000 falls out
    assert smoother.average_scores() == pytest.approx([0.8, 0.2])
    assert result.score == pytest.approx(0.8)
