"""Live smoothed scores, for watching what the model hears while setting thresholds.

``kwsd stream --scores`` and ``kwsd run --scores`` show, after every window, each label's
smoothed score: the average the smoother compares with the label's threshold
(:meth:`kwsd.smoother.RecognizeCommands.average_scores`).

* Not a terminal (a pipe, a file): one JSON line per window,
  ``{"audio_time_ms": 1520, "scores": {"_silence_": 0.01, "yes": 0.87, ...}}`` (every label,
  4 decimals), in audio-time order with the detection lines, which keep their own shape (they
  have a ``label``; score lines have ``scores``).
* A terminal: one meter line redrawn in place, a bar per keyword label with its threshold
  marked (``|``) and the label in capitals while above it; a detection is printed on a line of
  its own above the meter. Redrawn at most every :data:`REDRAW_MS` of audio.

:class:`ScorePeaks` turns the same per-window scores into the low-rate MQTT ``scores``
messages: each label's highest smoothed score over an interval of audio time.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

import numpy as np
import numpy.typing as npt

from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL

log = logging.getLogger(__name__)

#: The meter is redrawn at most this often, in audio time (a terminal cannot show more).
REDRAW_MS = 50
#: Bar cells per label at most, and at least.
MAX_BAR = 20
MIN_BAR = 4


def score_line(time_ms: int, labels: Sequence[str], scores: npt.NDArray[np.float64]) -> dict[str, Any]:
    """A window's smoothed scores as the JSON object ``--scores`` prints."""
    return {
        "audio_time_ms": time_ms,
        "scores": {label: round(float(score), 4) for label, score in zip(labels, scores, strict=True)},
    }


class Thresholds(Protocol):
    """What the meter needs of the detection settings (a DetectionSettings, or a MultiPipeline
    for the thresholds of several models)."""

    def threshold_of(self, label: str) -> float: ...


class ScoreDisplay:
    """Prints each window's smoothed scores to ``out``: a meter on a terminal, else JSON lines.

    ``settings`` gives the detection settings now (a config reload changes them). Call
    :meth:`window` after every window (the pipeline's ``on_smoothed``), :meth:`line` for any
    other line (a detection), :meth:`close` at the end. One thread.
    """

    def __init__(
        self,
        out: TextIO,
        labels: Sequence[str],
        settings: Callable[[], Thresholds],
        *,
        meter: bool | None = None,
    ) -> None:
        self._out = out
        self._labels = tuple(labels)
        self._settings = settings
        self._meter = out.isatty() if meter is None else meter
        shown = [i for i, label in enumerate(self._labels) if label not in (SILENCE_LABEL, UNKNOWN_LABEL)]
        self._shown = shown or list(range(len(self._labels)))
        self._last_draw_ms: int | None = None
        self._drawn = ""

    @property
    def meter(self) -> bool:
        return self._meter

    def window(self, time_ms: int, scores: npt.NDArray[np.float64]) -> None:
        if not self._meter:
            self._out.write(json.dumps(score_line(time_ms, self._labels, scores)) + "\n")
            self._out.flush()
            return
        if self._last_draw_ms is not None and time_ms - self._last_draw_ms < REDRAW_MS:
            return
        self._last_draw_ms = time_ms
        self._drawn = self.render(time_ms, scores)
        self._out.write("\r" + self._drawn + "\x1b[K")
        self._out.flush()

    def line(self, text: str) -> None:
        """A whole line (a detection), above the meter on a terminal."""
        if self._meter and self._drawn:
            self._out.write("\r\x1b[K" + text + "\n" + self._drawn)
        else:
            self._out.write(text + "\n")
        self._out.flush()

    def write(self, text: str) -> int:
        """File-like: whole lines written through :meth:`line` (a publisher's stream)."""
        for part in text.splitlines():
            self.line(part)
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if self._meter and self._drawn:
            self._out.write("\n")
        self._out.flush()

    def render(self, time_ms: int, scores: npt.NDArray[np.float64]) -> str:
        """The meter line, within the terminal's width: ``  2.25 s  YES [#########|] 0.92  no [...``.

        Every keyword label when they fit with bars of at least :data:`MIN_BAR` cells, else
        the highest-scoring ones that do, highest first.
        """
        settings = self._settings()
        columns = shutil.get_terminal_size((100, 24)).columns - 1  # never the last column: no wrap
        shown = list(self._shown)
        width = 9  # "%7.2f s"

        def needs(indices: list[int], bar: int) -> int:
            return width + sum(len(self._labels[i]) + bar + 10 for i in indices)

        if needs(shown, MIN_BAR) > columns:
            shown.sort(key=lambda i: -float(scores[i]))
            while len(shown) > 1 and needs(shown, MIN_BAR) > columns:
                shown.pop()
        spare = columns - needs(shown, 0)
        bar = max(MIN_BAR, min(MAX_BAR, spare // max(len(shown), 1)))
        parts = [f"{time_ms / 1000:7.2f} s"]
        for index in shown:
            name = self._labels[index]
            score = float(scores[index])
            threshold = settings.threshold_of(name)
            filled = min(bar, round(score * bar))
            cells = ["#" if cell < filled else "." for cell in range(bar)]
            cells[min(bar - 1, round(threshold * bar))] = "|"
            shown_name = name.upper() if score > threshold else name
            parts.append(f"{shown_name} [{''.join(cells)}] {score:.2f}")
        return "  ".join(parts)[:columns]


class ScorePeaks:
    """Each label's highest smoothed score over ``interval_ms`` of audio, for the MQTT topic.

    :meth:`window` returns the message once ``interval_ms`` of audio has passed since the last
    one (the first: since the first window), else None.
    """

    def __init__(self, labels: Sequence[str], interval_ms: int) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self._labels = tuple(labels)
        self._interval_ms = interval_ms
        self._peaks: npt.NDArray[np.float64] | None = None
        self._since_ms: int | None = None

    def window(self, time_ms: int, scores: npt.NDArray[np.float64]) -> dict[str, Any] | None:
        if self._peaks is None:
            self._peaks = np.array(scores, np.float64)
        else:
            np.maximum(self._peaks, scores, out=self._peaks)
        if self._since_ms is None:
            self._since_ms = time_ms
        if time_ms - self._since_ms < self._interval_ms:
            return None
        message = {
            "audio_time_ms": time_ms,
            "interval_ms": time_ms - self._since_ms,
            "peak_scores": {
                label: round(float(peak), 4) for label, peak in zip(self._labels, self._peaks, strict=True)
            },
        }
        self._peaks = None
        self._since_ms = time_ms
        return message
