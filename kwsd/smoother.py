"""RecognizeCommands: turns a stream of per-window scores into discrete detections.

A port of TensorFlow's ``RecognizeCommands`` (speech_commands C++/Python and the
micro_speech example), as stated in ../shared/REFERENCE.md:

1. scores of the wrong length are an error; so is a time earlier than the previous
   one (the reference only checks the oldest queued entry; kwsd rejects any step back);
2. append, then drop entries older than ``now - average_window_ms`` (an entry exactly
   that old stays);
3. fewer than ``minimum_count`` entries, or spanning less than a quarter of the window:
   no decision (the last label is reported with score 0);
4. average each label's score over the queue; the top label wins (ties: lowest index);
5. firing: ``FiringRule.TF`` fires when the score beats the label's threshold, the label
   differs from the last fired one and the suppression time has passed (skipped while
   the last fired label is ``_silence_``), so a held word never fires twice.
   ``FiringRule.MICRO`` fires when the score beats the threshold and either the label
   differs or the suppression time has passed, so a held word re-fires.

Pure: scores and an explicit audio time in, a result out. Not thread-safe.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kwsd.labels import SILENCE_LABEL

log = logging.getLogger(__name__)


#: Updates between exact re-sums of the averaging queue.
_RESUM_EVERY = 1000


class FiringRule(enum.Enum):
    TF = "tf"
    MICRO = "micro"


class SmootherError(ValueError):
    """Bad input to the smoother: wrong score count or time going backwards."""


@dataclass(frozen=True)
class SmootherSettings:
    """Defaults are TensorFlow's C++ RecognizeCommands (1000 / 0.2 / 500 / 3, TF rule)."""

    average_window_ms: int = 1000
    threshold: float = 0.2
    suppression_ms: int = 500
    minimum_count: int = 3
    rule: FiringRule = FiringRule.TF
    #: Per-label overrides of ``threshold``.
    label_thresholds: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.average_window_ms <= 0:
            raise SmootherError(f"average_window_ms: expected > 0, got {self.average_window_ms}")
        if self.suppression_ms < 0:
            raise SmootherError(f"suppression_ms: expected >= 0, got {self.suppression_ms}")
        if self.minimum_count < 1:
            raise SmootherError(f"minimum_count: expected >= 1, got {self.minimum_count}")
        if not 0.0 <= self.threshold <= 1.0:
            raise SmootherError(f"threshold: expected 0..1, got {self.threshold}")
        for label, value in (self.label_thresholds or {}).items():
            if not 0.0 <= value <= 1.0:
                raise SmootherError(f"threshold for {label}: expected 0..1, got {value}")


@dataclass(frozen=True)
class SmootherResult:
    label: str
    score: float
    time_ms: int
    is_new_command: bool


class RecognizeCommands:
    def __init__(self, labels: Sequence[str], settings: SmootherSettings | None = None) -> None:
        self.labels = tuple(labels)
        self.settings = settings or SmootherSettings()
        unknown = sorted(set(self.settings.label_thresholds or {}) - set(self.labels))
        if unknown:
            raise SmootherError(
                f"threshold given for {unknown[0]!r}, which is not a label of this model "
                f"({', '.join(self.labels)})"
            )
        overrides = self.settings.label_thresholds or {}
        self._thresholds = [float(overrides.get(label, self.settings.threshold)) for label in self.labels]
        self._times: deque[int] = deque()
        self._scores: deque[npt.NDArray[np.float64]] = deque()
        self._sum = np.zeros(len(self.labels), dtype=np.float64)
        self._last_time_ms: int | None = None
        self._updates = 0
        self.previous_top_label = SILENCE_LABEL
        self.previous_top_label_time_ms: int | None = None

    def continue_from(self, previous: RecognizeCommands) -> None:
        """Take over ``previous``'s history: new settings mid-stream (a config reload).

        The scores being averaged, the last time and the last label fired (with its time, for
        suppression) carry over, so a word already reported is not reported again just because
        the settings changed. A shorter averaging window drops the older scores at the next
        update.
        """
        if previous.labels != self.labels:
            raise SmootherError(f"labels differ: {', '.join(previous.labels)} vs {', '.join(self.labels)}")
        self._times = deque(previous._times)
        self._scores = deque(previous._scores)
        self._sum = previous._sum.copy()
        self._last_time_ms = previous._last_time_ms
        self._updates = previous._updates
        self.previous_top_label = previous.previous_top_label
        self.previous_top_label_time_ms = previous.previous_top_label_time_ms

    def average_scores(self) -> npt.NDArray[np.float64] | None:
        """Each label's score averaged over the current window (what the threshold is compared
        with), in label order; None before the first update."""
        if not self._times:
            return None
        averages: npt.NDArray[np.float64] = self._sum / len(self._times)
        return averages

    def update(self, scores: npt.NDArray[np.float32], time_ms: int) -> SmootherResult:
        """Feed one window's scores at audio time ``time_ms``; returns the smoothed decision."""
        if len(scores) != len(self.labels):
            raise SmootherError(f"got {len(scores)} scores but the model has {len(self.labels)} labels")
        if self._last_time_ms is not None and time_ms < self._last_time_ms:
            raise SmootherError(f"time went backwards: {time_ms} ms after {self._last_time_ms} ms")
        self._last_time_ms = time_ms
        settings = self.settings
        if scores.dtype != np.float32:
            scores = np.asarray(scores, dtype=np.float32)
        # Kept as float64 (exact): the running sum then adds and subtracts one dtype, which
        # numpy does several times faster on four values than float32 into float64.
        wide = scores.astype(np.float64)
        self._times.append(time_ms)
        self._scores.append(wide)
        self._sum += wide
        oldest_allowed = time_ms - settings.average_window_ms
        while self._times[0] < oldest_allowed:
            self._times.popleft()
            self._sum -= self._scores.popleft()

        count = len(self._times)
        span_ms = time_ms - self._times[0]
        if count < settings.minimum_count or span_ms < settings.average_window_ms // 4:
            return SmootherResult(self.previous_top_label, 0.0, time_ms, False)

        self._updates += 1
        if self._updates % _RESUM_EVERY == 0:
            # Re-summing now and then keeps the running sum from drifting over months of audio.
            self._sum = np.sum(self._scores, axis=0, dtype=np.float64)
        top = int(self._sum.argmax())  # the sum orders labels as the average does; ties: lowest index
        top_label = self.labels[top]
        top_score = float(self._sum[top]) / count

        if self.previous_top_label_time_ms is None or self.previous_top_label == SILENCE_LABEL:
            elapsed_ms = None  # suppression does not apply
        else:
            elapsed_ms = time_ms - self.previous_top_label_time_ms
        suppressed = elapsed_ms is not None and elapsed_ms <= settings.suppression_ms
        above = top_score > self._thresholds[top]
        if settings.rule is FiringRule.TF:
            fire = above and top_label != self.previous_top_label and not suppressed
        else:
            fire = above and (top_label != self.previous_top_label or not suppressed)
        if fire:
            self.previous_top_label = top_label
            self.previous_top_label_time_ms = time_ms
        return SmootherResult(top_label, top_score, time_ms, fire)
