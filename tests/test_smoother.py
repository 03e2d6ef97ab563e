"""RecognizeCommands against REFERENCE.md's rules and worked example."""

import numpy as np
import pytest

from kwsd.smoother import (
    FiringRule,
    RecognizeCommands,
    SmootherError,
    SmootherSettings,
)

LABELS = ("_silence_", "a", "b")
A = np.array([0, 1, 0], np.float32)
B = np.array([0, 0, 1], np.float32)


def fired(smoother, feed):
    out = []
    for scores, t in feed:
        result = smoother.update(scores, t)
        if result.is_new_command:
            out.append((result.label, t, round(result.score, 6)))
    return out


def test_worked_example_tf_rule():
    smoother = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 500, 3, FiringRule.TF))
    feed = [(A, t) for t in range(0, 1000, 100)] + [(B, t) for t in range(1000, 2000, 100)]
    assert fired(smoother, feed) == [("a", 300, 1.0), ("b", 1500, round(6 / 11, 6))]


def test_no_decision_until_minimum_count_and_quarter_window():
    smoother = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 500, 3))
    results = [smoother.update(A, t) for t in (0, 100, 200)]
    # Three entries but spanning only 200 ms < 250 ms: still no decision, score 0.
    assert [(r.label, r.score, r.is_new_command) for r in results] == [("_silence_", 0.0, False)] * 3
    assert smoother.update(A, 300).is_new_command


def test_entry_exactly_window_old_stays_and_one_older_goes():
    smoother = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 0, 1))
    smoother.update(A, 0)
    smoother.update(B, 500)
    # The A at t=0 is exactly 1000 ms old: kept, so b averages 2/3 (1.0 were it dropped).
    result = smoother.update(B, 1000)
    assert (result.label, round(result.score, 6)) == ("b", round(2 / 3, 6))
    # At 1001 it is 1001 ms old and gone.
    assert smoother.update(B, 1001).score == 1.0


def test_ties_go_to_the_lowest_index():
    smoother = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 0, 1))
    smoother.update(B, 0)
    result = smoother.update(A, 300)
    assert (result.label, result.score) == ("a", 0.5)


def test_held_word_fires_once_under_tf_rule_and_refires_under_micro_rule():
    feed = [(A, t) for t in range(0, 3000, 100)]
    tf = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 500, 3, FiringRule.TF))
    micro = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 500, 3, FiringRule.MICRO))
    assert [t for _, t, _ in fired(tf, feed)] == [300]
    # Re-fires once suppression (500 ms) has passed: strictly more than 500 ms later.
    assert [t for _, t, _ in fired(micro, feed)] == [300, 900, 1500, 2100, 2700]


def test_per_label_threshold():
    weak_a = np.array([0.4, 0.6, 0.0], np.float32)
    settings = SmootherSettings(1000, 0.2, 500, 3, label_thresholds={"a": 0.7})
    smoother = RecognizeCommands(LABELS, settings)
    assert fired(smoother, [(weak_a, t) for t in range(0, 1000, 100)]) == []
    smoother = RecognizeCommands(LABELS, SmootherSettings(1000, 0.2, 500, 3))
    assert fired(smoother, [(weak_a, t) for t in range(0, 1000, 100)]) == [("a", 300, 0.6)]


def test_threshold_for_unknown_label_is_refused():
    with pytest.raises(SmootherError, match="threshold given for 'c', which is not a label"):
        RecognizeCommands(LABELS, SmootherSettings(label_thresholds={"c": 0.5}))


def test_time_going_backwards_is_rejected():
    smoother = RecognizeCommands(LABELS)
    smoother.update(A, 0)
    smoother.update(A, 500)
    # The reference only compares with the oldest queued entry (0); kwsd rejects any step back.
    with pytest.raises(SmootherError, match="time went backwards: 400 ms after 500 ms"):
        smoother.update(A, 400)


