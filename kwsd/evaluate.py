"""Streaming accuracy: ground truth, the reference's scoring, a WAV through the daemon's pipeline,
and calibration sweeps of the smoother over recorded scores.

**Times.** kwsd stamps a window's scores, and a detection, with the audio time at the window's
*end* (:class:`kwsd.pipeline.Detection`). A ground-truth file (TensorFlow's streaming test format,
``label, time_ms`` a line, e.g. ``yes, 1234.562500``) gives the *start* of each word's clip, as
TensorFlow's generate_streaming_test_wav writes it. They meet in one place, :func:`clip_start_ms`:
a window covers ``spec.span_samples`` (the frames of one clip: 990 ms of a 1000 ms clip at 30/20 ms
window/stride), so it starts that long before it ends. Scoring then compares clip starts with clip
starts, which is what the reference's own test does (it stamps a detection with its clip's start).

**Scoring** (:func:`score_detections`), the reference's ``CalculateAccuracyStats``: the truth in
time order; each detection in time order is matched with the first truth word whose time is within
``tolerance_ms`` of its start, inclusive. Same label and that word not yet matched: correct;
otherwise wrong (any hit, right label or not, marks the word as matched, so a second hit is wrong).
No word in reach: a false positive. ``matched``, ``correct``, ``wrong`` and ``false positive`` are
percentages of the number of truth words (``matched`` = correct + wrong, so it can pass 100%).

**False accepts and misses** (kwsd's own figures). The keywords are the model's labels other than
``_silence_`` and ``_unknown_`` (``_unknown_`` is detected and scored like any label, as in the
reference, but a user acts on keywords only). A *false accept* is a keyword detection that is not
correct: a wrong one (wrong label, or a second hit on a word) or a false positive; false accepts per
hour are over all the audio measured. A truth word is *missed* when no detection is correct for it;
the miss rate of a label is its missed words over its words, and the overall miss rate is over the
keyword words.

**Streaming** (:func:`run_stream`): the WAV goes through :class:`kwsd.pipeline.Pipeline` (the
daemon's ring buffer, incremental front end, clip stride and :class:`~kwsd.smoother.RecognizeCommands`)
in blocks, as fast as it runs (audio time, not the wall clock). Each window's scores are recorded
once, so that other smoother settings can be replayed on them without running the model again.

**Calibration** (:func:`sweep`) replays many settings on recorded scores. Averaging (the smoother's
steps 1-4) does not depend on the threshold or the suppression, so it runs once per averaging window
through RecognizeCommands itself (:func:`average_scores`); the firing step (5) is then replayed per
threshold and suppression (:func:`fire`). The setting chosen is run again through RecognizeCommands
in full (:func:`smooth`) and must give the very same detections (:func:`check_replay`).

Runtime package: numpy only (matplotlib is imported by :func:`plot_det` alone, when asked for).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import importlib
import json
import logging
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from kwsd.classifier import Classifier
from kwsd.detection import DetectionSettings
from kwsd.errors import AudioFormatError, EvaluationError, InputNotFoundError, OutputError, read_limited
from kwsd.frontend import FrontendSpec
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.pipeline import Detection, Pipeline
from kwsd.smoother import FiringRule, RecognizeCommands, SmootherSettings

log = logging.getLogger(__name__)
#: Largest ground-truth file read (a line a word: about 3 million words).
MAX_TRUTH_BYTES = 64 << 20

#: The reference C++ tool's time tolerance (the Python one uses 1500 ms).
DEFAULT_TOLERANCE_MS = 750.0
#: Audio is fed to the pipeline in blocks of this much (as ``kwsd stream`` reads a file).
BLOCK_MS = 250
#: The calibration grid's defaults.
DEFAULT_THRESHOLDS = (*(round(0.30 + 0.05 * i, 2) for i in range(14)), 0.99)  # 0.30 .. 0.95, 0.99
DEFAULT_AVERAGE_WINDOWS_MS = (250, 500, 750, 1000, 1250, 1500)
DEFAULT_SUPPRESSIONS_MS = (500, 750, 1000, 1500, 2000)
DEFAULT_TARGET_FA_PER_HOUR = 0.5
MS_PER_HOUR = 3_600_000.0


class TruthError(EvaluationError):
    """A ground-truth file with malformed lines or labels the model does not know."""


# --------------------------------------------------------------------------------------
# Ground truth.


class TruthWord(NamedTuple):
    """One spoken word: its label and the start of its clip (ms from the start of the audio)."""

    label: str
    start_ms: float


@dataclass(frozen=True)
class GroundTruth:
    """A ground-truth file's words in file order, with the line each came from.

    ``skipped``: (line number, why) of each malformed line left out (only when asked for).
    """

    words: tuple[TruthWord, ...]
    lines: tuple[int, ...]
    source: str = "<truth>"
    skipped: tuple[tuple[int, str], ...] = ()


def parse_truth(text: str, source: str = "<truth>", *, skip_malformed: bool = False) -> GroundTruth:
    """Read ``label, time_ms`` lines (blank lines and ``#`` comments are ignored).

    A malformed line (not two comma-separated fields, an empty label, a time that is not a
    finite number >= 0) raises :class:`TruthError` naming every such line by number, unless
    ``skip_malformed``: then they are left out and listed in :attr:`GroundTruth.skipped`.
    """
    words: list[TruthWord] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            bad.append((number, f"expected 'label, time_ms', got {raw.strip()!r}"))
            continue
        label, time_text = fields
        if not label:
            bad.append((number, f"no label before the comma in {raw.strip()!r}"))
            continue
        try:
            start_ms = float(time_text)
        except ValueError:
            bad.append((number, f"time_ms: expected a number of milliseconds, got {time_text!r}"))
            continue
        if not math.isfinite(start_ms) or start_ms < 0:
            bad.append((number, f"time_ms: expected a finite time >= 0, got {time_text!r}"))
            continue
        words.append(TruthWord(label, start_ms))
        lines.append(number)
    if bad and not skip_malformed:
        shown = "; ".join(f"line {n}: {why}" for n, why in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise TruthError(
            f"{source}: {len(bad)} malformed line(s): {shown}{more} "
            "(expected 'label, time_ms' lines; --skip-malformed leaves them out)"
        )
    return GroundTruth(tuple(words), tuple(lines), source, tuple(bad))


def read_truth(path: str | os.PathLike[str], *, skip_malformed: bool = False) -> GroundTruth:
    """:func:`parse_truth` on a file; a missing or unreadable file is :class:`InputNotFoundError`."""
    path = Path(path)
    try:
        if os.path.isdir(path):  # os.path's: False, not an error, for a name too long
            raise InputNotFoundError(f"{path}: is a directory, expected a ground-truth file")
        raw = read_limited(path, MAX_TRUTH_BYTES)
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such ground-truth file") from None
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise TruthError(f"{path}: line {line}: not UTF-8 text (expected 'label, time_ms' lines)") from None
    return parse_truth(text, str(path), skip_malformed=skip_malformed)


def format_truth(words: Iterable[tuple[str, float]]) -> str:
    """The reference's format: ``label, time_ms`` with six decimals, one word a line."""
    return "".join(f"{label}, {start_ms:f}\n" for label, start_ms in words)


def check_truth(truth: GroundTruth, labels: Sequence[str], audio_ms: float | None = None) -> None:
    """Refuse labels the model does not know, and words that start after the audio ends."""
    known = set(labels)
    unknown: dict[str, list[int]] = {}
    for word, line in zip(truth.words, truth.lines, strict=True):
        if word.label not in known:
            unknown.setdefault(word.label, []).append(line)
    if unknown:
        listed = "; ".join(
            f"{label!r} (line{'s' if len(where) > 1 else ''} {', '.join(map(str, where[:5]))}"
            f"{', ...' if len(where) > 5 else ''})"
            for label, where in unknown.items()
        )
        raise TruthError(
            f"{truth.source}: label(s) the model does not know: {listed}; the model's labels are "
            f"{', '.join(labels)} (words of no label are written {UNKNOWN_LABEL})"
        )
    if audio_ms is not None:
        late = [(line, w) for w, line in zip(truth.words, truth.lines, strict=True) if w.start_ms > audio_ms]
        if late:
            line, word = late[0]
            raise TruthError(
                f"{truth.source}: line {line}: {word.label} at {word.start_ms:.0f} ms starts after the "
                f"audio ends ({audio_ms:.0f} ms); {len(late)} word(s) do (is it the truth of this audio?)"
            )


# --------------------------------------------------------------------------------------
# Scoring.


def clip_start_ms(spec: FrontendSpec, window_end_ms: float) -> float:
    """The reference's time for a window that kwsd stamps ``window_end_ms``: its start.

    A window covers ``spec.span_samples`` (the frames of one clip: 990 ms for a 1000 ms clip at
    30/20 ms window/stride, not the whole 1000 ms), so it starts that long before it ends.
    """
    return window_end_ms - window_span_ms(spec)


def window_span_ms(spec: FrontendSpec) -> float:
    """How much audio one window covers, in ms (990 for a 1000 ms clip at 30/20 ms)."""
    return spec.span_samples * 1000 / spec.sample_rate_hz


CORRECT, WRONG, FALSE_POSITIVE = "correct", "wrong", "false_positive"


@dataclass(frozen=True)
class ScoredDetection:
    """A detection with its clip start, its outcome and the truth word it hit (index, or None)."""

    detection: Detection
    start_ms: float
    outcome: str
    truth_index: int | None


def score_detections(
    detections: Sequence[Detection],
    truth: Sequence[tuple[str, float]],
    *,
    window_ms: float,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> list[ScoredDetection]:
    """The reference's scoring (module docstring) of ``detections`` (stamped at window ends, as
    the pipeline stamps them; ``window_ms`` before that is the clip start) against ``truth``
    (label, clip start). ``truth`` is put in time order; truth indexes refer to that order."""
    ordered = sorted(truth, key=lambda w: w[1])
    times = [t for _, t in ordered]
    matched: set[int] = set()
    out: list[ScoredDetection] = []
    for detection in detections:
        start = detection.audio_time_ms - window_ms
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


# --------------------------------------------------------------------------------------
# Running a WAV through the daemon's pipeline.


@dataclass(frozen=True)
class RecordedScores:
    """Every window's scores from one run: ``times_ms[i]`` is window i's end (audio time)."""

    labels: tuple[str, ...]
    times_ms: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    clip_stride_ms: int
    window_ms: float
    audio_ms: float


@dataclass(frozen=True)
class AudioFacts:
    """Which audio was measured: file name, sha256 of its bytes, length at the model's rate."""

    path: str
    sha256: str
    samples: int
    sample_rate_hz: int

    @property
    def audio_ms(self) -> float:
        return self.samples * 1000 / self.sample_rate_hz

    @property
    def hours(self) -> float:
        return self.audio_ms / MS_PER_HOUR

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": Path(self.path).name,
            "path": self.path,
            "sha256": self.sha256,
            "seconds": round(self.audio_ms / 1000, 3),
            "hours": round(self.hours, 6),
        }


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot read ({err.strerror or err})") from None
    return digest.hexdigest()


def run_stream(
    path: str | os.PathLike[str],
    spec: FrontendSpec,
    classifier: Classifier,
    labels: Sequence[str],
    *,
    settings: DetectionSettings,
) -> tuple[list[Detection], RecordedScores, AudioFacts]:
    """``path`` through the daemon's :class:`~kwsd.pipeline.Pipeline` with ``settings``, in blocks of
    :data:`BLOCK_MS`: (its detections, every window's scores, which audio it was).

    Audio shorter than one clip of the model is refused (:class:`AudioFormatError`).
    """
    from kwsd.audio import open_audio

    path = os.fspath(path)
    pipeline = Pipeline(spec, classifier, labels, settings)
    times: list[int] = []
    scores: list[npt.NDArray[np.float32]] = []

    def keep(time_ms: int, window_scores: npt.NDArray[np.float32]) -> None:
        times.append(time_ms)
        scores.append(window_scores.copy())

    pipeline.on_scores = keep
    detections: list[Detection] = []
    with open_audio(path, spec.sample_rate_hz) as reader:
        for block in reader.blocks(spec.sample_rate_hz * BLOCK_MS // 1000):
            detections.extend(pipeline.feed(block))
    samples = pipeline.samples_seen
    if samples < spec.clip_samples:
        raise AudioFormatError(
            f"{path}: {samples * 1000 / spec.sample_rate_hz:.0f} ms of audio, shorter than one clip of "
            f"the model ({spec.clip_duration_ms} ms): nothing to evaluate"
        )
    recorded = RecordedScores(
        tuple(labels),
        np.array(times, np.int64),
        np.array(scores, np.float32).reshape(-1, len(labels)),
        settings.clip_stride_ms,
        window_span_ms(spec),
        samples * 1000 / spec.sample_rate_hz,
    )
    return detections, recorded, AudioFacts(path, file_sha256(path), samples, spec.sample_rate_hz)


def smooth_scores(
    times_ms: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    labels: Sequence[str],
    settings: SmootherSettings,
) -> list[Detection]:
    """The detections the pipeline makes from these window scores: kwsd's own RecognizeCommands
    over them, its new commands other than silence, stamped with the end of the window that fired."""
    smoother = RecognizeCommands(labels, settings)
    out: list[Detection] = []
    for time_ms, window_scores in zip(times_ms, scores, strict=True):
        result = smoother.update(window_scores, int(time_ms))
        if result.is_new_command and result.label != SILENCE_LABEL:
            out.append(Detection(result.label, result.score, result.time_ms))
    return out


def smooth(recorded: RecordedScores, settings: SmootherSettings) -> list[Detection]:
    """:func:`smooth_scores` on a run's recorded scores."""
    return smooth_scores(recorded.times_ms, recorded.scores, recorded.labels, settings)


def stream_report(
    *,
    audio: AudioFacts,
    truth: GroundTruth,
    model: Mapping[str, Any],
    detection: Mapping[str, Any],
    tolerance_ms: float,
    result: StreamFigures,
) -> dict[str, Any]:
    """The JSON report of one evaluation (fit to be stored in a bundle's ``metrics``)."""
    return {
        "kind": "kwsd streaming accuracy",
        "audio": audio.to_dict(),
        "truth": {
            "file": Path(truth.source).name,
            "words": len(truth.words),
            "skipped_lines": [{"line": n, "why": why} for n, why in truth.skipped],
        },
        "model": dict(model),
        "detection": dict(detection),
        "tolerance_ms": tolerance_ms,
        "times": "truth = clip starts; a detection's clip start = its window end - the window span",
        "false_accept": "a keyword detection (not _silence_/_unknown_) that is wrong or a false positive",
        "figures": result.to_dict(),
    }


# --------------------------------------------------------------------------------------
# Calibration: many smoother settings replayed on recorded scores.


@dataclass(frozen=True)
class Averages:
    """The smoother's steps 1-4 for one averaging window over one run: per window, the top label's
    index and its averaged score (-1 and 0.0 where the smoother takes no decision)."""

    labels: tuple[str, ...]
    times_ms: list[int]
    top: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]


def average_scores(recorded: RecordedScores, average_window_ms: int, minimum_count: int) -> Averages:
    """Run RecognizeCommands (with a threshold nothing beats, so it never fires) and keep its
    averaged top label and score: what any threshold and suppression would see."""
    labels = recorded.labels
    smoother = RecognizeCommands(
        labels, SmootherSettings(average_window_ms, 1.0, 0, minimum_count, FiringRule.TF)
    )
    index = {label: i for i, label in enumerate(labels)}
    top = np.full(len(recorded.times_ms), -1, np.int64)
    score = np.zeros(len(recorded.times_ms), np.float64)
    times = [int(t) for t in recorded.times_ms]
    for i, (time_ms, window_scores) in enumerate(zip(times, recorded.scores, strict=True)):
        result = smoother.update(window_scores, time_ms)
        if result.score > 0.0:  # no decision reports 0.0; a decision at 0.0 cannot fire either
            top[i] = index[result.label]
            score[i] = result.score
    return Averages(labels, times, top, score)


def fire(
    averages: Averages, thresholds: Sequence[float], suppression_ms: int, rule: FiringRule
) -> list[Detection]:
    """The smoother's step 5 replayed on :func:`average_scores`' output, with one threshold per
    label: the detections RecognizeCommands would report (checked by :func:`check_replay`)."""
    limits = np.asarray(thresholds, np.float64)
    above = (averages.top >= 0) & (averages.score > limits[np.maximum(averages.top, 0)])
    candidates = np.flatnonzero(above)
    labels, score = averages.labels, averages.score
    top = averages.top[candidates]
    times = np.asarray(averages.times_ms, np.int64)[candidates]
    previous = SILENCE_LABEL
    previous_ms: int | None = None
    out: list[Detection] = []
    if not len(top):
        return out
    # Runs of consecutive candidate windows with the same top label: within one, the label can
    # fire only where suppression allows it, found by a search on the (increasing) times.
    run_starts = np.flatnonzero(np.r_[True, top[1:] != top[:-1]])
    run_ends = np.r_[run_starts[1:], len(top)]
    for a, e in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        label = labels[int(top[a])]
        k = a
        while k < e:
            free = previous_ms is None or previous == SILENCE_LABEL  # suppression does not apply
            if rule is FiringRule.TF and label == previous:
                break
            if free or (rule is FiringRule.MICRO and label != previous):
                j = k
            else:
                assert previous_ms is not None
                j = k + int(np.searchsorted(times[k:e], previous_ms + suppression_ms, side="right"))
                if j >= e:
                    break
            previous, previous_ms = label, int(times[j])
            if label != SILENCE_LABEL:
                out.append(Detection(label, float(score[candidates[j]]), previous_ms))
            if rule is FiringRule.TF:
                break  # the rest of the run is the label just fired
            if label == SILENCE_LABEL:
                previous_ms = int(times[e - 1])  # silence re-fires at every window, unsuppressed
                break
            k = j + 1
    return out


def label_threshold_list(
    labels: Sequence[str], threshold: float, per_label: Mapping[str, float]
) -> list[float]:
    return [float(per_label.get(label, threshold)) for label in labels]


@dataclass(frozen=True)
class Setting:
    """One point of the grid (the clip stride, minimum count and rule are fixed for a sweep)."""

    average_window_ms: int
    suppression_ms: int
    threshold: float
    label_thresholds: tuple[tuple[str, float], ...] = ()

    def smoother(self, minimum_count: int, rule: FiringRule) -> SmootherSettings:
        return SmootherSettings(
            self.average_window_ms,
            self.threshold,
            self.suppression_ms,
            minimum_count,
            rule,
            dict(self.label_thresholds) or None,
        )

    def text(self) -> str:
        per = ", ".join(f"{label} {t:.2f}" for label, t in self.label_thresholds)
        return (
            f"threshold {self.threshold:.2f}{f' ({per})' if per else ''}, average window "
            f"{self.average_window_ms} ms, suppression {self.suppression_ms} ms"
        )


@dataclass(frozen=True)
class Measured:
    """One audio file to calibrate on: its recorded scores, its truth (empty: background only)."""

    audio: AudioFacts
    recorded: RecordedScores
    truth: tuple[TruthWord, ...] = ()


@dataclass(frozen=True)
class Point:
    setting: Setting
    figures: StreamFigures  # over all the audio measured

    @property
    def miss_rate(self) -> float:
        miss = self.figures.miss_rate
        return 1.0 if miss is None else miss

    @property
    def fa_per_hour(self) -> float:
        return self.figures.false_accepts_per_hour


class Sweeper:
    """Replays settings over several recorded runs; averages are computed once per window."""

    def __init__(
        self,
        measured: Sequence[Measured],
        *,
        minimum_count: int,
        rule: FiringRule,
        tolerance_ms: float = DEFAULT_TOLERANCE_MS,
    ) -> None:
        if not measured:
            raise EvaluationError("nothing to calibrate on: no audio given")
        self.measured = list(measured)
        self.labels = measured[0].recorded.labels
        self.minimum_count = minimum_count
        self.rule = rule
        self.tolerance_ms = tolerance_ms
        self._averages: dict[int, list[Averages]] = {}

    def averages(self, average_window_ms: int) -> list[Averages]:
        if average_window_ms not in self._averages:
            self._averages[average_window_ms] = [
                average_scores(m.recorded, average_window_ms, self.minimum_count) for m in self.measured
            ]
        return self._averages[average_window_ms]

    def detections(self, setting: Setting) -> list[list[Detection]]:
        thresholds = label_threshold_list(self.labels, setting.threshold, dict(setting.label_thresholds))
        return [
            fire(a, thresholds, setting.suppression_ms, self.rule)
            for a in self.averages(setting.average_window_ms)
        ]

    def evaluate(self, setting: Setting, detections: list[list[Detection]] | None = None) -> Point:
        runs = detections if detections is not None else self.detections(setting)
        total: StreamFigures | None = None
        for m, found in zip(self.measured, runs, strict=True):
            scored = score_detections(
                found, m.truth, window_ms=m.recorded.window_ms, tolerance_ms=self.tolerance_ms
            )
            one = figures(scored, m.truth, self.labels, m.recorded.audio_ms)
            total = one if total is None else total + one
        assert total is not None
        return Point(setting, total)

    def check_replay(self, setting: Setting) -> None:
        """The replayed detections must be RecognizeCommands' own, run in full."""
        settings = setting.smoother(self.minimum_count, self.rule)
        for m, replayed in zip(self.measured, self.detections(setting), strict=True):
            full = smooth(m.recorded, settings)
            if full != replayed:
                raise AssertionError(
                    f"replayed firing differs from RecognizeCommands on {m.audio.path} for {setting.text()}"
                )


def sweep(
    sweeper: Sweeper,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    average_windows_ms: Sequence[int] = DEFAULT_AVERAGE_WINDOWS_MS,
    suppressions_ms: Sequence[int] = DEFAULT_SUPPRESSIONS_MS,
) -> list[Point]:
    """Every (window, suppression, threshold) of the grid, replayed and scored."""
    return [
        sweeper.evaluate(Setting(window, suppression, float(threshold)))
        for window in average_windows_ms
        for suppression in suppressions_ms
        for threshold in thresholds
    ]


def frontier(points: Sequence[Point]) -> list[Point]:
    """The points no other beats on both counts: fewer false accepts per hour and fewer misses
    (in order of false accepts per hour; among equal figures, the first met)."""
    out: list[Point] = []
    best_miss = math.inf
    for p in sorted(points, key=lambda p: (p.fa_per_hour, p.miss_rate)):
        if p.miss_rate < best_miss:
            out.append(p)
            best_miss = p.miss_rate
    return out


def _preference(p: Point) -> tuple[float, ...]:
    # Lowest miss rate, then fewest false accepts; then the most words correct (``_unknown_``
    # included) and the fewest other detections.
    f = p.figures
    return (round(p.miss_rate, 12), round(p.fa_per_hour, 12), -f.correct, f.wrong + f.false_positive)


def _with_most_margin(tied: Sequence[Point]) -> Point:
    """Among equally good points: the (window, suppression) with the most thresholds among them
    (the widest margin), then the shorter window and suppression; its middle threshold."""
    groups: dict[tuple[int, int, tuple[tuple[str, float], ...]], list[Point]] = {}
    for p in tied:
        s = p.setting
        groups.setdefault((s.average_window_ms, s.suppression_ms, s.label_thresholds), []).append(p)
    _, group = min(groups.items(), key=lambda kv: (-len(kv[1]), kv[0][0], kv[0][1]))
    group.sort(key=lambda p: p.setting.threshold)
    return group[(len(group) - 1) // 2]


@dataclass(frozen=True)
class Choice:
    """The chosen point for a target, or (``reachable`` False) the closest to it."""

    point: Point
    reachable: bool
    target_fa_per_hour: float


def choose(points: Sequence[Point], target_fa_per_hour: float) -> Choice:
    """The lowest miss rate among points with false accepts per hour <= the target (then the fewest
    false accepts, the most words correct, the fewest other detections, the most margin:
    :func:`_with_most_margin`); when none reaches it, the point with the fewest false accepts
    per hour (then the same order)."""
    if not points:
        raise EvaluationError("nothing to choose from: the grid is empty")
    meeting = [p for p in points if p.fa_per_hour <= target_fa_per_hour + 1e-12]
    if meeting:
        best = min(_preference(p) for p in meeting)
        return Choice(
            _with_most_margin([p for p in meeting if _preference(p) == best]), True, target_fa_per_hour
        )
    fewest = min(round(p.fa_per_hour, 12) for p in points)
    nearest = [p for p in points if round(p.fa_per_hour, 12) == fewest]
    best = min(_preference(p) for p in nearest)
    return Choice(
        _with_most_margin([p for p in nearest if _preference(p) == best]), False, target_fa_per_hour
    )


def refine_per_label(
    sweeper: Sweeper, start: Point, thresholds: Sequence[float], target_fa_per_hour: float
) -> Point:
    """Per-label thresholds for the keywords, from ``start``'s setting: a local search that takes,
    one label at a time, the threshold change that lowers the miss rate most (then the false
    accepts) while keeping false accepts per hour within the target; every step is a full replay
    (labels interact through the firing rule)."""
    keywords = [label for label in sweeper.labels if is_keyword(label)]
    current = start
    per = {label: start.setting.threshold for label in keywords}
    per.update(dict(start.setting.label_thresholds))
    for _ in range(4 * len(keywords) * len(thresholds)):  # a bound; it stops far earlier
        best: Point | None = None
        best_key = (*_preference(current)[:2], 0.0)
        for label in keywords:
            for t in thresholds:
                if t == per[label]:
                    continue
                trial = {**per, label: float(t)}
                setting = replace(current.setting, label_thresholds=tuple(sorted(trial.items())))
                point = sweeper.evaluate(setting)
                if point.fa_per_hour > target_fa_per_hour + 1e-12:
                    continue
                # Fewer misses, then fewer false accepts; among equals the higher threshold.
                key = (*_preference(point)[:2], -float(t))
                if key[:2] < best_key[:2] or (best is not None and key < best_key):
                    best, best_key = point, key
        if best is None:
            break
        current = best
        per = dict(best.setting.label_thresholds)
    if not current.setting.label_thresholds:
        return current
    # Keep the per-label form only for labels that differ from the global threshold.
    differing = tuple((k, v) for k, v in current.setting.label_thresholds if v != current.setting.threshold)
    return Point(replace(current.setting, label_thresholds=differing), current.figures)


def grid_table(points: Sequence[Point], *, per_label: bool = False) -> list[str]:
    """Rows of a fixed-width table of points."""
    rows = [
        f"{'threshold':>9} {'window ms':>9} {'suppr. ms':>9} {'FA/h':>8} {'miss %':>7} "
        f"{'correct':>7} {'wrong':>6} {'false pos':>9}" + ("  label thresholds" if per_label else "")
    ]
    for p in points:
        s, f = p.setting, p.figures
        rows.append(
            f"{s.threshold:9.2f} {s.average_window_ms:9d} {s.suppression_ms:9d} {p.fa_per_hour:8.3f} "
            f"{100 * p.miss_rate:7.2f} {f.correct:7d} {f.wrong:6d} {f.false_positive:9d}"
            + ("  " + ", ".join(f"{k} {v:.2f}" for k, v in s.label_thresholds) if per_label else "")
        )
    return rows


def detection_values(
    setting: Setting, *, clip_stride_ms: int, minimum_count: int, rule: FiringRule
) -> dict[str, Any]:
    """The ``detection`` settings that reproduce a measured point (as config.yaml and bundles hold them)."""
    return {
        "clip_stride_ms": clip_stride_ms,
        "average_window_ms": setting.average_window_ms,
        "threshold": setting.threshold,
        "label_thresholds": dict(setting.label_thresholds),
        "suppression_ms": setting.suppression_ms,
        "minimum_count": minimum_count,
        "rule": rule.value,
    }


def plot_det(
    points: Sequence[Point],
    chosen: Choice,
    path: str | os.PathLike[str],
    *,
    title: str,
) -> None:
    """A DET plot (miss rate against false accepts per hour) as a PNG: every point of the grid,
    the frontier, the target and the chosen point. Needs matplotlib (not a runtime dependency)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        from kwsd.errors import RuntimeDependencyError

        raise RuntimeDependencyError("--plot needs matplotlib: install matplotlib for --plot") from None
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    try:
        ax.scatter(
            [p.fa_per_hour for p in points],
            [100 * p.miss_rate for p in points],
            s=8,
            color="0.7",
            label="every setting",
        )
        front = frontier(points)
        ax.step(
            [p.fa_per_hour for p in front],
            [100 * p.miss_rate for p in front],
            where="post",
            color="C0",
            label="frontier",
        )
        ax.axvline(chosen.target_fa_per_hour, color="C3", linestyle="--", label="target")
        c = chosen.point
        ax.scatter(
            [c.fa_per_hour],
            [100 * c.miss_rate],
            s=80,
            marker="*",
            color="C3",
            zorder=3,
            label=("chosen: " if chosen.reachable else "closest: ") + c.setting.text(),
        )
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("false accepts per hour")
        ax.set_ylabel("miss rate (%)")
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)  # long file names wrap
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        try:
            fig.savefig(os.fspath(path), format="png")
        except OSError as err:
            raise OutputError(f"{path}: cannot write the plot ({err.strerror or err})") from None
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------------------
# Writing the detection section of config.yaml in place.


_TOP_KEY = re.compile(r"^(?P<key>[^\s#][^:#]*):(?P<rest>.*)$")
_CHILD_KEY = re.compile(r"^(?P<indent>[ ]+)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<space>[ ]*)(?P<value>.*)$")
_TRAILING_COMMENT = re.compile(r"(?P<value>.*?)(?P<comment>[ ]+#.*)?$")


def yaml_value(value: Any) -> str:
    """A detection value as one YAML flow scalar or mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_yaml_key(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return _yaml_key(str(value))


def _yaml_key(text: str) -> str:
    # Plain when every YAML reader reads it back as this very string (YAML 1.1 readers take
    # yes/no/on/off for booleans: those are quoted), else double-quoted.
    import yaml

    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text):
        with contextlib.suppress(yaml.YAMLError):
            if yaml.safe_load(text) == text:
                return text
    return json.dumps(text)


def detection_snippet(values: Mapping[str, Any], comment_lines: Sequence[str] = ()) -> str:
    """The ``detection:`` section as YAML text."""
    lines = [f"# {line}" for line in comment_lines]
    lines.append("detection:")
    lines.extend(f"  {key}: {yaml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def edit_detection_text(text: str, values: Mapping[str, Any], source: str = "<config>") -> str:
    """``text`` with the values of the ``detection:`` keys replaced in place (comments, order and
    every other line kept); keys not there are added at the end of the section, and a missing
    section at the end of the file. Raises :class:`EvaluationError` when the section is not a
    block mapping that can be edited line by line."""
    from kwsd.config import ConfigError

    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if (m := _TOP_KEY.match(line.rstrip("\r\n"))) and m["key"] == "detection"
        ),
        None,
    )
    if start is None:
        separator = "" if not text or text.endswith("\n") else newline
        return text + separator + newline + detection_snippet(values).replace("\n", newline)
    rest = _TOP_KEY.match(lines[start].rstrip("\r\n"))
    assert rest is not None
    inline = _TRAILING_COMMENT.match(rest["rest"].strip())
    inline_value = inline["value"].strip() if inline else ""
    if inline_value not in ("", "{}", "null", "~"):
        raise ConfigError(
            [
                f"detection: written as {inline_value!r} on one line; kwsd calibrate edits a block mapping "
                "(one key a line) only: nothing written (use --dry-run and paste the snippet)"
            ],
            source,
        )
    if inline_value:
        lines[start] = "detection:" + (inline["comment"] or "" if inline else "") + newline
    end = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#") and not lines[end][0].isspace():
            break
        end += 1
    # The section's own keys: lines at the indentation of its first key. A key's value goes on
    # over the lines indented deeper than the key (a block mapping), up to the next line that is not.
    indent: str | None = None
    keys: dict[str, tuple[int, list[int]]] = {}  # key -> (its line, its value's lines)
    insert_at = start + 1
    i = start + 1
    while i < end:
        m = _CHILD_KEY.match(lines[i].rstrip("\r\n"))
        if m is None or (indent is not None and m["indent"] != indent):
            i += 1
            continue
        indent = m["indent"]
        deeper: list[int] = []
        j = i + 1
        while j < end and (not lines[j].strip() or _indent(lines[j]) > len(indent)):
            if lines[j].strip():
                deeper.append(j)
            j += 1
        keys[m["key"]] = (i, deeper)
        insert_at = (deeper[-1] if deeper else i) + 1
        i = j
    indent = indent or "  "
    out = list(lines)
    removed: set[int] = set()
    for key, value in values.items():
        if key not in keys:
            continue
        line, deeper = keys[key]
        m = _CHILD_KEY.match(out[line].rstrip("\r\n"))
        assert m is not None
        tail = _TRAILING_COMMENT.match(m["value"])
        comment = tail["comment"] if tail and tail["comment"] and tail["value"].strip() else None
        out[line] = f"{m['indent']}{key}: {yaml_value(value)}{comment or ''}{newline}"
        # A block-mapping value's lines (not its comments) give way to the flow value.
        removed.update(k for k in deeper if not out[k].strip().startswith("#"))
    added = [
        f"{indent}{key}: {yaml_value(value)}{newline}" for key, value in values.items() if key not in keys
    ]
    if added and not out[insert_at - 1].endswith(("\n", "\r")):
        out[insert_at - 1] += newline
    out[insert_at:insert_at] = added
    shift = len(added)
    removed = {k + shift if k >= insert_at else k for k in removed}
    return "".join(line for k, line in enumerate(out) if k not in removed)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def edit_model_text(text: str, model: Path, source: str = "<config>") -> str:
    """``text`` with the top-level ``model:`` value set to ``model`` (its comment kept); a file
    without the key gets it as its first line after the opening comments."""
    from kwsd.config import ConfigError

    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    value = json.dumps(str(model))  # a YAML double-quoted string
    for i, line in enumerate(lines):
        m = _TOP_KEY.match(line.rstrip("\r\n"))
        if m and m["key"] == "model":
            inline = _TRAILING_COMMENT.match(m["rest"].strip())
            comment = inline["comment"] or "" if inline else ""
            if i + 1 < len(lines) and lines[i + 1][:1].isspace() and lines[i + 1].strip():
                raise ConfigError(
                    ["model: written over several lines; kwsd calibrate edits `model: PATH` on one line "
                     "only: nothing written"],
                    source,
                )  # fmt: skip
            lines[i] = f"model: {value}{comment}{newline}"
            return "".join(lines)
    first = 0
    while first < len(lines) and (not lines[first].strip() or lines[first].lstrip().startswith("#")):
        first += 1
    return "".join([*lines[:first], f"model: {value}{newline}", *lines[first:]])


def write_detection(
    path: str | os.PathLike[str],
    values: Mapping[str, Any],
    *,
    parse: Callable[[str, str], Any],
    model: Path | None = None,
) -> str:
    """Edit ``path``'s detection section in place (:func:`edit_detection_text`), and its
    ``model:`` too when ``model`` is given; returns the new text.

    ``parse(text, source)`` must accept the file before (else its error propagates and nothing is
    written) and the edited text after, which must then hold exactly ``values`` (and ``model``).
    The new file replaces the old one atomically, with the same permissions; the old one is kept
    as ``<name>.bak``.
    """
    path = Path(path)
    from kwsd.config import MAX_CONFIG_BYTES, ConfigError

    try:
        raw = read_limited(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(["no such file (nothing written)"], str(path)) from None
    except OSError as err:
        raise ConfigError([f"cannot read the file ({err.strerror or err})"], str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text (nothing written)"], str(path)) from None
    parse(text, str(path))  # a config with problems is refused before anything is written
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    new_text = edit_detection_text(text, values, str(path))
    if model is not None:
        new_text = edit_model_text(new_text, model, str(path))
    config = parse(new_text, str(path))
    if model is not None and getattr(config, "model", None) != model:
        raise ConfigError(
            [f"model: the edited file reads as {config.model}, not {model}: nothing written (a bug)"],
            str(path),
        )
    expected = _normalised(values)
    got = dict(getattr(config, "detection", {}))
    if got != expected:
        raise ConfigError(
            [
                f"detection: the edited file reads as {got}, not {expected}: nothing written (a bug; "
                "use --dry-run and paste the snippet)"
            ],
            str(path),
        )
    backup = path.with_name(path.name + ".bak")
    tmp = path.with_name(f".{path.name}.kwsd-tmp")
    try:
        # Both copies hold what the config holds (a password, maybe): each is created private
        # and given the config's own permissions, never the umask's (often world-readable).
        owner = os.stat(path)
        _write_private(backup, raw, owner)
        _write_private(tmp, (bom + new_text).encode("utf-8"), owner)
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{path}: cannot write ({err.strerror or err}); the file is unchanged") from None
    return new_text


def _write_private(path: Path, data: bytes, like: os.stat_result) -> None:
    """Write ``data`` to ``path`` (replacing a regular file only), created 0600 and then given
    the mode (and, where allowed, the owner and group) of ``like``, so it is never readable by
    others while it is written. Raises OSError."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(errno.EEXIST, f"{path} is not a regular file; not replacing it")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_TRUNC
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # only root may give a file away
            os.fchown(f.fileno(), like.st_uid, like.st_gid)
        os.fchmod(f.fileno(), stat.S_IMODE(like.st_mode))


def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    from kwsd.detection import check_detection

    checked = check_detection({k: v for k, v in values.items() if v is not None})
    if not checked.get("label_thresholds", True):
        del checked["label_thresholds"]
    return checked
