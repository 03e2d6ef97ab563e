"""Scoring detections against the truth, the reference's way, and kwsd's false accepts and misses."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kwsd.frontend import FrontendKind, FrontendSpec
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.pipeline import Detection

#: The reference C++ tool's time tolerance (the Python one uses 1500 ms).
DEFAULT_TOLERANCE_MS = 750.0
MS_PER_HOUR = 3_600_000.0


# --------------------------------------------------------------------------------------
# Scoring.


def clip_start_ms(spec: FrontendSpec, window_end_ms: float) -> float:
    """The reference's time for a window that kwsd stamps ``window_end_ms``: its start.

    A window covers ``spec.span_samples`` (the frames of one clip: 990 ms for a 1000 ms clip at
    30/20 ms window/stride, not the whole 1000 ms), so it starts that long before it ends.
    """
    return window_end_ms - window_span_ms(spec)


#: An ``embedding`` window is 2 s, and a word's clip sits at its end (kwsd.frontend.fit_to_clip):
#: its clip starts this long before the window ends (the truth's clips are one second: Speech
#: Commands', and tools/make_stream.py's).
EMBEDDING_CLIP_MS = 1000.0


def window_span_ms(spec: FrontendSpec) -> float:
    """How long before a window's end the clip it hears starts, in ms: the audio one window
    covers (990 for a 1000 ms clip at 30/20 ms); for an ``embedding`` window, whose clips end
    where it ends, :data:`EMBEDDING_CLIP_MS`."""
    span_ms = spec.span_samples * 1000 / spec.sample_rate_hz
    if spec.kind is FrontendKind.EMBEDDING:
        return min(span_ms, EMBEDDING_CLIP_MS)
    return span_ms


CORRECT, WRONG, FALSE_POSITIVE = "correct", "wrong", "false_positive"


@dataclass(frozen=True)
class ScoredDetection:
    """A detection with its clip start, its outcome and the truth word it hit (index, or None)."""

    detection: Detection
    start_ms: float
    outcome: str
    truth_index: int | None


#: How ``kwsd evaluate`` and ``kwsd calibrate`` score a state label (:func:`scored_window_end_ms`).
STATE_SCORING = (
    "each on scored like an event, at the window where the sound started (started_audio_time_ms); "
    "offs not counted"
)


def scored_window_end_ms(detection: Detection) -> int | None:
    """The window end a detection is scored at, or None when it is not scored (a state's off).

    An event: the window that fired. A state label's on: the window where the sound started.
    """
    if detection.state is None:
        return detection.audio_time_ms
    if not detection.state.on:
        return None  # the end of a sound already scored by its on, not a second detection
    # The daemon reports the on (audio_time_ms) min_on_ms after the window that began the
    # stretch above on_threshold (started_ms): a wait to be sure, not part of the sound. That
    # window is where an event at the same threshold would have fired; scored there, minus
    # window_ms as an event is, a truth line at the sound's start matches within the same
    # tolerance as a word's does, whatever min_on_ms is (at audio_time_ms, 2 s of min_on_ms
    # would put it past the 750 ms tolerance).
    return detection.state.started_ms


def score_detections(
    detections: Sequence[Detection],
    truth: Sequence[tuple[str, float]],
    *,
    window_ms: float,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> list[ScoredDetection]:
    """The reference's scoring (module docstring) of ``detections`` (stamped at window ends, as
    the pipeline stamps them; ``window_ms`` before that is the clip start) against ``truth``
    (label, clip start). ``truth`` is put in time order; truth indexes refer to that order.

    A state label's changes are scored as :func:`scored_window_end_ms` says: its on where the
    sound started, put back in time order among the other detections; its off not at all (it
    is left out of the result).
    """
    ordered = sorted(truth, key=lambda w: w[1])
    times = [t for _, t in ordered]
    matched: set[int] = set()
    out: list[ScoredDetection] = []
    # A stable sort: detections already in time order (the pipeline's events) keep their order.
    timed = sorted(
        ((d, end) for d in detections if (end := scored_window_end_ms(d)) is not None), key=lambda x: x[1]
    )
    for detection, window_end_ms in timed:
        start = window_end_ms - window_ms
        i = bisect.bisect_left(times, start - tolerance_ms)
        if i < len(times) and times[i] <= start + tolerance_ms:
            correct = ordered[i][0] == detection.label and i not in matched
            matched.add(i)
            out.append(ScoredDetection(detection, start, CORRECT if correct else WRONG, i))
        else:
            out.append(ScoredDetection(detection, start, FALSE_POSITIVE, None))
    return out


@dataclass(frozen=True)
class StreamScore:
    """The reference's four counts (its percentages are over ``truth``)."""

    truth: int
    correct: int
    wrong: int
    false_positive: int

    @property
    def merit(self) -> int:
        return self.correct - self.wrong - self.false_positive

    def text(self) -> str:
        n = max(1, self.truth)
        matched = self.correct + self.wrong
        return (
            f"{100 * matched / n:.1f}% matched, {100 * self.correct / n:.1f}% correct, "
            f"{100 * self.wrong / n:.1f}% wrong, {100 * self.false_positive / n:.1f}% "
            f"false positive (of {self.truth} words)"
        )


