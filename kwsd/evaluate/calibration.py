"""Calibration: many smoother settings replayed on recorded scores, the frontier and the choice."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.classifier import Classifier
from kwsd.detection import DetectionSettings
from kwsd.errors import AudioFormatError, EvaluationError
from kwsd.evaluate.captures import ReviewedSet
from kwsd.evaluate.scoring import (
    DEFAULT_TOLERANCE_MS,
    MS_PER_HOUR,
    StreamFigures,
    figures,
    is_keyword,
    score_detections,
)
from kwsd.evaluate.streams import AudioFacts, RecordedScores, run_stream, smooth
from kwsd.evaluate.truth import GroundTruth, TruthWord, check_truth
from kwsd.frontend import FrontendSpec
from kwsd.labels import SILENCE_LABEL
from kwsd.pipeline import Detection
from kwsd.smoother import FiringRule, RecognizeCommands, SmootherSettings
from kwsd.state import StateSettings, StateTracker

log = logging.getLogger(__name__)

#: The calibration grid's defaults.
DEFAULT_THRESHOLDS = (*(round(0.30 + 0.05 * i, 2) for i in range(14)), 0.99)  # 0.30 .. 0.95, 0.99
DEFAULT_AVERAGE_WINDOWS_MS = (250, 500, 750, 1000, 1250, 1500)
DEFAULT_SUPPRESSIONS_MS = (500, 750, 1000, 1500, 2000)
DEFAULT_TARGET_FA_PER_HOUR = 0.5


# --------------------------------------------------------------------------------------
# Calibration: many smoother settings replayed on recorded scores.


@dataclass(frozen=True)
class Averages:
    """The smoother's steps 1-4 for one averaging window over one run: per window, the top label's
    index and its averaged score (-1 and 0.0 where the smoother takes no decision); and the state
    labels' changes, which depend on the averages only (not on the threshold or suppression)."""

    labels: tuple[str, ...]
    times_ms: list[int]
    top: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    state_changes: tuple[Detection, ...] = ()


def average_scores(
    recorded: RecordedScores,
    average_window_ms: int,
    minimum_count: int,
    states: Mapping[str, StateSettings] | None = None,
) -> Averages:
    """Run RecognizeCommands (with a threshold nothing beats, so it never fires) and keep its
    averaged top label and score: what any threshold and suppression would see. With
    ``states``, also the changes a :class:`~kwsd.state.StateTracker` makes of every label's
    averages, as the pipeline reports them (stamped with the window that decided them)."""
    labels = recorded.labels
    smoother = RecognizeCommands(
        labels, SmootherSettings(average_window_ms, 1.0, 0, minimum_count, FiringRule.TF)
    )
    tracker = StateTracker(labels, states) if states else None
    index = {label: i for i, label in enumerate(labels)}
    top = np.full(len(recorded.times_ms), -1, np.int64)
    score = np.zeros(len(recorded.times_ms), np.float64)
    times = [int(t) for t in recorded.times_ms]
    changes: list[Detection] = []
    for i, (time_ms, window_scores) in enumerate(zip(times, recorded.scores, strict=True)):
        result = smoother.update(window_scores, time_ms)
        if result.score > 0.0:  # no decision reports 0.0; a decision at 0.0 cannot fire either
            top[i] = index[result.label]
            score[i] = result.score
        if tracker is not None:
            averages = smoother.average_scores()
            if averages is not None:
                changes += [
                    Detection(c.label, c.score, time_ms, c) for c in tracker.update(time_ms, averages)
                ]
    return Averages(labels, times, top, score, tuple(changes))


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
    """One audio file to calibrate on: its recorded scores, its truth (empty: background only).

    ``counted_ms``: the audio time its false accepts count over when not its own length (a
    reviewed capture counts 0: the listening it stands for is counted once for all of them).
    """

    audio: AudioFacts
    recorded: RecordedScores
    truth: tuple[TruthWord, ...] = ()
    counted_ms: float | None = None

    @property
    def audio_ms(self) -> float:
        return self.recorded.audio_ms if self.counted_ms is None else self.counted_ms


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
        listened_ms: float = 0.0,
        states: Mapping[str, StateSettings] | None = None,
    ) -> None:
        if not measured:
            raise EvaluationError("nothing to calibrate on: no audio given")
        self.measured = list(measured)
        #: Audio time counted beyond the files' own: the listening reviewed captures stand for.
        self.listened_ms = listened_ms
        self.labels = measured[0].recorded.labels
        self.minimum_count = minimum_count
        self.rule = rule
        self.tolerance_ms = tolerance_ms
        #: The state labels, replayed with these on/off settings (never swept).
        self.states: Mapping[str, StateSettings] = dict(states or {})
        self._averages: dict[int, list[Averages]] = {}

    def averages(self, average_window_ms: int) -> list[Averages]:
        if average_window_ms not in self._averages:
            self._averages[average_window_ms] = [
                average_scores(m.recorded, average_window_ms, self.minimum_count, self.states)
                for m in self.measured
            ]
        return self._averages[average_window_ms]

    def detections(self, setting: Setting) -> list[list[Detection]]:
        thresholds = label_threshold_list(self.labels, setting.threshold, dict(setting.label_thresholds))
        runs = [
            (fire(a, thresholds, setting.suppression_ms, self.rule), a.state_changes)
            for a in self.averages(setting.average_window_ms)
        ]
        if not self.states:
            return [fired for fired, _ in runs]
        # As the pipeline reports them: a state label's commands not at all, its changes after
        # the window's command (a stable sort keeps that order within a window).
        return [
            sorted(
                [d for d in fired if d.label not in self.states] + list(changes),
                key=lambda d: d.audio_time_ms,
            )
            for fired, changes in runs
        ]

    def evaluate(self, setting: Setting, detections: list[list[Detection]] | None = None) -> Point:
        runs = detections if detections is not None else self.detections(setting)
        total = figures([], [], self.labels, self.listened_ms)
        for m, found in zip(self.measured, runs, strict=True):
            scored = score_detections(
                found, m.truth, window_ms=m.recorded.window_ms, tolerance_ms=self.tolerance_ms
            )
            total += figures(scored, m.truth, self.labels, m.audio_ms)
        return Point(setting, total)

    def check_replay(self, setting: Setting) -> None:
        """The replayed detections must be RecognizeCommands' own, run in full."""
        settings = setting.smoother(self.minimum_count, self.rule)
        for m, replayed in zip(self.measured, self.detections(setting), strict=True):
            full = smooth(m.recorded, settings, self.states)
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