def test_wrong_score_count_is_rejected():
    smoother = RecognizeCommands(LABELS)
    with pytest.raises(SmootherError, match="got 2 scores but the model has 3 labels"):
        smoother.update(np.zeros(2, np.float32), 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"average_window_ms": 0}, "average_window_ms: expected > 0, got 0"),
        ({"suppression_ms": -1}, "suppression_ms: expected >= 0, got -1"),
        ({"minimum_count": 0}, "minimum_count: expected >= 1, got 0"),
        ({"threshold": 1.5}, "threshold: expected 0..1, got 1.5"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(SmootherError, match=message):
        SmootherSettings(**kwargs)


def test_running_average_matches_exact_average_over_long_runs():
    rng = np.random.default_rng(0)
    smoother = RecognizeCommands(LABELS, SmootherSettings(500, 0.99, 0, 1))
    history = []
    for step in range(3000):
        scores = rng.dirichlet(np.ones(3)).astype(np.float32)
        history.append((step * 20, scores))
        result = smoother.update(scores, step * 20)
    recent = np.array([s for t, s in history if t >= 2999 * 20 - 500], np.float64)
    assert result.score == pytest.approx(recent.mean(axis=0).max(), abs=1e-9)


def test_tf_rule_blocks_a_different_label_within_the_suppression_time():
    # a fires at 300; b takes over the average at 600, only 300 ms later (< 500): blocked;
    # it fires once 500 ms have passed.
    settings = SmootherSettings(300, 0.2, 500, 1, FiringRule.TF)
    feed = [(A, t) for t in range(0, 400, 100)] + [(B, t) for t in range(400, 1200, 100)]
    assert [(label, t) for label, t, _ in fired(RecognizeCommands(LABELS, settings), feed)] == [
        ("a", 100),
        ("b", 700),
    ]


def test_suppression_is_skipped_while_the_last_label_fired_is_silence():
    silence = np.array([1, 0, 0], np.float32)
    settings = SmootherSettings(200, 0.2, 500, 1, FiringRule.TF)
    feed = (
        [(A, t) for t in range(0, 400, 100)]
        + [(silence, t) for t in range(400, 800, 100)]
        + [(B, t) for t in range(800, 1200, 100)]
    )
    # a at 100; _silence_ once its suppression has passed (700 - 100 > 500); then b at 900,
    # only 200 ms after _silence_ fired: suppression does not apply after _silence_.
    assert [(label, t) for label, t, _ in fired(RecognizeCommands(LABELS, settings), feed)] == [
        ("a", 100),
        ("_silence_", 700),
        ("b", 900),
    ]


def test_micro_rule_fires_a_new_label_at_once_even_within_suppression():
    settings = SmootherSettings(300, 0.2, 1000, 1, FiringRule.MICRO)
    feed = [(A, t) for t in range(0, 400, 100)] + [(B, t) for t in range(400, 1000, 100)]
    assert [(label, t) for label, t, _ in fired(RecognizeCommands(LABELS, settings), feed)] == [
        ("a", 100),
        ("b", 600),
    ]


def test_a_score_exactly_at_the_threshold_does_not_fire():
    half = np.array([0.5, 0.5, 0.0], np.float32)  # tie: _silence_ wins (lowest index)
    at = np.array([0.25, 0.75, 0.0], np.float32)
    assert (
        fired(RecognizeCommands(LABELS, SmootherSettings(1000, 0.75, 0, 1)), [(at, t) for t in (0, 300)])
        == []
    )
    assert fired(
        RecognizeCommands(LABELS, SmootherSettings(1000, 0.74, 0, 1)), [(at, t) for t in (0, 300)]
    ) == [("a", 300, 0.75)]
    assert (
        fired(RecognizeCommands(LABELS, SmootherSettings(1000, 0.1, 0, 1)), [(half, t) for t in (0, 300)])
        == []
    )


@pytest.mark.parametrize("clip_stride_ms", [0, -20, 30, 50])
def test_a_clip_stride_that_is_not_a_multiple_of_the_window_stride_is_refused_where_settings_resolve(
    clip_stride_ms,
):
    # One check, in resolve_detection: kwsd stream, kwsd run (and check-config), model import
    # and the pipeline all meet it with the same message.
    from kwsd.detection import DetectionError, clip_stride_frames, resolve_detection

    message = (
        "clip_stride_ms: expected a positive multiple of the model's window stride (20 ms), "
        f"got {clip_stride_ms}"
    )
    with pytest.raises(DetectionError) as raised:
        resolve_detection({}, {"clip_stride_ms": clip_stride_ms}, window_stride_ms=20)
    if clip_stride_ms > 0:
        assert str(raised.value) == message
    else:  # refused earlier, by the check of the setting's own range
        assert str(raised.value).startswith("clip_stride_ms: ")
    with pytest.raises(DetectionError, match=r"clip_stride_ms: expected a positive multiple"):
        clip_stride_frames(clip_stride_ms, 20)
    assert clip_stride_frames(60, 20) == 3


def test_detection_settings_are_one_checked_immutable_value():
    from types import MappingProxyType

    from kwsd.detection import DetectionError, DetectionSettings, resolve_detection

    settings = resolve_detection(
        {"threshold": 0.9, "label_thresholds": {"yes": 0.8}},
        {"suppression_ms": 700, "label_thresholds": {"no": 1}, "rule": None},
        window_stride_ms=20,
    )
    assert settings == DetectionSettings(
        clip_stride_ms=20, threshold=0.9, suppression_ms=700, label_thresholds={"yes": 0.8, "no": 1.0}
    )
    assert isinstance(settings.label_thresholds, MappingProxyType)  # read-only, not a shared dict
    with pytest.raises(AttributeError):
        settings.threshold = 0.1  # type: ignore[misc]
    # What the smoother takes, and the form reports and bundles hold, from the one value.
    assert settings.smoother == SmootherSettings(1000, 0.9, 700, 3, FiringRule.TF, {"yes": 0.8, "no": 1.0})
    assert DetectionSettings.from_dict(settings.to_dict()) == settings
    assert settings.replace(rule="micro").rule is FiringRule.MICRO
    # Checked when made, whoever makes it, with the key first in the message.
    for bad, message in [
        ({"threshold": 1.5}, r"^threshold: expected a number from 0 to 1, got 1.5"),
        ({"clip_stride_ms": 20.0}, r"^clip_stride_ms: expected a whole number"),
        ({"rule": "sometimes"}, r"^rule: expected one of tf, micro"),
        ({"average_window_ms": 30}, r"^average_window_ms: 30 ms holds at most 2 window\(s\)"),
    ]:
        with pytest.raises(DetectionError, match=message):
            DetectionSettings(**{"clip_stride_ms": 20, **bad})
        with pytest.raises(DetectionError, match=message):
            settings.replace(**bad)
