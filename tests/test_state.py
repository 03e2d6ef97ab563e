"""kwsd.state: a sound that lasts, turned into on and off by hysteresis over smoothed scores."""

from __future__ import annotations

import numpy as np
import pytest

from kwsd.state import StateError, StateSettings, StateTracker, check_states

LABELS = ["_silence_", "crying", "quiet"]
CRYING = StateSettings(on_threshold=0.8, off_threshold=0.4, min_on_ms=1000, min_off_ms=3000)


def feed(tracker, crying_scores, stride_ms=100, start_ms=0):
    """Each score held for one window of ``stride_ms``; every change with its window's time."""
    changes = []
    for n, score in enumerate(crying_scores):
        changes += tracker.update(start_ms + n * stride_ms, np.array([0.0, score, 1.0 - score]))
    return changes


def test_on_after_min_on_ms_above_and_off_after_min_off_ms_below_with_start_and_duration():
    tracker = StateTracker(LABELS, {"crying": CRYING})
    # 1 s quiet, 5 s crying that wavers between the thresholds, 1 s pause, 2 s crying, 4 s quiet.
    scores = [0.1] * 10 + [0.9] * 20 + [0.6] * 10 + [0.9] * 20 + [0.1] * 10 + [0.95] * 20 + [0.05] * 40
    changes = feed(tracker, scores)
    assert [(c.on, c.audio_time_ms, c.started_ms, c.ended_ms) for c in changes] == [
        (True, 2000, 1000, None),  # above 0.8 from 1000 ms, for 1000 ms
        (False, 12000, 1000, 9000),  # below 0.4 from 9000 ms, for 3000 ms: the pause was bridged
    ]
    assert changes[1].duration_ms == 8000 and changes[0].duration_ms is None
    assert not tracker.is_on("crying")


def test_a_short_burst_never_turns_on_and_a_short_dip_never_turns_off():
    tracker = StateTracker(LABELS, {"crying": CRYING})
    assert feed(tracker, [0.1] * 5 + [0.95] * 9 + [0.1] * 20) == []  # 900 ms above: not enough
    changes = feed(tracker, [0.95] * 11 + [0.1] * 29 + [0.95] * 5, start_ms=10000)
    assert [c.on for c in changes] == [True]  # 2.9 s below: still on


def test_state_settings_are_checked_with_the_key_named():
    good = {"on_threshold": 0.8, "off_threshold": 0.4, "min_on_ms": 1000, "min_off_ms": 3000}
    assert check_states({"crying": good}) == {"crying": CRYING}
    for entry, message in [
        ({**good, "off_threshold": 0.9}, "crying.off_threshold: expected 0 <= off_threshold <= on_threshold"),
        ({**good, "on_threshold": 1.5}, "crying.on_threshold: expected a number 0..1, got 1.5"),
        ({**good, "min_on_ms": -1}, "crying.min_on_ms: expected a whole number of ms >= 0, got -1"),
        ({**good, "min_off_ms": 2.5}, "crying.min_off_ms: expected a whole number of ms >= 0, got 2.5"),
        ({k: v for k, v in good.items() if k != "min_on_ms"}, "crying.min_on_ms: missing"),
        ({**good, "hold_ms": 1}, "crying.hold_ms: unknown setting"),
    ]:
        with pytest.raises(StateError) as caught:
            check_states({"crying": entry})
        assert str(caught.value).startswith(message), str(caught.value)
    with pytest.raises(StateError, match=r"^laughing: not a label of this model"):
        StateTracker(LABELS, {"laughing": CRYING})


def test_the_demo_pipeline_reports_a_state_label_and_a_reload_that_drops_it_ends_it():
    from kwsd.audio import read_wav
    from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
    from kwsd.detection import resolve_detection
    from kwsd.pipeline import build_pipeline

    bundle = read_bundle(demo_bundle_path())
    states = {"yes": {"on_threshold": 0.8, "off_threshold": 0.3, "min_on_ms": 100, "min_off_ms": 200}}
    settings = resolve_detection(bundle.detection, {"states": states}, window_stride_ms=20)
    audio = read_wav(demo_wav_path(), 16000)
    events_only = build_pipeline(bundle, settings.replace(states={})).feed(audio)
    found = build_pipeline(bundle, settings).feed(audio)
    # "yes" becomes on and off around where it fired as an event; every other word is as it was.
    assert [d for d in found if d.label != "yes"] == [d for d in events_only if d.label != "yes"]
    on, off = [d for d in found if d.label == "yes"]
    fired = next(d for d in events_only if d.label == "yes")
    assert on.state.on and not off.state.on
    assert on.state.started_ms < fired.audio_time_ms < off.state.ended_ms
    assert on.audio_time_ms - on.state.started_ms >= 100 and off.audio_time_ms - off.state.ended_ms >= 200
    # A reload while "yes" is on that makes it an event label again: its off is reported at once.
    pipeline = build_pipeline(bundle, settings)
    pipeline.feed(audio[: (on.audio_time_ms + 100) * 16])
    pipeline.set_detection(settings.replace(states={}))
    after = pipeline.feed(audio[(on.audio_time_ms + 100) * 16 :])
    assert after[0].label == "yes" and not after[0].state.on
    assert after[0].state.ended_ms == on.audio_time_ms + 100  # the last window before the reload
    assert after[0].audio_time_ms == on.audio_time_ms + 120  # reported with the first one after it
    assert after[0].state.started_ms == on.state.started_ms