# --------------------------------------------------------------------------------------
# kwsd calibrate: stream the files once, sweep, choose.


@dataclass(frozen=True)
class Calibration:
    """What ``kwsd calibrate`` measured and chose (the command prints it and writes the config)."""

    measured: tuple[Measured, ...]
    #: The reviewed captures calibrated on (their listening counts in :attr:`hours`), if any.
    captures: ReviewedSet | None
    #: Every setting tried, and the one chosen (``choice.reachable``: it meets the target).
    points: list[Point]
    choice: Choice
    #: The figures of the settings calibrated from, as the pipeline itself made them.
    current_figures: StreamFigures
    streamed_s: float  # wall time spent running the model over the audio

    @property
    def hours(self) -> float:
        return sum(m.audio_ms for m in self.measured) / MS_PER_HOUR + (
            self.captures.hours if self.captures is not None else 0.0
        )

    @property
    def files(self) -> tuple[Measured, ...]:
        """The audio files given (the words and the background), without the captures."""
        return tuple(m for m in self.measured if m.counted_ms is None)


def calibrate(
    words_audio: str | None,
    truth: GroundTruth | None,
    background_audio: Sequence[str],
    *,
    captures: ReviewedSet | None = None,
    spec: FrontendSpec,
    classifier: Classifier,
    labels: Sequence[str],
    current: DetectionSettings,
    thresholds: Sequence[float],
    average_windows_ms: Sequence[int],
    suppressions_ms: Sequence[int],
    target_fa_per_hour: float,
    per_label: bool = False,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> Calibration:
    """Run the model once over the words (with their truth), each background file and each
    reviewed capture (:mod:`kwsd.evaluate.captures`) with the ``current`` settings, then replay
    the grid of thresholds, averaging windows and suppressions on the recorded scores
    (``current``'s clip stride, minimum count and rule), and choose the setting that misses
    fewest words within ``target_fa_per_hour`` (per label after that with ``per_label``). The
    choice is replayed through RecognizeCommands in full and must give the same detections.

    State labels (``current.states``) are replayed as the pipeline reports them, with their
    on/off settings as given: those are not swept (only the averaging window changes what they
    see), and each on is scored as :func:`~kwsd.evaluate.scoring.score_detections` says."""
    started = time.perf_counter()
    measured: list[Measured] = []
    listened_ms = float(captures.listened_ms) if captures is not None else 0.0
    current_figures = figures([], [], labels, listened_ms)
    files: list[tuple[str, tuple[TruthWord, ...]]] = []
    if words_audio is not None and truth is not None:
        files.append((words_audio, truth.words))
    files.extend((p, ()) for p in background_audio)
    for path, words in files:
        detections, recorded, audio = run_stream(path, spec, classifier, labels, settings=current)
        if words and truth is not None:
            check_truth(truth, labels, audio.audio_ms)
        measured.append(Measured(audio, recorded, tuple(words)))
        scored = score_detections(detections, words, window_ms=recorded.window_ms, tolerance_ms=tolerance_ms)
        current_figures += figures(scored, words, labels, audio.audio_ms)
    for capture in captures.captures if captures is not None else ():
        try:
            detections, recorded, audio = run_stream(capture.wav, spec, classifier, labels, settings=current)
        except AudioFormatError as err:
            log.warning("%s; left out", err)
            continue
        word = capture.truth_label(labels)
        start_ms = max(0.0, capture.decision_ms - recorded.window_ms)
        one_word = (TruthWord(word, start_ms),) if word is not None else ()
        measured.append(Measured(audio, recorded, one_word, counted_ms=0.0))
        scored = score_detections(
            detections, one_word, window_ms=recorded.window_ms, tolerance_ms=tolerance_ms
        )
        current_figures += figures(scored, one_word, labels, 0.0)
    streamed_s = time.perf_counter() - started
    sweeper = Sweeper(
        measured,
        minimum_count=current.minimum_count,
        rule=current.rule,
        tolerance_ms=tolerance_ms,
        listened_ms=listened_ms,
        states=current.states,
    )
    points = sweep(
        sweeper, thresholds=thresholds, average_windows_ms=average_windows_ms, suppressions_ms=suppressions_ms
    )
    choice = choose(points, target_fa_per_hour)
    if per_label and choice.reachable:
        point = refine_per_label(sweeper, choice.point, thresholds, target_fa_per_hour)
        choice = Choice(point, True, target_fa_per_hour)
    sweeper.check_replay(choice.point.setting)
    log.info(
        "streamed %.2f h in %.1f s; %d settings replayed in %.1f s",
        sum(m.audio.hours for m in measured),
        streamed_s,
        len(points),
        time.perf_counter() - started - streamed_s,
    )
    return Calibration(tuple(measured), captures, points, choice, current_figures, streamed_s)