def score_stream(
    detections: Sequence[Detection],
    truth: Sequence[tuple[str, float]],
    spec: FrontendSpec,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> StreamScore:
    """The reference's counts for ``detections`` (window ends) against ``truth`` (clip starts)."""
    scored = score_detections(detections, truth, window_ms=window_span_ms(spec), tolerance_ms=tolerance_ms)
    return StreamScore(
        len(truth),
        sum(s.outcome == CORRECT for s in scored),
        sum(s.outcome == WRONG for s in scored),
        sum(s.outcome == FALSE_POSITIVE for s in scored),
    )


def is_keyword(label: str) -> bool:
    return label not in (SILENCE_LABEL, UNKNOWN_LABEL)


@dataclass(frozen=True)
class LabelFigures:
    words: int = 0  # truth words of this label
    detected: int = 0  # of them, detected correctly
    false_accepts: int = 0  # detections of this label that were not correct (keywords only)

    @property
    def missed(self) -> int:
        return self.words - self.detected

    @property
    def miss_rate(self) -> float | None:
        return self.missed / self.words if self.words else None

    def __add__(self, other: LabelFigures) -> LabelFigures:
        return LabelFigures(
            self.words + other.words, self.detected + other.detected, self.false_accepts + other.false_accepts
        )


@dataclass(frozen=True)
class StreamFigures:
    """The reference's counts plus false accepts and misses, over ``audio_ms`` of audio.

    Figures of several audio files add up (:meth:`__add__`): counts and audio time are summed.
    """

    words: int
    correct: int
    wrong: int
    false_positive: int
    false_accepts: int
    audio_ms: float
    per_label: Mapping[str, LabelFigures] = field(default_factory=dict)

    @property
    def matched(self) -> int:
        return self.correct + self.wrong

    @property
    def hours(self) -> float:
        return self.audio_ms / MS_PER_HOUR

    @property
    def false_accepts_per_hour(self) -> float:
        return self.false_accepts / self.hours if self.audio_ms else 0.0

    @property
    def keyword_words(self) -> int:
        return sum(f.words for label, f in self.per_label.items() if is_keyword(label))

    @property
    def miss_rate(self) -> float | None:
        """Keyword words not detected correctly, over the keyword words (None when there are none)."""
        words = self.keyword_words
        if not words:
            return None
        return sum(f.missed for label, f in self.per_label.items() if is_keyword(label)) / words

    def percent(self, count: int) -> float:
        return 100.0 * count / self.words if self.words else 0.0

    def score(self) -> StreamScore:
        return StreamScore(self.words, self.correct, self.wrong, self.false_positive)

    def __add__(self, other: StreamFigures) -> StreamFigures:
        labels = list(dict.fromkeys([*self.per_label, *other.per_label]))
        return StreamFigures(
            self.words + other.words,
            self.correct + other.correct,
            self.wrong + other.wrong,
            self.false_positive + other.false_positive,
            self.false_accepts + other.false_accepts,
            self.audio_ms + other.audio_ms,
            {
                label: self.per_label.get(label, LabelFigures()) + other.per_label.get(label, LabelFigures())
                for label in labels
            },
        )

    def reference_text(self) -> str:
        """The reference's line: ``M% matched, C% correct, W% wrong, F% false positive``."""
        if not self.words:
            return f"no ground-truth words, {self.false_positive} false positive(s)"
        return (
            f"{self.percent(self.matched):.1f}% matched, {self.percent(self.correct):.1f}% correct, "
            f"{self.percent(self.wrong):.1f}% wrong, {self.percent(self.false_positive):.1f}% "
            f"false positive (of {self.words} words)"
        )

    def to_dict(self) -> dict[str, Any]:
        miss = self.miss_rate
        return {
            "words": self.words,
            "matched": self.matched,
            "correct": self.correct,
            "wrong": self.wrong,
            "false_positive": self.false_positive,
            "matched_percent": round(self.percent(self.matched), 2),
            "correct_percent": round(self.percent(self.correct), 2),
            "wrong_percent": round(self.percent(self.wrong), 2),
            "false_positive_percent": round(self.percent(self.false_positive), 2),
            "false_accepts": self.false_accepts,
            "false_accepts_per_hour": round(self.false_accepts_per_hour, 4),
            "miss_rate": None if miss is None else round(miss, 4),
            "hours": round(self.hours, 6),
            "per_label": {
                label: {
                    "words": f.words,
                    "detected": f.detected,
                    "missed": f.missed,
                    "miss_rate": None if f.miss_rate is None else round(f.miss_rate, 4),
                    "false_accepts": f.false_accepts,
                }
                for label, f in self.per_label.items()
            },
        }


def figures(
    scored: Sequence[ScoredDetection],
    truth: Sequence[tuple[str, float]],
    labels: Sequence[str],
    audio_ms: float,
) -> StreamFigures:
    """Counts, false accepts and per-label misses of scored detections (module docstring)."""
    ordered = sorted(truth, key=lambda w: w[1])
    per_words: dict[str, int] = {label: 0 for label in labels if label != SILENCE_LABEL}
    for label, _ in ordered:
        per_words[label] = per_words.get(label, 0) + 1
    detected = dict.fromkeys(per_words, 0)
    accepts = dict.fromkeys(per_words, 0)
    counts = {CORRECT: 0, WRONG: 0, FALSE_POSITIVE: 0}
    for s in scored:
        counts[s.outcome] += 1
        if s.outcome == CORRECT:
            assert s.truth_index is not None
            detected[ordered[s.truth_index][0]] += 1
        elif is_keyword(s.detection.label):
            accepts[s.detection.label] = accepts.get(s.detection.label, 0) + 1
    per_label = {
        label: LabelFigures(per_words.get(label, 0), detected.get(label, 0), accepts.get(label, 0))
        for label in dict.fromkeys([*per_words, *accepts])
    }
    return StreamFigures(
        len(ordered),
        counts[CORRECT],
        counts[WRONG],
        counts[FALSE_POSITIVE],
        sum(accepts.values()),
        audio_ms,
        per_label,
    )
