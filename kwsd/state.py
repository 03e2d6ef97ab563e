"""Sounds that last (a baby crying): labels reported as a state, on and off, not as events.

A label in ``detection.states`` is in *state* mode; every other label stays in *event* mode
(the smoother's one detection per word). For a state label, :class:`StateTracker` watches its
smoothed score (the same average the smoother compares with thresholds) with hysteresis:

* it turns **on** once the score has stayed above ``on_threshold`` for ``min_on_ms`` of
  audio; the sound *started* when that stretch began;
* it turns **off** once the score has stayed below ``off_threshold`` for ``min_off_ms``; the
  sound *ended* when that stretch began, so ``duration_ms`` is ended - started.

Scores between the two thresholds change nothing (a cry that wavers does not flap), and
``min_off_ms`` bridges the pauses between cries. The smoother's own events for a state label
are not reported. Pure: scores and audio time in, changes out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)

#: The keys of one label's entry in ``detection.states``.
STATE_KEYS = ("on_threshold", "off_threshold", "min_on_ms", "min_off_ms")


class StateError(ValueError):
    """A state setting that cannot be used; the message starts with its key."""


@dataclass(frozen=True)
class StateSettings:
    """One state label's hysteresis: thresholds are smoothed scores (0..1), times audio ms."""

    on_threshold: float
    off_threshold: float
    min_on_ms: int
    min_off_ms: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.off_threshold <= self.on_threshold <= 1.0:
            raise StateError(
                f"off_threshold: expected 0 <= off_threshold <= on_threshold <= 1, got off "
                f"{self.off_threshold:g} and on {self.on_threshold:g}"
            )
        for key in ("min_on_ms", "min_off_ms"):
            if getattr(self, key) < 0:
                raise StateError(f"{key}: expected a whole number of ms >= 0, got {getattr(self, key)}")

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in STATE_KEYS}


def check_states(data: Any) -> dict[str, StateSettings]:
    """``detection.states`` as {label: StateSettings}; StateError naming ``<label>.<key>``."""
    if not isinstance(data, Mapping):
        raise StateError(
            f"expected a mapping of label to its state settings ({', '.join(STATE_KEYS)}), got {data!r}"
        )
    states = {}
    for label, entry in data.items():
        if not isinstance(entry, Mapping):
            raise StateError(f"{label}: expected a mapping with {', '.join(STATE_KEYS)}, got {entry!r}")
        unknown = sorted(set(entry) - set(STATE_KEYS))
        missing = [key for key in STATE_KEYS if key not in entry]
        if unknown:
            raise StateError(f"{label}.{unknown[0]}: unknown setting (expected {', '.join(STATE_KEYS)})")
        if missing:
            raise StateError(f"{label}.{missing[0]}: missing (a state label needs {', '.join(STATE_KEYS)})")
        values: dict[str, Any] = {}
        for key in ("on_threshold", "off_threshold"):
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise StateError(f"{label}.{key}: expected a number 0..1, got {value!r}")
            values[key] = float(value)
        for key in ("min_on_ms", "min_off_ms"):
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StateError(f"{label}.{key}: expected a whole number of ms >= 0, got {value!r}")
            values[key] = value
        try:
            states[str(label)] = StateSettings(**values)
        except StateError as err:
            raise StateError(f"{label}.{err}") from None
    return states


@dataclass(frozen=True)
class StateChange:
    """A state label turned on or off. Times are audio ms: ``audio_time_ms`` when the change
    was decided (the window it was reported at), ``started_ms`` when the sound started,
    ``ended_ms`` (off only) when it ended."""

    label: str
    on: bool
    score: float
    audio_time_ms: int
    started_ms: int
    ended_ms: int | None = None

    @property
    def duration_ms(self) -> int | None:
        return None if self.ended_ms is None else self.ended_ms - self.started_ms

    def fields(self) -> dict[str, Any]:
        """Its fields in a detection's JSON: ``state`` on/off, when the sound started and (off)
        ended, in audio ms, and (off) how long it lasted."""
        values: dict[str, Any] = {
            "state": "on" if self.on else "off",
            "started_audio_time_ms": self.started_ms,
        }
        if self.ended_ms is not None:
            values["ended_audio_time_ms"] = self.ended_ms
            values["duration_ms"] = self.duration_ms
        return values


class StateTracker:
    """The state labels of a model: feed each window's smoothed scores, get the changes."""

    def __init__(self, labels: Sequence[str], states: Mapping[str, StateSettings]) -> None:
        unknown = sorted(set(states) - set(labels))
        if unknown:
            raise StateError(f"{unknown[0]}: not a label of this model ({', '.join(labels)})")
        self._tracked = [(labels.index(label), label, settings) for label, settings in states.items()]
        self._on = {label: False for label in states}
        #: When the current stretch above on_threshold (while off) or below off_threshold
        #: (while on) began; None when there is none.
        self._since: dict[str, int | None] = {label: None for label in states}
        self._started: dict[str, int] = {}

    def is_on(self, label: str) -> bool:
        return self._on[label]

    def update(self, time_ms: int, scores: npt.NDArray[np.float64]) -> list[StateChange]:
        changes = []
        for index, label, settings in self._tracked:
            score = float(scores[index])
            if not self._on[label]:
                if score <= settings.on_threshold:
                    self._since[label] = None
                    continue
                since = self._since[label]
                if since is None:
                    since = self._since[label] = time_ms
                if time_ms - since >= settings.min_on_ms:
                    self._on[label], self._since[label], self._started[label] = True, None, since
                    changes.append(StateChange(label, True, score, time_ms, since))
            else:
                if score >= settings.off_threshold:
                    self._since[label] = None
                    continue
                since = self._since[label]
                if since is None:
                    since = self._since[label] = time_ms
                if time_ms - since >= settings.min_off_ms:
                    self._on[label], self._since[label] = False, None
                    changes.append(StateChange(label, False, score, time_ms, self._started.pop(label), since))
        return changes

    def continue_from(self, previous: StateTracker) -> None:
        """New settings mid-stream (a reload): a label in both keeps whether it is on, and since when."""
        for label in self._on.keys() & previous._on.keys():
            self._on[label] = previous._on[label]
            self._since[label] = previous._since[label]
            if label in previous._started:
                self._started[label] = previous._started[label]

    def ended_by(self, states: Mapping[str, StateSettings], time_ms: int) -> list[StateChange]:
        """The offs, at ``time_ms``, of the labels on now that ``states`` no longer tracks."""
        return [
            StateChange(label, False, 0.0, time_ms, self._started[label], time_ms)
            for label, on in self._on.items()
            if on and label not in states
        ]

    def reset(self) -> None:
        """After a gap in the audio: a sound on stays on, the stretches being timed restart."""
        for label in self._since:
            self._since[label] = None
