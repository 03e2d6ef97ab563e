"""Detection events and where they go.

An event is what a subscriber relies on: the label and score, when it was heard (wall
clock, RFC 3339 UTC, and audio time since the listener started), which model heard it
(name and sha256), and a sequence number with a per-boot id so gaps and duplicates show.

``StdoutPublisher`` writes one JSON object per line: the built-in default when no broker
is configured; its stats messages go to the log. :class:`kwsd.mqtt.MqttPublisher` sends the
same events to a broker.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from kwsd.state import StateChange

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

log = logging.getLogger(__name__)


def rfc3339(when: dt.datetime) -> str:
    """``when`` in UTC as RFC 3339 with milliseconds: ``2026-01-02T03:04:05.000Z``."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DetectionEvent:
    label: str
    score: float
    time_utc: dt.datetime
    audio_time_ms: int
    model_name: str
    model_sha256: str
    sequence: int
    boot_id: str
    #: A state label turning on or off (:mod:`kwsd.state`); None for an event.
    state: StateChange | None = None
    #: The wall clock when that sound started (the same in its on and its off).
    started_utc: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        values = {
            "label": self.label,
            "score": round(self.score, 5),
            "time": rfc3339(self.time_utc),
            "audio_time_ms": self.audio_time_ms,
            "model": {"name": self.model_name, "sha256": self.model_sha256},
            "sequence": self.sequence,
            "boot_id": self.boot_id,
        }
        if self.state is not None:
            values.update(self.state.fields())
            if self.started_utc is not None:
                values["started"] = rfc3339(self.started_utc)
        return values


class EventStamper:
    """Numbers events 1, 2, ... under one random boot id (one per process start)."""

    def __init__(
        self,
        model_name: str,
        model_sha256: str,
        boot_id: str | None = None,
        *,
        models: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        self.model_name = model_name
        self.model_sha256 = model_sha256
        #: With several models: each one's key in the pipeline -> (its name, its sha256).
        self._models = dict(models or {})
        self.boot_id = boot_id or uuid.uuid4().hex
        self._sequence = 0
        #: label -> wall clock its sound started, while on.
        self._started_utc: dict[str, dt.datetime] = {}

    def stamp(
        self,
        label: str,
        score: float,
        audio_time_ms: int,
        now_utc: dt.datetime,
        state: StateChange | None = None,
        *,
        model: str | None = None,
    ) -> DetectionEvent:
        """The event of a detection; ``model``: the key of the model that heard it, when
        several listen (None: the stamper's own model)."""
        name, sha256 = self._models[model] if model is not None else (self.model_name, self.model_sha256)
        self._sequence += 1
        started_utc = None
        if state is not None:
            # The wall clock of the sound's start: this event's less the audio time since, taken
            # once at on, so that its off says the same.
            started_utc = self._started_utc.pop(label, None) or now_utc - dt.timedelta(
                milliseconds=audio_time_ms - state.started_ms
            )
            if state.on:
                self._started_utc[label] = started_utc
        return DetectionEvent(
            label,
            score,
            now_utc,
            audio_time_ms,
            name,
            sha256,
            self._sequence,
            self.boot_id,
            state,
            started_utc,
        )


#: Takes each window's smoothed scores: (audio time in ms, one score per label).
ScoreSink = Callable[[int, "npt.NDArray[np.float64]"], None]


class Publisher(Protocol):
    """Delivers detection events and stats; called from the listener thread only."""

    def publish(self, event: DetectionEvent) -> None: ...

    def publish_stats(self, stats: Mapping[str, Any]) -> None: ...

    def score_sink(self) -> ScoreSink | None:
        """What takes every window's smoothed scores, or None when this publisher sends none
        (the listener then skips them: 50 windows a second)."""
        ...

    def counters(self) -> dict[str, Any]:
        """The publisher's own part of a stats message ({} when it has none)."""
        ...

    def close(self) -> None: ...


class StdoutPublisher:
    """One JSON line per event, flushed at once (a pipe reader sees each detection as it happens)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    def publish(self, event: DetectionEvent) -> None:
        self.write(event.to_dict())

    def write(self, data: Mapping[str, Any]) -> None:
        """One event already in its JSON form (a detection handed over on reload)."""
        self._stream.write(json.dumps(data) + "\n")
        self._stream.flush()

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        # Not on stdout, which carries detections only: to the log (the journal under systemd).
        log.info("stats %s", json.dumps(stats))

    def score_sink(self) -> ScoreSink | None:
        return None  # stdout carries detections only (``--scores`` prints scores itself)

    def counters(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self._stream.flush()


class HandoverPublisher:
    """Stands in for the publisher while a reload replaces it, so the audio never waits.

    ``build`` runs on a worker thread: it closes the old publisher (a bounded wait for what it
    still has to deliver, longer while the broker is away) and returns the new one, which
    first sends what the old one left undelivered. Meanwhile detections wait here, in order;
    the first call after ``build`` returns hands them to the new publisher, ahead of anything
    later. Stats messages due meanwhile are skipped (the next one counts everything).

    Listener thread only, like any publisher, apart from ``build``. An exception from
    ``build`` is a bug: it is raised again on the listener thread, which then stops kwsd.
    """

    def __init__(self, build: Callable[[], Publisher]) -> None:
        self._build = build
        self._waiting: list[DetectionEvent] = []
        self._result: Publisher | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kwsd-publisher-handover", daemon=True)

    def start(self) -> HandoverPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._result = self._build()
        except BaseException as err:  # raised again on the listener thread
            self._error = err
        finally:
            self._done.set()

    def settled(self) -> Publisher | None:
        """The new publisher once ``build`` has returned (holding the waiting detections), else None."""
        if not self._done.is_set():
            return None
        if self._error is not None:
            raise RuntimeError("replacing the publisher failed") from self._error
        assert self._result is not None
        waiting, self._waiting = self._waiting, []
        for event in waiting:
            self._result.publish(event)
        return self._result

    def publish(self, event: DetectionEvent) -> None:
        publisher = self.settled()
        if publisher is None:
            self._waiting.append(event)
        else:
            publisher.publish(event)

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        publisher = self.settled()
        if publisher is None:
            log.debug("stats skipped: the publisher is being replaced")
        else:
            publisher.publish_stats(stats)

    def counters(self) -> dict[str, Any]:
        publisher = self.settled()
        return publisher.counters() if publisher is not None else {}

    def score_sink(self) -> ScoreSink | None:
        return None  # none while replacing; the listener asks the new publisher once settled

    def close(self) -> None:
        """Wait for ``build`` (bounded by its own close), then close the new publisher."""
        self._done.wait()
        publisher = self.settled()
        assert publisher is not None
        publisher.close()
