"""Keeping what the listener heard: each detection and near-miss as a WAV and a JSON sidecar.

``capture.enabled`` (off by default). Privacy: this writes what the microphone heard around
each detection and near-miss to disk, with the time; it never leaves the machine unless
someone copies it. Review and delete with ``kwsd review`` (:mod:`kwsd.review`).

What is kept, for a detection at audio time ``T`` (the end of the window that fired): the
audio from ``T - pre_ms`` to ``T + post_ms``. A *near-miss* is a keyword label whose smoothed
score rose above ``near_miss_threshold`` (below the label's threshold) and fell back without
that label being detected; it is kept around the time of its highest score. Either way, in
the data-set layout the trainer reads, in a pending area until reviewed::

    <dir>/pending/<label>/<device>_nohash_<n>.wav   (16-bit mono at the model's rate)
    <dir>/pending/<label>/<device>_nohash_<n>.json  (the sidecar)

The sidecar: ``kind`` (detection, near_miss, or state_on: a state label turning on), label,
score, the label's threshold, model name and sha256, the detection settings, the wall and
audio time of the decision, the audio time of the first sample, the listened time (below), and
the smoothed scores of every window in the span (``scores``: ``audio_time_ms`` and one score
per label, labels in ``labels``).

Never in the audio's way: the listener thread only copies samples into a ring and, when a
capture's audio is complete, hands the samples and the sidecar to a writer thread through a
bounded queue. A full queue (a slow disk) or a failed write (a full disk) drops the capture and
counts it (``captures_dropped`` in stats); audio is never dropped for a capture. Bounds:
``max_files`` captures and ``max_mb`` of WAVs in the pending area; past either the oldest
(lowest numbers, by file time) are removed first. Numbering continues after what is there,
so captures survive restarts and are never overwritten (:mod:`kwsd.dataset_layout`).

How much was heard, for false accepts per hour (``kwsd calibrate --captures``): the folder's
``listened.json`` ledger counts the audio listened to with capture on, across runs
(``listened_ms``), and ``complete_from_ms``, the listened time from which on every capture is
still there: a capture removed by the bounds, dropped or not written moves it past that
capture, so reviewed false alarms over ``listened_ms - complete_from_ms`` are all of them (less
any deleted in review). Each sidecar has its ``listened_ms``. The writer thread updates the
ledger after each capture, every minute, and when kwsd stops (a ledger write is atomic; a kill
loses at most the last minute, which only errs towards more false accepts per hour).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.dataset_layout import NOHASH, save_new
from kwsd.errors import KwsdError
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.publisher import rfc3339

log = logging.getLogger(__name__)

PENDING_DIR = "pending"
LEDGER_NAME = "listened.json"
#: The writer thread brings the ledger up to date at least this often (seconds).
LEDGER_EVERY_S = 60.0
#: Captures waiting for the writer thread at most; more are dropped and counted.
QUEUE_CAPTURES = 16


class CaptureError(Exception):
    """The capture folder cannot be used (created or written) when kwsd starts."""


@dataclass(frozen=True)
class CaptureSettings:
    directory: Path
    pre_ms: int
    post_ms: int
    #: Keyword labels whose smoothed score passes this (and not their threshold) are near-misses;
    #: None: detections only.
    near_miss_threshold: float | None
    max_files: int
    max_mb: int


@dataclass(frozen=True)
class Ledger:
    """Audio listened to with capture on, in one capture folder, over all runs (module docstring)."""

    listened_ms: int = 0
    complete_from_ms: int = 0

    @property
    def complete_ms(self) -> int:
        """The listened time over which every capture is still there."""
        return max(0, self.listened_ms - self.complete_from_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "listened_ms": self.listened_ms,
            "complete_from_ms": self.complete_from_ms,
            "updated": rfc3339(dt.datetime.now(dt.UTC)),
        }


def read_ledger(directory: Path) -> Ledger:
    """The folder's ledger (a new folder has listened to nothing); CaptureError naming a ledger
    that cannot be read or is not one."""
    path = directory / LEDGER_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Ledger()
    except (OSError, ValueError) as err:
        raise CaptureError(f"{path}: cannot read it ({err}); remove it to start counting again") from None
    fields = ("listened_ms", "complete_from_ms")
    values = [data.get(key) if isinstance(data, dict) else None for key in fields]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise CaptureError(
            f"{path}: not a kwsd capture ledger (expected listened_ms and complete_from_ms, whole "
            "numbers >= 0); remove it to start counting again"
        )
    listened, complete_from = int(values[0] or 0), int(values[1] or 0)
    return Ledger(listened, min(complete_from, listened))


def write_ledger(directory: Path, ledger: Ledger) -> None:
    path = directory / LEDGER_NAME
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(ledger.to_dict()) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass(frozen=True)
class _Job:
    label: str
    samples: npt.NDArray[np.int16]
    sidecar: dict[str, Any]


def check_folder(directory: Path) -> None:
    """CaptureError naming the folder when kwsd may not write its pending area, or naming its
    ledger when that cannot be read."""
    pending = directory / PENDING_DIR
    try:
        pending.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=pending, prefix=".probe-"):
            pass
    except OSError as err:
        raise CaptureError(f"{directory}: cannot write there ({err.strerror or err})") from None
    read_ledger(directory)


class CaptureWriter:
    """The writer thread: WAV + sidecar per capture, then the bounds. Any thread may
    :meth:`submit`; never blocks."""

    def __init__(self, settings: CaptureSettings, device_id: str, sample_rate_hz: int) -> None:
        self.settings = settings
        self.device_id = device_id
        self.sample_rate_hz = sample_rate_hz
        self.pending = settings.directory / PENDING_DIR
        self.written = 0
        self.dropped = 0
        self.removed = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(QUEUE_CAPTURES)
        self._thread = threading.Thread(target=self._run, name="kwsd-capture-writer", daemon=True)
        self._lock = threading.Lock()
        self._base = read_ledger(settings.directory)
        self._complete_from_ms = self._base.complete_from_ms
        #: Audio time of this run (ms), read from the writer thread; the recorder sets it.
        self.clock: Callable[[], int] = lambda: 0

    def listened_ms(self, audio_time_ms: int | None = None) -> int:
        """Listened time in this folder at this run's ``audio_time_ms`` (default: now)."""
        return self._base.listened_ms + (self.clock() if audio_time_ms is None else audio_time_ms)

    def ledger(self) -> Ledger:
        with self._lock:
            return Ledger(self.listened_ms(), self._complete_from_ms)

    def _incomplete_until(self, listened_ms: Any) -> None:
        """Captures before ``listened_ms`` are no longer all there (one was removed or lost)."""
        at = listened_ms if isinstance(listened_ms, int) else self.listened_ms()
        with self._lock:
            self._complete_from_ms = max(self._complete_from_ms, at)

    def start(self) -> CaptureWriter:
        self._thread.start()
        return self

    def submit(self, label: str, samples: npt.NDArray[np.int16], sidecar: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(_Job(label, samples, sidecar))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            self._incomplete_until(sidecar.get("listened_ms"))
            log.warning("capture: the writer is behind (slow disk?); a %s capture dropped", label)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (bounded wait), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"written": self.written, "dropped": self.dropped, "removed": self.removed}

    def _run(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=LEDGER_EVERY_S)
            except queue.Empty:
                self._write_ledger()
                continue
            if job is None:
                self._write_ledger()
                return
            try:
                path = self._write(job)
            except (OSError, KwsdError) as err:  # a full disk, a folder gone: the capture only
                with self._lock:
                    self.dropped += 1
                self._incomplete_until(job.sidecar.get("listened_ms"))
                log.error(
                    "capture: cannot write a %s capture in %s (%s); dropped", job.label, self.pending, err
                )
                continue
            with self._lock:
                self.written += 1
            log.info("capture: %s", path)
            try:
                self._enforce_bounds()
            except OSError as err:
                log.error("capture: cannot remove old captures in %s (%s)", self.pending, err)
            self._write_ledger()

    def _write_ledger(self) -> None:
        try:
            write_ledger(self.settings.directory, self.ledger())
        except OSError as err:
            log.error("capture: cannot update %s (%s)", self.settings.directory / LEDGER_NAME, err)

    def _write(self, job: _Job) -> Path:
        folder = self.pending / job.label
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = save_new(folder, self.device_id, job.samples, self.sample_rate_hz)
        side = path.with_suffix(".json")
        side_tmp = side.with_name(f".{side.name}.part")
        side_tmp.write_text(json.dumps(job.sidecar, indent=1) + "\n", encoding="utf-8")
        os.replace(side_tmp, side)
        return path

    def _enforce_bounds(self) -> None:
        wavs = sorted(self.pending.glob("*/*.wav"), key=_age)
        total = sum(p.stat().st_size for p in wavs)
        limit_bytes = self.settings.max_mb * 1024 * 1024
        while wavs and (len(wavs) > self.settings.max_files or total > limit_bytes):
            oldest = wavs.pop(0)
            total -= oldest.stat().st_size
            self._incomplete_until(listened_of(oldest.with_suffix(".json")))
            oldest.unlink()
            oldest.with_suffix(".json").unlink(missing_ok=True)
            with self._lock:
                self.removed += 1


