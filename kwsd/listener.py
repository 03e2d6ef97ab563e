"""The listening loop: audio source -> pipeline -> publisher. Wiring only.

One listener thread owns the source's reading side, the pipeline and the publisher. The
source's own capture thread only queues blocks. Between blocks the loop also sends the
periodic stats message and applies a requested config reload (:meth:`Listener.request_reload`),
so neither needs a thread or a lock of its own.

Device faults: a device missing at start, one that fails, and one that stops delivering audio
for ``stall_timeout_ms`` (a mic unplugged, a driver wedged) are all handled the same way: the
source is closed and opened again by name with capped backoff, without restarting the process.
Audio time goes on counting only the audio heard, and the pipeline is reset at each reopen so
that no window straddles the gap. If an open or close itself hangs for ``hang_timeout_s`` (a
driver stuck in the kernel: no Python code can get it back), the process exits at once with
:data:`EXIT_DEVICE_HUNG` so that systemd restarts it.

systemd (:class:`kwsd.notify.SystemdNotifier`): READY once audio really flows; WATCHDOG only
after a processed block. So under systemd's watchdog a device missing for longer than
``WatchdogSec`` ends in a restart by systemd, which then waits for the device in the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from kwsd.detection import DetectionSettings
from kwsd.notify import SystemdNotifier
from kwsd.pipeline import MultiPipeline, Pipeline
from kwsd.publisher import EventStamper, HandoverPublisher, Publisher, ScoreSink, rfc3339
from kwsd.sources import AudioDeviceError, AudioSource

if TYPE_CHECKING:
    from kwsd.capture import CaptureRecorder

log = logging.getLogger(__name__)

#: How long one read waits for audio before the loop checks for a stop, a stall or a reload.
READ_TIMEOUT_S = 0.2
#: An open or close of the device that takes longer than this has hung.
HANG_TIMEOUT_S = 15.0
#: Exit status when the device hangs (EX_TEMPFAIL: a restart may well cure it).
EXIT_DEVICE_HUNG = 75

_T = TypeVar("_T")


@dataclass(frozen=True)
class Backoff:
    """Delays between reopen attempts: first_s, doubling, capped at max_s."""

    first_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, attempt: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** min(attempt, 16)))


@dataclass(frozen=True)
class Reload:
    """A config reload, as a value: what the listener applies between blocks. Whoever makes it
    (the daemon, from the config file) never touches the listener itself."""

    #: The detection settings, one per model in order (a single one for a single model).
    detection: DetectionSettings | tuple[DetectionSettings, ...]
    stats_interval_s: float
    #: Runs on a worker thread with the publisher in use: closes it and returns its successor
    #: (:class:`HandoverPublisher` keeps the detections made meanwhile, in order). None: the
    #: publisher stays.
    new_publisher: Callable[[Publisher], Publisher] | None = None
    #: When the publisher stays: runs on the listener thread with it (new thresholds to announce).
    keep_publisher: Callable[[Publisher], None] | None = None


class Listener:
    """Runs the loop until stopped. ``reloader`` (optional) is called on the listener thread
    after :meth:`request_reload` and returns the :class:`Reload` to apply, or None when the new
    config was rejected (it reports why itself). An exception from it is logged and the
    listener goes on as it was."""

    def __init__(
        self,
        open_source: Callable[[], AudioSource],
        pipeline: Pipeline | MultiPipeline,
        publisher: Publisher,
        stamper: EventStamper,
        *,
        stall_timeout_ms: int,
        backoff: Backoff | None = None,
        notifier: SystemdNotifier | None = None,
        stats_interval_s: float = 0,
        reloader: Callable[[], Reload | None] | None = None,
        hang_timeout_s: float = HANG_TIMEOUT_S,
        capture: CaptureRecorder | Sequence[CaptureRecorder] | None = None,
    ) -> None:
        self._open_source = open_source
        self.pipeline = pipeline
        self._publisher = publisher
        self._stamper = stamper
        self._stall_timeout_s = stall_timeout_ms / 1000
        self._backoff = backoff or Backoff()
        self._notifier = notifier or SystemdNotifier({})
        self.stats_interval_s = stats_interval_s
        self._reloader = reloader
        self._hang_timeout_s = hang_timeout_s
        #: One recorder per model, in the pipeline's model order (one writer behind them all).
        self._captures: tuple[CaptureRecorder, ...] = (
            () if capture is None else (capture,) if not isinstance(capture, Sequence) else tuple(capture)
        )
        names = pipeline.names if isinstance(pipeline, MultiPipeline) else ()
        if len(self._captures) > 1 and len(self._captures) != len(names):
            raise ValueError(f"{len(self._captures)} capture recorders for {len(names)} models")
        #: Which recorder keeps a detection's audio, by the detection's model (None: one model).
        self._capture_of: dict[str | None, CaptureRecorder] = (
            dict(zip(names, self._captures, strict=True))
            if len(self._captures) > 1
            else {None: self._captures[0]}
            if self._captures
            else {}
        )
        self._reload_requested = threading.Event()
        self.reopens = 0
        self.detections = 0
        self.reloads = 0
        # Capture counters of the sources closed so far (an open source adds its own).
        self._overflows_before = 0
        self._dropped_before = 0
        self._source: AudioSource | None = None
        self._last_block = -float("inf")  # monotonic time of the last block processed
        self._started = time.monotonic()
        self._stats_due = 0.0
        self._stats_mark = (0.0, 0)  # (listener thread CPU s, samples seen) at the last stats
        #: What already took the pipeline's smoothed scores (``kwsd run --scores``' display),
        #: and the capture's near-miss watch.
        if len(self._captures) > 1:
            # Each recorder takes its own model's smoothed scores, in its model's label order.
            assert isinstance(pipeline, MultiPipeline)
            for index, recorder in enumerate(self._captures):
                pipeline.set_model_hook(index, recorder.scores)
            self._shown_scores = pipeline.on_smoothed
        else:
            self._shown_scores = _both(
                pipeline.on_smoothed, self._captures[0].scores if self._captures else None
            )
        self._wire_scores()

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def request_reload(self) -> None:
        """Ask for the reloader to run between blocks. Safe from a signal handler."""
        self._reload_requested.set()

    def set_stats_interval(self, seconds: float) -> None:
        """Send stats every ``seconds`` from now on (0: none). Listener thread."""
        if seconds != self.stats_interval_s:
            self.stats_interval_s = seconds
            self._stats_due = time.monotonic() + seconds

    def run(self, stop: threading.Event) -> None:
        """Listen until ``stop`` is set, waiting for the device if it is not there."""
        self._started = time.monotonic()
        self._stats_mark = (time.thread_time(), self.pipeline.samples_seen)
        self._stats_due = self._started + self.stats_interval_s
        source: AudioSource | None = None
        attempt = 0
        next_open = self._started
        opened = False  # the device has been open before: the next open is a reopen
        heard = False  # any audio yet (a reopen after audio resets the pipeline)
        last_audio = self._started
        self._last_block = -float("inf")
        ready = False
        flowing = False  # audio has come from the source open now ("listening" is logged then)
        try:
            while not stop.is_set():
                self._between_blocks()
                now = time.monotonic()
                if source is None:
                    if now < next_open:
                        stop.wait(min(next_open - now, READ_TIMEOUT_S))
                        continue
                    source = self._open(attempt)
                    if source is None:
                        attempt += 1
                        next_open = time.monotonic() + self._backoff.delay_s(attempt - 1)
                        continue
                    if opened:
                        self.reopens += 1
                    if attempt:
                        log.info("audio device opened after %d attempt(s)", attempt + 1)
                    opened = True
                    if heard:
                        self.pipeline.reset()
                    flowing = False
                    attempt = 0
                    last_audio = time.monotonic()
                    continue
                try:
                    block = source.read(READ_TIMEOUT_S)
                except AudioDeviceError as err:
                    log.warning("audio device failed: %s; reopening", err)
                    self._close(source)
                    source, next_open = None, time.monotonic()
                    continue
                now = time.monotonic()
                if block is None:
                    if now - last_audio > self._stall_timeout_s:
                        log.warning("no audio for %.1f s; reopening the device", now - last_audio)
                        self._close(source)
                        source, next_open = None, now
                    continue
                last_audio = self._last_block = now
                heard = True
                if not flowing:
                    # Only now: an open device is not yet one that delivers audio.
                    log.info("listening: audio is flowing")
                    flowing = True
                if not ready:
                    # Ready once audio really flows, not merely when the device opened.
                    self._notifier.ready("listening")
                    ready = True
                for recorder in self._captures:
                    recorder.feed(block)  # a copy into its ring; the writer has its own thread
                for detection in self.pipeline.feed(block):
                    now_utc = dt.datetime.now(dt.UTC)
                    keeper = self._capture_of.get(detection.model)
                    if keeper is not None and (detection.state is None or detection.state.on):
                        # A sound that lasts is kept where it turned on (its off is no new sound).
                        keeper.detected(
                            detection.label,
                            detection.score,
                            detection.audio_time_ms,
                            now_utc,
                            kind="detection" if detection.state is None else "state_on",
                        )
                    event = self._stamper.stamp(
                        detection.label,
                        detection.score,
                        detection.audio_time_ms,
                        now_utc,
                        detection.state,
                        model=detection.model,
                    )
                    # In the log whatever the outputs, so `journalctl -u kwsd` shows what was heard.
                    log.info(
                        "heard %s%s%s (score %.3f) at %d ms audio time",
                        "" if detection.model is None else f"{detection.model}: ",
                        detection.label,
                        "" if detection.state is None else f" {'on' if detection.state.on else 'off'}",
                        detection.score,
                        detection.audio_time_ms,
                    )
                    self._publisher.publish(event)
                    self.detections += 1
                self._notifier.audio_processed()
        finally:
            self._notifier.stopping()
            if source is not None:
                self._close(source)
            self._publisher.close()
            for recorder in self._captures:
                recorder.finish()
            if self._captures:
                self._captures[0].writer.close()  # the one writer

    # --- between blocks ---------------------------------------------------------------------

    def _between_blocks(self) -> None:
        if isinstance(self._publisher, HandoverPublisher):
            settled = self._publisher.settled()
            if settled is None:
                # A reload is still replacing the publisher. The next reload waits for it
                # (however many SIGHUPs came meanwhile, one reload then reads the config as it
                # is now), and so does the stats message (it then covers the whole interval).
                return
            self._publisher = settled
            self._wire_scores()
        if self._reload_requested.is_set():
            self._reload_requested.clear()
            self._reload()
        if self.stats_interval_s > 0 and time.monotonic() >= self._stats_due:
            self._publisher.publish_stats(self.stats())
            self._stats_due = time.monotonic() + self.stats_interval_s

    def _reload(self) -> None:
        if self._reloader is None:
            log.warning("reload requested, but this listener has nothing to reload")
            return
        try:
            reload = self._reloader()
            if reload is None:
                return
            detection = reload.detection
            first = detection if isinstance(detection, DetectionSettings) else detection[0]
            if isinstance(self.pipeline, MultiPipeline):
                self.pipeline.set_detection(detection)
            else:
                self.pipeline.set_detection(first)
            each = (detection,) if isinstance(detection, DetectionSettings) else detection
            for recorder, settings in zip(self._captures, each, strict=False):
                thresholds = {label: settings.threshold_of(label) for label in recorder.labels}
                recorder.update(settings.to_dict(), thresholds)
        except Exception:
            log.exception("reload failed; going on with the settings as they were")
            return
        self.set_stats_interval(reload.stats_interval_s)
        if reload.new_publisher is not None:
            previous, build = self._publisher, reload.new_publisher
            self._publisher = HandoverPublisher(lambda: build(previous)).start()
            self._wire_scores()
        elif reload.keep_publisher is not None:
            reload.keep_publisher(self._publisher)
        self.reloads += 1

    def _wire_scores(self) -> None:
        """Hand the pipeline's smoothed scores to whoever takes them now: the display (if
        any) and the publisher (if it sends them); no hook at all when neither does."""
        self.pipeline.on_smoothed = _both(self._shown_scores, self._publisher.score_sink())

    def stats(self) -> dict[str, Any]:
        """The stats message: since start, and the real-time factor since the last message."""
        now = time.monotonic()
        cpu_s, samples = time.thread_time(), self.pipeline.samples_seen
        last_cpu_s, last_samples = self._stats_mark
        self._stats_mark = (cpu_s, samples)
        rate = self.pipeline.sample_rate_hz
        interval_audio_s = (samples - last_samples) / rate
        rtf = round((cpu_s - last_cpu_s) / interval_audio_s, 5) if interval_audio_s else None
        source = self._source
        stats: dict[str, Any] = {
            "time": rfc3339(dt.datetime.now(dt.UTC)),
            "boot_id": self._stamper.boot_id,
            "uptime_s": round(now - self._started, 1),
            # Audio arriving now (a device open but silent for over a second is not listening).
            "listening": source is not None and now - self._last_block < max(1.0, 2 * READ_TIMEOUT_S),
            "audio_s": round(samples / rate, 1),
            # Listener-thread CPU per second of audio processed since the last stats message.
            "realtime_factor": rtf,
            "detections": self.detections,
            "audio_overflows": self._overflows_before + _counter(source, "overflows"),
            "audio_dropped_blocks": self._dropped_before + _counter(source, "dropped_blocks"),
            "device_reopens": self.reopens,
            "reloads": self.reloads,
        }
        counters = self._publisher.counters()
        if counters:
            stats["mqtt"] = counters
        if self._captures:
            stats["captures"] = self._captures[0].writer.counters()
        if self.pipeline.gate is not None:
            # Windows since start, and those the audio gate kept from the interpreter.
            pipeline_stats = self.pipeline.stats
            stats["gate"] = {"windows": pipeline_stats.windows, "skipped": pipeline_stats.gate_skipped}
        return stats

    # --- the device -------------------------------------------------------------------------

    def _open(self, attempt: int) -> AudioSource | None:
        try:
            source = self._guarded("opening the audio device", self._open_source)
        except AudioDeviceError as err:
            if attempt == 0:
                log.warning("audio device not available: %s; retrying with backoff", err)
            else:
                log.info("audio device still not available (attempt %d): %s", attempt + 1, err)
            return None
        self._source = source
        return source

    def _close(self, source: AudioSource) -> None:
        self._source = None
        try:
            self._guarded("closing the audio device", source.close)
        except Exception:  # a device that vanished may fail to close; it is gone either way
            log.debug("closing the audio source failed", exc_info=True)
        self._overflows_before += _counter(source, "overflows")
        self._dropped_before += _counter(source, "dropped_blocks")

    def _guarded(self, what: str, action: Callable[[], _T]) -> _T:
        """``action()``, or the process exits with EXIT_DEVICE_HUNG if it has not returned in time."""

        def hung() -> None:
            log.critical(
                "%s has not returned in %g s: the driver is stuck; exiting (status %d) so that "
                "the service manager restarts kwsd",
                what,
                self._hang_timeout_s,
                EXIT_DEVICE_HUNG,
            )
            logging.shutdown()
            os._exit(EXIT_DEVICE_HUNG)  # the stuck thread cannot be joined; nothing else would end it

        timer = threading.Timer(self._hang_timeout_s, hung)
        timer.daemon = True
        timer.start()
        try:
            return action()
        finally:
            timer.cancel()


def _both(first: ScoreSink | None, second: ScoreSink | None) -> ScoreSink | None:
    """One hook for the pipeline's smoothed scores that calls both (None: neither wants them)."""
    if first is None or second is None:
        return first or second

    def both(time_ms: int, scores: npt.NDArray[np.float64]) -> None:
        first(time_ms, scores)
        second(time_ms, scores)

    return both


def _counter(source: AudioSource | None, name: str) -> int:
    """A capture counter of ``source`` (sources that do not count have none)."""
    return int(getattr(source, name, 0)) if source is not None else 0