class CaptureRecorder:
    """The listener thread's side: a ring of recent audio and scores, and captures waiting for
    their ``post_ms``. Listener thread only (it owns the pipeline's hooks)."""

    def __init__(
        self,
        settings: CaptureSettings,
        writer: CaptureWriter,
        labels: Sequence[str],
        *,
        sample_rate_hz: int,
        model: Mapping[str, str],
        detection: Mapping[str, Any],
        thresholds: Mapping[str, float],
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.labels = tuple(labels)
        self.rate = sample_rate_hz
        self.model = dict(model)
        self.detection = dict(detection)
        self.thresholds = dict(thresholds)
        writer.clock = self.audio_time_ms
        span_ms = settings.pre_ms + settings.post_ms
        self._ring = np.zeros(self.rate * (span_ms + 1000) // 1000, np.int16)
        self._seen = 0  # samples fed, ever
        self._scores: deque[tuple[int, list[float]]] = deque()
        self._due: list[tuple[int, str, str, float, dt.datetime]] = []  # (end ms, kind, label, score, when)
        self._keywords = [
            i for i, label in enumerate(self.labels) if label not in (SILENCE_LABEL, UNKNOWN_LABEL)
        ]
        #: label index -> (peak score, its time) of an excursion above near_miss_threshold.
        self._excursion: dict[int, tuple[float, int]] = {}

    def update(self, detection: Mapping[str, Any], thresholds: Mapping[str, float]) -> None:
        """New detection settings (a reload), for the sidecars from now on."""
        self.detection = dict(detection)
        self.thresholds = dict(thresholds)

    def audio_time_ms(self) -> int:
        return self._seen * 1000 // self.rate

    def feed(self, samples: npt.NDArray[np.int16]) -> None:
        """Every block the pipeline gets, in order; completes captures whose audio is in."""
        n = len(samples)
        size = len(self._ring)
        if n >= size:
            self._ring[:] = samples[-size:]
        else:
            start = self._seen % size
            first = min(n, size - start)
            self._ring[start : start + first] = samples[:first]
            self._ring[: n - first] = samples[first:]
        self._seen += n
        now_ms = self.audio_time_ms()
        while self._due and self._due[0][0] <= now_ms:
            self._complete(*self._due.pop(0))

    def scores(self, time_ms: int, averages: npt.NDArray[np.float64]) -> None:
        """Every window's smoothed scores: kept for the sidecars, and near-misses found."""
        self._scores.append((time_ms, [round(float(v), 4) for v in averages]))
        keep_from = time_ms - self.settings.pre_ms - self.settings.post_ms - 1000
        while self._scores and self._scores[0][0] < keep_from:
            self._scores.popleft()
        near = self.settings.near_miss_threshold
        if near is None:
            return
        for index in self._keywords:
            score = float(averages[index])
            label = self.labels[index]
            if score > near:
                peak = self._excursion.get(index)
                if peak is None or score > peak[0]:
                    self._excursion[index] = (score, time_ms)
            elif index in self._excursion:
                # Back below: a near-miss if it never reached the threshold (else it fired).
                peak_score, peak_ms = self._excursion.pop(index)
                if peak_score <= self.thresholds.get(label, 1.0):
                    self._schedule(peak_ms, "near_miss", label, peak_score, dt.datetime.now(dt.UTC))

    def finish(self) -> None:
        """kwsd is stopping: captures still waiting for their ``post_ms`` are handed to the writer
        with the audio there is (a shorter WAV), not lost."""
        while self._due:
            self._complete(*self._due.pop(0))

    def detected(
        self, label: str, score: float, audio_time_ms: int, when_utc: dt.datetime, *, kind: str = "detection"
    ) -> None:
        """A detection (``kind`` ``state_on`` for a state label turning on) at ``audio_time_ms``."""
        self._schedule(audio_time_ms, kind, label, score, when_utc)

    def _schedule(self, at_ms: int, kind: str, label: str, score: float, when: dt.datetime) -> None:
        self._due.append((at_ms + self.settings.post_ms, kind, label, score, when))
        self._due.sort(key=lambda due: due[0])

    def _complete(self, end_ms: int, kind: str, label: str, score: float, when: dt.datetime) -> None:
        at_ms = end_ms - self.settings.post_ms
        start_ms = max(0, at_ms - self.settings.pre_ms)
        first = start_ms * self.rate // 1000
        last = end_ms * self.rate // 1000
        size = len(self._ring)
        first = max(first, self._seen - size, 0)
        count = min(last, self._seen) - first
        if count <= 0:
            return
        index = (np.arange(first, first + count) % size).astype(np.int64)
        samples = self._ring[index].copy()
        sidecar = {
            "kind": kind,
            "label": label,
            "score": round(score, 5),
            "threshold": self.thresholds.get(label),
            "model": self.model,
            "detection": self.detection,
            "time": rfc3339(when),
            "audio_time_ms": at_ms,
            "first_sample_audio_time_ms": first * 1000 // self.rate,
            "listened_ms": self.writer.listened_ms(at_ms),
            "near_miss_threshold": self.settings.near_miss_threshold,
            "sample_rate_hz": self.rate,
            "labels": list(self.labels),
            "scores": [{"audio_time_ms": t, "scores": s} for t, s in self._scores if start_ms <= t <= end_ms],
        }
        self.writer.submit(label, samples, sidecar)


def listened_of(sidecar: Path) -> int | None:
    """A sidecar's ``listened_ms``; None when it cannot be read or has none."""
    try:
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("listened_ms")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _age(path: Path) -> tuple[float, int, str]:
    """Oldest first: by file time, then by number (two files of one coarse clock tick)."""
    number = path.stem.rpartition(NOHASH)[2]
    return path.stat().st_mtime, int(number) if number.isdigit() else -1, path.name
