#!/usr/bin/env python3
"""kwsd's soak and latency benchmark: every figure is measured in this one run, on this machine.

    python tools/soak.py soak [--hours 24] [--restart-every-min 5] [--outage-s 30] [--json]
    python tools/soak.py latency [--passes 3] [--json]

Both use the demo model and the demo's own words: the 1 s clips that ``kwsd/demo/demo.txt``
places in ``kwsd/demo/demo.wav`` (10 keywords and 2 other words, spoken by real people).
A detection matches a word when its label is the word's and its window (which ends at the
detection's ``time_ms`` and spans the clip's frames) starts within 750 ms of the clip's
start: the reference's streaming score, as ``kwsd evaluate`` applies it.

1. ``soak`` (accelerated time). In this one process: :class:`kwsd.listener.Listener` with the
   demo's :class:`~kwsd.pipeline.Pipeline` (the settings ``kwsd run`` resolves), a real
   :class:`kwsd.mqtt.MqttPublisher` (disk spool on, in a temporary folder) to a real mosquitto
   on a free loopback port (:mod:`kwsd_tools.harness.broker`'s launcher), and a paho
   subscriber with a persistent session recording every detection.
   The audio source generates ``--hours`` of audio block by block as fast as the listener
   reads it (nothing is paced: that is the acceleration): the background is the demo's own
   noise (the stretches of demo.wav between its words, looped) and a demo clip replaces it
   every ``--gap-min-s``..``--gap-max-s`` simulated seconds, at a seeded random position.
   Every ``--restart-every-min`` simulated minutes the source (on the listener thread) stops
   mosquitto (SIGTERM: it saves its persistence file; every other stop waits for the block
   right after a detection was published, so that it races that detection's acknowledgement),
   waits until the publisher and the subscriber have seen the connection drop, feeds
   ``--outage-s`` simulated seconds with the broker down (detections then queue in memory and
   in the spool), starts mosquitto again on the same port and waits, in real time, until both
   clients are reconnected (paho's first reconnect comes 1 s after the drop: that second is
   most of a restart's real-time cost), then samples the process (``VmRSS`` and ``Threads``
   from /proc/self/status, the entries of /proc/self/fd; once more at the end of the audio).
   The listener does not run while the source waits for a reconnect, so no detection is
   published during a reconnect handshake. At the end every sequence number the publisher
   was handed must have reached the subscriber (QoS 1 redeliveries are counted and removed),
   with the label and audio time it was published with; every injected word is either
   matched by a received detection or listed as a model miss. Resident memory growth is measured from the
   first sample after ``--warmup-hours``; file descriptors and threads must be constant
   from then on. The harness keeps its own records in arrays allocated (and touched) at
   start, so its bookkeeping does not grow the RSS it measures.

2. ``latency`` (real time). The real daemon, ``python -m kwsd run -c CONFIG``, captures through
   PortAudio from an ALSA ``file`` PCM over a FIFO (``tools/kwsd_tools/harness/alsa.py``) and publishes to a
   test mosquitto; demo.wav (``--passes`` times over) is written into the FIFO in 20 ms
   chunks, each written when its *last* sample is due (start + (n+1) x 20 ms), as a
   microphone delivers a block, and the time each write returned is recorded (monotonic
   clock, this process). That is when a sample "went in": from then on the pipe, the ALSA
   plugin, PortAudio's buffers, the capture queue, the pipeline, the MQTT publish (spool
   fsync included), mosquitto and the subscriber are all inside the measured latency. The
   pipe's backlog (FIONREAD) is sampled before every write to show that the capture side
   keeps up. A subscriber in this process stamps each detection on arrival (same monotonic
   clock). The daemon's audio time starts at the first sample it captured; its offset from
   the payload is measured by running the same pipeline on the payload in this process and
   comparing detection times (expected 0).

   * word-end latency = arrival - write time of the chunk holding the word's last sample,
     for each detection that matches a word. A word's end is the end of the last 10 ms
     frame of its clip whose level is at least 10 dB above the file's median frame level
     (its noise floor); it is known to +-10 ms and lies after a trailing consonant's release.
   * decision delay = arrival - write time of the chunk holding the last sample of the
     window that fired (the detection's ``audio_time_ms``). Target: p95 <= the model's
     clip stride + 100 ms.

Exits 1 when a target is missed (and says which), 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from kwsd.audio import read_wav
from kwsd.bundle import Bundle, demo_bundle_path, demo_wav_path, read_bundle
from kwsd.config import default_config
from kwsd.detection import DetectionSettings, resolve_detection
from kwsd.frontend import FrontendSpec
from kwsd.listener import Listener
from kwsd.mqtt import MqttPublisher
from kwsd.pipeline import build_pipeline
from kwsd.publisher import DetectionEvent, EventStamper, ScoreSink
from kwsd.spool import DetectionSpool
from kwsd_tools.harness import alsa
from kwsd_tools.harness.broker import HOST, MosquittoBroker, mosquitto_available

log = logging.getLogger("soak")

Int16Array = npt.NDArray[np.int16]

TARGET_RSS_GROWTH_MB = 5.0
#: p95 of the decision delay must be within the clip stride plus this.
TARGET_DECISION_EXTRA_MS = 100.0
#: A detection's window must start this close to its word's clip start (the reference's rule).
MATCH_TOLERANCE_MS = 750.0
#: A word ends with its last 10 ms frame this far above the noise floor.
WORD_END_MARGIN_DB = 10.0
WORD_END_FRAME_MS = 10
#: Background taken from demo.wav keeps this far from any clip.
BACKGROUND_MARGIN_MS = 100
#: Longest real wait for both clients to reconnect after a broker restart.
RECONNECT_TIMEOUT_S = 60.0
#: Longest real wait for the last detections to reach the subscriber at the end.
DRAIN_TIMEOUT_S = 30.0
DEVICE_ID = "soak"
PCM_NAME = "kwsdsoak"
LATENCY_BLOCK_MS = 20
#: A progress line on stderr every this many simulated hours.
PROGRESS_EVERY_H = 1


# --------------------------------------------------------------------------------------
# The demo's words and background.


@dataclass(frozen=True)
class DemoWord:
    """One word of demo.wav: its label, its 1 s clip's start (demo.txt) and where it ends."""

    label: str
    start_sample: int
    #: End of the spoken word (exclusive), by level; see the module notes.
    end_sample: int


def demo_words(samples: Int16Array, spec: FrontendSpec) -> list[DemoWord]:
    """The words demo.txt places in ``samples`` (demo.wav at the model's rate), with their ends."""
    rate = spec.sample_rate_hz
    frame = rate * WORD_END_FRAME_MS // 1000
    usable = len(samples) // frame * frame
    frames = samples[:usable].astype(np.float64).reshape(-1, frame) / 32768.0
    level_db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = level_db >= np.median(level_db) + WORD_END_MARGIN_DB
    words = []
    for line in demo_wav_path().with_suffix(".txt").read_text().splitlines():
        if not line.strip():
            continue
        label, ms = (part.strip() for part in line.split(","))
        start = round(float(ms) * rate / 1000)
        first, last = start // frame, min(len(loud), (start + spec.clip_samples) // frame)
        above = np.flatnonzero(loud[first:last])
        if not len(above):
            raise SystemExit(f"demo.txt: no word found in the clip of {label!r} at {ms} ms")
        words.append(DemoWord(label, start, (first + int(above[-1]) + 1) * frame))
    return words


def demo_background(samples: Int16Array, words: list[DemoWord], spec: FrontendSpec) -> Int16Array:
    """demo.wav without its clips: the stretches between them, joined (the demo's noise)."""
    margin = spec.sample_rate_hz * BACKGROUND_MARGIN_MS // 1000
    pieces, at = [], 0
    for word in [*words, DemoWord("", len(samples) + margin, 0)]:
        end = word.start_sample - margin
        if end > at:
            pieces.append(samples[at:end])
        at = word.start_sample + spec.clip_samples + margin
    return np.concatenate(pieces)


# --------------------------------------------------------------------------------------
# Matching detections to words (both parts).


@dataclass(frozen=True)
class Matching:
    """Detections against injected words: each word matched once, every detection classified."""

    #: Per word: index of the detection that matched it, or -1 (a miss).
    word_detection: npt.NDArray[np.int64]
    #: Per detection: index of the word it matched, or -1.
    detection_word: npt.NDArray[np.int64]
    #: Detections near a word with another label.
    wrong_label: int
    #: Detections of a word's label after the word was already matched.
    repeats: int
    #: Detections near no word.
    background: int

    @property
    def matched(self) -> int:
        return int(np.count_nonzero(self.word_detection >= 0))

    @property
    def missed(self) -> npt.NDArray[np.int64]:
        return np.flatnonzero(self.word_detection < 0)

    @property
    def false_detections(self) -> int:
        return self.wrong_label + self.repeats + self.background


def match_detections(
    word_starts_ms: npt.NDArray[np.float64],
    word_labels: npt.NDArray[np.int64],
    detection_times_ms: npt.NDArray[np.int64],
    detection_labels: npt.NDArray[np.int64],
    spec: FrontendSpec,
) -> Matching:
    """Match detections (time order) to words (start order); labels as indexes into the model's."""
    span_ms = spec.span_samples * 1000 / spec.sample_rate_hz
    word_detection = np.full(len(word_starts_ms), -1, np.int64)
    detection_word = np.full(len(detection_times_ms), -1, np.int64)
    wrong = repeats = background = 0
    for d, (time_ms, label) in enumerate(zip(detection_times_ms, detection_labels, strict=True)):
        window_start = float(time_ms) - span_ms
        i = int(np.searchsorted(word_starts_ms, window_start))
        near = [j for j in (i - 1, i) if 0 <= j < len(word_starts_ms)]
        w = min(near, key=lambda j: abs(word_starts_ms[j] - window_start), default=-1)
        if w < 0 or abs(word_starts_ms[w] - window_start) > MATCH_TOLERANCE_MS:
            background += 1
        elif word_labels[w] != label:
            wrong += 1
        elif word_detection[w] >= 0:
            repeats += 1
        else:
            word_detection[w] = d
            detection_word[d] = w
    return Matching(word_detection, detection_word, wrong, repeats, background)


# --------------------------------------------------------------------------------------
# Process resources and the subscriber.


def process_sample() -> tuple[int, int, int]:
    """(VmRSS in kB, open file descriptors, threads) of this process, from /proc."""
    rss_kb = threads = -1
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss_kb, len(os.listdir("/proc/self/fd")), threads


class DetectionSubscriber:
    """A QoS 1 paho subscriber to one detection topic that records each sequence number's
    first arrival (monotonic and wall clock), its label, audio time and copy count.

    Records live in arrays indexed by sequence number, allocated and touched at construction
    (``capacity`` sequence numbers), so a long run does not grow this process's memory.
    Messages from another ``boot_id`` than the first seen, unparsable ones and sequence
    numbers past ``capacity`` are only counted (:attr:`foreign`). Also subscribes to the
    status and stats topics next to it: keeps the last status, counts the stats messages.
    Callbacks run on paho's thread; read the results once the traffic is over.
    """

    def __init__(
        self, port: int, detection_topic: str, labels: tuple[str, ...], capacity: int, *, client_id: str
    ) -> None:
        self.topic = detection_topic
        self.status_topic = detection_topic.rsplit("/", 1)[0] + "/status"
        self.stats_topic = detection_topic.rsplit("/", 1)[0] + "/stats"
        self._labels = {label: i for i, label in enumerate(labels)}
        size = capacity + 1  # sequence numbers start at 1
        self.copies = np.full(size, 0, np.int32)
        self.label = np.full(size, -1, np.int64)
        self.audio_time_ms = np.full(size, -1, np.int64)
        self.arrival_s = np.full(size, np.nan, np.float64)
        self.arrival_wall_s = np.full(size, np.nan, np.float64)
        self.stamp_wall_s = np.full(size, np.nan, np.float64)
        self.boot_id: str | None = None
        self.foreign = 0
        #: First arrivals of a sequence number lower than one already received.
        self.out_of_order = 0
        self.last_status: str | None = None
        self.stats_received = 0
        self._max_sequence = 0
        self._cond = threading.Condition()
        self.sessions = 0
        self.subscribed = False
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(HOST, port, keepalive=10)
        self._client.loop_start()

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Until ``predicate()`` holds (checked on every message and every 20 ms: it may also
        read another client's state); RuntimeError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
                self._cond.wait(min(remaining, 0.02))

    def received(self, sequences: int) -> int:
        """How many of the sequence numbers 1..``sequences`` arrived."""
        return int(np.count_nonzero(self.copies[1 : sequences + 1]))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            return
        with self._cond:
            self.sessions += 1
            self._cond.notify_all()
        client.subscribe([(self.topic, 1), (self.status_topic, 1), (self.stats_topic, 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.subscribed = True
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self.subscribed = False
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        now, wall = time.monotonic(), time.time()
        with self._cond:
            if message.topic == self.status_topic:
                self.last_status = message.payload.decode(errors="replace")
                self._cond.notify_all()
                return
            if message.topic == self.stats_topic:
                # Live ones only: the retained copy comes again with every resubscription.
                self.stats_received += not message.retain
                return
            try:
                event = json.loads(message.payload)
                sequence = int(event["sequence"])
                boot_id = str(event["boot_id"])
                label = self._labels[event["label"]]
                audio_time_ms = int(event["audio_time_ms"])
                stamp = dt.datetime.fromisoformat(event["time"].replace("Z", "+00:00")).timestamp()
            except (ValueError, KeyError, TypeError):
                self.foreign += 1
                return
            self.boot_id = self.boot_id or boot_id
            if boot_id != self.boot_id or not 0 < sequence < len(self.copies):
                self.foreign += 1
                return
            if self.copies[sequence] == 0:
                if sequence < self._max_sequence:
                    self.out_of_order += 1
                self._max_sequence = max(self._max_sequence, sequence)
                self.label[sequence] = label
                self.audio_time_ms[sequence] = audio_time_ms
                self.arrival_s[sequence] = now
                self.arrival_wall_s[sequence] = wall
                self.stamp_wall_s[sequence] = stamp
            self.copies[sequence] += 1
            self._cond.notify_all()


# --------------------------------------------------------------------------------------
# Part 1: the soak.


class RecordingPublisher:
    """A :class:`kwsd.publisher.Publisher` that records what the listener publishes (label,
    audio time, and whether the MQTT publisher was connected), then hands it on; stats
    messages are counted and handed on.

    Records are arrays indexed by sequence number, allocated and touched at construction.
    """

    def __init__(self, inner: MqttPublisher, labels: tuple[str, ...], capacity: int) -> None:
        self.inner = inner
        self._labels = {label: i for i, label in enumerate(labels)}
        self.label = np.full(capacity + 1, -1, np.int64)
        self.audio_time_ms = np.full(capacity + 1, -1, np.int64)
        self.count = 0
        self.while_disconnected = 0
        self.overflow = 0
        self.stats_published = 0

    def publish(self, event: DetectionEvent) -> None:
        if event.sequence < len(self.label):
            self.label[event.sequence] = self._labels[event.label]
            self.audio_time_ms[event.sequence] = event.audio_time_ms
        else:
            self.overflow += 1
        self.count = max(self.count, event.sequence)
        if not self.inner.connected:
            self.while_disconnected += 1
        self.inner.publish(event)

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        self.stats_published += 1
        self.inner.publish_stats(stats)

    def counters(self) -> dict[str, Any]:
        return self.inner.counters()

    def score_sink(self) -> ScoreSink | None:
        return self.inner.score_sink()

    def close(self) -> None:
        self.inner.close()


class CountingLogHandler(logging.Handler):
    """Counts WARNING and ERROR records (constant memory), so a long run need not print them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings = 0
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        else:
            self.warnings += 1


@dataclass
class RestartLog:
    """Process samples (one after each restart, one at the end) and restart costs; arrays sized up front."""

    capacity: int

    def __post_init__(self) -> None:
        self.sim_s = np.full(self.capacity, np.nan, np.float64)
        self.rss_kb = np.full(self.capacity, -1, np.int64)
        self.fds = np.full(self.capacity, -1, np.int64)
        self.threads = np.full(self.capacity, -1, np.int64)
        self.restart_real_s = np.full(self.capacity, np.nan, np.float64)
        self.samples = 0
        self.restarts = 0

    def sample(self, sim_s: float) -> None:
        if self.samples < self.capacity:
            self.rss_kb[self.samples], self.fds[self.samples], self.threads[self.samples] = process_sample()
            self.sim_s[self.samples] = sim_s
            self.samples += 1


class BrokerCycler:
    """Stops and restarts the broker at simulated times; called by the source on the listener thread.

    Every other restart is due at its time; the others wait for the first block after the
    listener published a detection, so that the stop races that detection's PUBLISH and
    PUBACK (QoS 1 redelivery, the spool). The process is sampled once both clients are back.
    """

    def __init__(
        self,
        broker: MosquittoBroker,
        publisher: MqttPublisher,
        subscriber: DetectionSubscriber,
        restarts: RestartLog,
        *,
        published: Callable[[], int],
        sample_rate_hz: int,
        period_samples: int,
        outage_samples: int,
        last_restart_before: int,
    ) -> None:
        self._broker = broker
        self._publisher = publisher
        self._subscriber = subscriber
        self.log = restarts
        self._published = published
        self._last_published = 0
        self._rate = sample_rate_hz
        self._period = period_samples
        self._outage = outage_samples
        self._last_before = last_restart_before
        self._next_down = period_samples
        self._up_at: int | None = None
        self._down_since = 0.0
        self.waiting_s = 0.0
        #: Stops made while the publisher had a detection not yet acknowledged.
        self.stops_in_flight = 0

    def before_block(self, position: int) -> None:
        """Called before the block that starts at sample ``position`` is made."""
        published = self._published()
        just_published, self._last_published = published != self._last_published, published
        if self._up_at is not None and position >= self._up_at:
            self._bring_up(position)
        elif (
            self._up_at is None
            and self._next_down <= position < self._last_before
            and (self.log.restarts % 2 == 0 or just_published)
        ):
            self._take_down(position)

    def _take_down(self, position: int) -> None:
        self._down_since = time.monotonic()
        if self._publisher.pending_events:
            self.stops_in_flight += 1
        self._broker.stop()
        # Both clients must have seen the drop: the outage's detections are then made while
        # the publisher knows it is disconnected, and a reconnect below is a new one.
        deadline = time.monotonic() + RECONNECT_TIMEOUT_S
        while self._publisher.connected or self._subscriber.subscribed:
            if time.monotonic() > deadline:
                raise RuntimeError("the clients did not notice the broker stopping")
            time.sleep(0.002)
        self._up_at = position + self._outage
        self._next_down += self._period

    def _bring_up(self, position: int) -> None:
        self._broker.start()
        self.log.restarts += 1
        restarts = self.log.restarts
        deadline = time.monotonic() + RECONNECT_TIMEOUT_S
        sub = self._subscriber
        while not (
            self._publisher.reconnects >= restarts
            and self._publisher.connected
            and sub.sessions >= restarts + 1
            and sub.subscribed
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the clients did not reconnect within {RECONNECT_TIMEOUT_S:.0f} s")
            time.sleep(0.002)
        spent = time.monotonic() - self._down_since
        self.log.restart_real_s[restarts - 1] = spent
        self.waiting_s += spent
        self._up_at = None
        self.log.sample(position / self._rate)


class SoakSource:
    """An :class:`kwsd.sources.AudioSource` that makes the soak's audio block by block.

    Background: ``background`` looped. Words: ``clips[word_clips[i]]`` replaces the background
    from ``word_starts[i]``. After ``total_samples`` it samples the process once more, sets
    ``stop`` and returns None. Nothing waits: the listener gets the next block at once.
    """

    def __init__(
        self,
        *,
        sample_rate_hz: int,
        total_samples: int,
        block_samples: int,
        background: Int16Array,
        clips: list[Int16Array],
        word_starts: npt.NDArray[np.int64],
        word_clips: npt.NDArray[np.int64],
        cycler: BrokerCycler,
        stop: threading.Event,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self._total = total_samples
        self._block = block_samples
        # The loop twice over (plus a block), so any block is one contiguous slice.
        self._loop_len = len(background)
        self._background = np.concatenate([background, background[:block_samples]])
        self._clips = clips
        self._starts = word_starts
        self._word_clips = word_clips
        self._word = 0
        self._cycler = cycler
        self._stop = stop
        self.position = 0
        self.opened = 0
        self._started_s = time.monotonic()
        self._next_progress = PROGRESS_EVERY_H * 3600 * sample_rate_hz

    def read(self, timeout_s: float) -> Int16Array | None:
        if self.position >= self._total:
            if not self._stop.is_set():
                self._cycler.log.sample(self.position / self.sample_rate_hz)
                self._stop.set()
            return None
        self._cycler.before_block(self.position)
        if self.position >= self._next_progress:
            self._next_progress += PROGRESS_EVERY_H * 3600 * self.sample_rate_hz
            hours, of_hours = (x / self.sample_rate_hz / 3600 for x in (self.position, self._total))
            print(
                f"soak: {hours:.0f} of {of_hours:g} simulated h, {time.monotonic() - self._started_s:.0f} s "
                f"real, {self._cycler.log.restarts} broker restarts",
                file=sys.stderr,
                flush=True,
            )
        start = self.position
        n = min(self._block, self._total - start)
        at = start % self._loop_len
        block = self._background[at : at + n].copy()
        end = start + n
        while self._word < len(self._starts) and self._starts[self._word] < end:
            w_start = int(self._starts[self._word])
            clip = self._clips[int(self._word_clips[self._word])]
            lo, hi = max(start, w_start), min(end, w_start + len(clip))
            if lo < hi:
                block[lo - start : hi - start] = clip[lo - w_start : hi - w_start]
            if w_start + len(clip) > end:
                break  # this word goes on into the next block
            self._word += 1
        self.position = end
        return block

    def close(self) -> None:
        pass


def word_schedule(
    rng: np.random.Generator,
    *,
    total_samples: int,
    clip_samples: int,
    clip_count: int,
    rate_hz: int,
    gap_min_s: float,
    gap_max_s: float,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start samples and clip indexes of the injected words (start to start: gap_min..gap_max s)."""
    starts, clips = [], []
    at = int(rng.uniform(1.0, gap_max_s) * rate_hz)
    while at + clip_samples <= total_samples:
        starts.append(at)
        clips.append(int(rng.integers(clip_count)))
        at += int(rng.uniform(gap_min_s, gap_max_s) * rate_hz)
    return np.array(starts, np.int64), np.array(clips, np.int64)


def run_soak(args: argparse.Namespace) -> int:
    if not mosquitto_available():
        raise SystemExit("soak: mosquitto is not installed (Debian: mosquitto)")
    if args.gap_min_s < 2 or args.gap_max_s < args.gap_min_s:
        raise SystemExit("soak: expected 2 <= --gap-min-s <= --gap-max-s")
    # kwsd's warnings (a lost connection at every restart) are counted; printed only with -v.
    counter = CountingLogHandler()
    root = logging.getLogger()
    root.setLevel(logging.INFO if args.verbose else logging.WARNING)
    root.addHandler(counter)
    if args.verbose:
        printer = logging.StreamHandler()
        printer.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(printer)

    bundle, settings, wav = demo_run()
    spec = bundle.frontend
    rate = spec.sample_rate_hz
    clip_stride_ms = settings.clip_stride_ms
    words = demo_words(wav, spec)
    clips = [wav[w.start_sample : w.start_sample + spec.clip_samples].copy() for w in words]
    clip_labels = np.array([bundle.labels.index(w.label) for w in words], np.int64)
    background = demo_background(wav, words, spec)

    total = int(args.hours * 3600 * rate)
    block = rate * args.block_ms // 1000
    starts, word_clips = word_schedule(
        np.random.default_rng(args.seed),
        total_samples=total,
        clip_samples=spec.clip_samples,
        clip_count=len(clips),
        rate_hz=rate,
        gap_min_s=args.gap_min_s,
        gap_max_s=args.gap_max_s,
    )
    period = int(args.restart_every_min * 60 * rate)
    outage = int(args.outage_s * rate)
    # Room for three detections per word and one per simulated minute on top.
    capacity = 3 * len(starts) + int(args.hours * 60) + 100

    with tempfile.TemporaryDirectory(prefix="kwsd-soak-") as tmp:
        workdir = Path(tmp)
        broker = MosquittoBroker(workdir / "broker")
        broker.start()
        mqtt_config = dataclasses.replace(
            default_config().mqtt,
            host=HOST,
            port=broker.port,
            device_id=DEVICE_ID,
            spool_dir=workdir / "spool",
        )
        subscriber: DetectionSubscriber | None = None
        try:
            inner = MqttPublisher(mqtt_config, DEVICE_ID)
            subscriber = DetectionSubscriber(
                broker.port, inner.detection_topic, bundle.labels, capacity, client_id="kwsd-soak-subscriber"
            )
            subscriber.wait(lambda: subscriber.subscribed and inner.connected, 10, "both clients to connect")
            publisher = RecordingPublisher(inner, bundle.labels, capacity)
            restarts = RestartLog(total // period + 4)
            cycler = BrokerCycler(
                broker,
                inner,
                subscriber,
                restarts,
                published=lambda: publisher.count,
                sample_rate_hz=rate,
                period_samples=period,
                outage_samples=outage,
                last_restart_before=total - outage - 10 * rate,
            )
            stop = threading.Event()
            source = SoakSource(
                sample_rate_hz=rate,
                total_samples=total,
                block_samples=block,
                background=background,
                clips=clips,
                word_starts=starts,
                word_clips=word_clips,
                cycler=cycler,
                stop=stop,
            )

            def open_source() -> SoakSource:
                source.opened += 1
                if source.opened > 1:
                    raise RuntimeError("the listener reopened the soak source (it never stalls)")
                return source

            pipeline = build_pipeline(bundle, settings)
            stamper = EventStamper(bundle.name, bundle.sha256)
            listener = Listener(
                open_source,
                pipeline,
                publisher,
                stamper,
                stall_timeout_ms=10_000,
                stats_interval_s=args.stats_interval_s,
            )
            cpu0, t0 = time.process_time(), time.monotonic()
            listener.run(stop)  # returns after the source set stop; closes the publisher
            real_s = time.monotonic() - t0
            cpu_s = time.process_time() - cpu0
            published = publisher.count
            subscriber.wait(
                lambda: subscriber.received(published) == published,
                DRAIN_TIMEOUT_S,
                f"all {published} detections at the subscriber",
            )
            subscriber.wait(lambda: subscriber.last_status == "offline", 5, "the offline status")
            time.sleep(0.5)  # late duplicates, if any, are counted too
        finally:
            if subscriber is not None:
                subscriber.close()
            broker.stop()
        spool = DetectionSpool(workdir / "spool", mqtt_config.spool_max)
        left_in_spool = len(spool)
        spool.close()

    run = SoakRun(
        real_s=real_s,
        cpu_s=cpu_s,
        total_samples=total,
        samples_seen=pipeline.samples_seen,
        listener_detections=listener.detections,
        publisher=publisher,
        inner=inner,
        subscriber=subscriber,
        restarts=restarts,
        cycler=cycler,
        starts=starts,
        word_clips=word_clips,
        clip_labels=clip_labels,
        left_in_spool=left_in_spool,
        log_counter=counter,
        clip_stride_ms=clip_stride_ms,
        block_ms=args.block_ms,
    )
    figures, failures = soak_report(args, spec, bundle, run)
    if args.json:
        print(json.dumps(figures))
    return 1 if failures else 0


@dataclass
class SoakRun:
    """What one soak run measured (the input of the report)."""

    real_s: float
    cpu_s: float
    total_samples: int
    samples_seen: int
    listener_detections: int
    publisher: RecordingPublisher
    inner: MqttPublisher
    subscriber: DetectionSubscriber
    restarts: RestartLog
    cycler: BrokerCycler
    starts: npt.NDArray[np.int64]
    word_clips: npt.NDArray[np.int64]
    clip_labels: npt.NDArray[np.int64]
    left_in_spool: int
    log_counter: CountingLogHandler
    clip_stride_ms: int
    block_ms: int


def soak_report(
    args: argparse.Namespace, spec: FrontendSpec, bundle: Bundle, run: SoakRun
) -> tuple[dict[str, Any], list[str]]:
    """Print the soak's report; returns its figures and the targets missed."""
    rate = spec.sample_rate_hz
    sim_s = run.total_samples / rate
    pub, sub, cycles = run.publisher, run.subscriber, run.restarts
    failures: list[str] = []

    # Resources after warm-up.
    n = cycles.samples
    after = np.flatnonzero(cycles.sim_s[:n] >= args.warmup_hours * 3600)
    if len(after) < 2:
        failures.append(
            "fewer than two process samples after warm-up (raise --hours or lower --warmup-hours)"
        )
        after = np.arange(max(0, n - 2), n)
    rss = cycles.rss_kb[after] / 1024
    fds, threads = cycles.fds[after], cycles.threads[after]
    rss_growth = float(rss[-1] - rss[0]) if len(rss) else float("nan")
    rss_max_growth = float(rss.max() - rss[0]) if len(rss) else float("nan")
    if not rss_growth < TARGET_RSS_GROWTH_MB:
        failures.append(f"RSS grew {rss_growth:.2f} MB after warm-up (target < {TARGET_RSS_GROWTH_MB} MB)")
    if len(fds) and fds.min() != fds.max():
        failures.append(f"open file descriptors varied after warm-up: {fds.min()}..{fds.max()}")
    if len(threads) and threads.min() != threads.max():
        failures.append(f"threads varied after warm-up: {threads.min()}..{threads.max()}")

    # Delivery: every sequence number the listener published, once, as published.
    published = pub.count
    seqs = np.arange(1, published + 1)
    received_mask = sub.copies[seqs] > 0
    lost = seqs[~received_mask]
    duplicates = int(np.sum(np.maximum(sub.copies[seqs] - 1, 0)))
    altered = int(
        np.count_nonzero(
            received_mask
            & ((sub.label[seqs] != pub.label[seqs]) | (sub.audio_time_ms[seqs] != pub.audio_time_ms[seqs]))
        )
    )
    beyond = int(np.count_nonzero(sub.copies[published + 1 :]))
    dropped = run.inner.dropped_events
    if run.listener_detections != published:
        failures.append(f"the listener made {run.listener_detections} detections, {published} were published")
    for bad, text in (
        (len(lost), "detections lost"),
        (altered, "detections arrived altered"),
        (beyond, "sequence numbers arrived that were never published"),
        (dropped, "detections dropped by the MQTT publisher"),
        (run.left_in_spool, "detections left in the spool"),
        (sub.foreign, "foreign or unreadable messages at the subscriber"),
        (pub.overflow, "detections past the harness's record capacity"),
        (run.log_counter.errors, "errors logged"),
    ):
        if bad:
            failures.append(f"{bad} {text}")
    if run.samples_seen != run.total_samples:
        failures.append(f"the pipeline saw {run.samples_seen} samples of {run.total_samples} generated")

    # Words against received detections (deduplicated, by sequence number = time order).
    got = seqs[received_mask]
    word_labels = run.clip_labels[run.word_clips]
    matching = match_detections(
        run.starts * 1000 / rate, word_labels, sub.audio_time_ms[got], sub.label[got], spec
    )
    unknown = bundle.labels.index("_unknown_")
    keywords = int(np.count_nonzero(word_labels != unknown))
    missed = matching.missed

    restart_s = cycles.restart_real_s[: cycles.restarts]
    machine = f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    print(
        f"kwsd soak: {bundle.name} model ({spec.describe()}), clip stride {run.clip_stride_ms} ms, "
        f"{run.block_ms} ms blocks, seed {args.seed}, {machine}"
    )
    print(
        f"time: {sim_s / 3600:.2f} simulated hours in {run.real_s:.1f} s real = {sim_s / run.real_s:.0f} x "
        f"real time ({sim_s / max(run.real_s - run.cycler.waiting_s, 1e-9):.0f} x without the restarts' "
        f"real time); process CPU {run.cpu_s:.1f} s = {run.cpu_s * 1000 / sim_s:.2f} ms per audio second"
    )
    if cycles.restarts:
        print(
            f"broker: restarted {cycles.restarts} times (every {args.restart_every_min:g} simulated min, "
            f"{args.outage_s:g} simulated s down each); real time per restart (stop to both clients "
            f"reconnected) median {np.median(restart_s):.2f} s, max {restart_s.max():.2f} s, "
            f"{restart_s.sum():.0f} s in all; publisher reconnects {run.inner.reconnects}; "
            f"{run.cycler.stops_in_flight} stops caught a detection unacknowledged"
        )
    else:
        print("broker: never restarted (the run is shorter than --restart-every-min)")
        failures.append("no broker restart")
    print(
        f"memory: RSS {rss[0]:.1f} MB at the first sample after warm-up ({args.warmup_hours:g} simulated h, "
        f"{len(after)} samples from then), {rss[-1]:.1f} MB at the end: {rss_growth:+.2f} MB "
        f"(largest {rss_max_growth:+.2f} MB) (target < {TARGET_RSS_GROWTH_MB:g} MB) "
        f"{'OK' if rss_growth < TARGET_RSS_GROWTH_MB else 'OVER'}"
    )
    print(
        f"descriptors: {fds.min()}..{fds.max()} {'constant OK' if fds.min() == fds.max() else 'VARIED'}; "
        f"threads: {threads.min()}..{threads.max()} "
        f"{'constant OK' if threads.min() == threads.max() else 'VARIED'} (after warm-up); "
        f"first sample: RSS {cycles.rss_kb[0] / 1024:.1f} MB, {cycles.fds[0]} fds, "
        f"{cycles.threads[0]} threads"
    )
    print(
        f"audio: {run.total_samples} samples generated, {run.samples_seen} seen by the pipeline "
        f"{'OK' if run.samples_seen == run.total_samples else 'MISMATCH'}"
    )
    print(
        f"words: {len(run.starts)} injected ({keywords} keywords, {len(run.starts) - keywords} "
        f"non-keyword words, expected as _unknown_): {matching.matched} matched by a received "
        f"detection, {len(missed)} missed by the model; accounted for: "
        f"{matching.matched + len(missed)} of {len(run.starts)}"
    )
    print(
        f"detections: {run.listener_detections} made by the pipeline ({pub.while_disconnected} while the "
        f"broker was away): {matching.matched} matched, {matching.false_detections} false "
        f"({matching.wrong_label} with the wrong label on a word, {matching.repeats} repeats of a "
        f"matched word, {matching.background} on background only)"
    )
    print(
        f"mqtt: {published} published, {int(received_mask.sum())} received ({duplicates} QoS 1 "
        f"duplicates removed, {sub.out_of_order} first arrivals out of order), {len(lost)} lost, "
        f"{altered} altered, {dropped} dropped by the publisher, {run.left_in_spool} left in the spool; "
        f"stats messages: {pub.stats_published} sent by the listener, {sub.stats_received} received "
        f"(QoS 0, skipped while the broker is away); "
        f"kwsd logged {run.log_counter.warnings} warnings, {run.log_counter.errors} errors"
    )
    if len(lost):
        print(f"lost sequence numbers: {' '.join(str(s) for s in lost[:50])}")
    miss_list = [
        {
            "sim_time": _hms(run.starts[w] / rate),
            "label": bundle.labels[word_labels[w]],
            "clip": int(run.word_clips[w]),
        }
        for w in missed
    ]
    if len(missed):
        per_clip = np.bincount(run.word_clips[missed], minlength=len(run.clip_labels))
        of_clip = np.bincount(run.word_clips, minlength=len(run.clip_labels))
        print(
            "misses per demo clip (clip: label missed/injected): "
            + ", ".join(
                f"{c}: {bundle.labels[run.clip_labels[c]]} {per_clip[c]}/{of_clip[c]}"
                for c in range(len(run.clip_labels))
            )
        )
        print("misses (simulated time label/clip):")
        texts = [f"{m['sim_time']} {m['label']}/{m['clip']}" for m in miss_list]
        for i in range(0, len(texts), 6):
            print("   " + "   ".join(texts[i : i + 6]))
    print("result: " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    figures = {
        "simulated_hours": round(sim_s / 3600, 3),
        "real_s": round(run.real_s, 1),
        "speedup": round(sim_s / run.real_s, 1),
        "speedup_without_restarts": round(sim_s / max(run.real_s - run.cycler.waiting_s, 1e-9), 1),
        "cpu_ms_per_audio_s": round(run.cpu_s * 1000 / sim_s, 3),
        "broker_restarts": cycles.restarts,
        "publisher_reconnects": run.inner.reconnects,
        "stops_in_flight": run.cycler.stops_in_flight,
        "restart_real_s_median": round(float(np.median(restart_s)), 3) if len(restart_s) else None,
        "restart_real_s_total": round(float(restart_s.sum()), 1),
        "rss_after_warmup_mb": round(float(rss[0]), 2),
        "rss_end_mb": round(float(rss[-1]), 2),
        "rss_growth_mb": round(rss_growth, 3),
        "rss_max_growth_mb": round(rss_max_growth, 3),
        "fds_min": int(fds.min()),
        "fds_max": int(fds.max()),
        "threads_min": int(threads.min()),
        "threads_max": int(threads.max()),
        "samples_after_warmup": len(after),
        "samples_generated": run.total_samples,
        "samples_seen": run.samples_seen,
        "words_injected": len(run.starts),
        "keywords_injected": keywords,
        "words_matched": matching.matched,
        "words_missed": len(missed),
        "detections": run.listener_detections,
        "detections_while_disconnected": pub.while_disconnected,
        "false_detections": matching.false_detections,
        "false_wrong_label": matching.wrong_label,
        "false_repeats": matching.repeats,
        "false_background": matching.background,
        "published": published,
        "received": int(received_mask.sum()),
        "duplicates": duplicates,
        "out_of_order": sub.out_of_order,
        "lost": len(lost),
        "altered": altered,
        "dropped_events": dropped,
        "left_in_spool": run.left_in_spool,
        "stats_published": pub.stats_published,
        "stats_received": sub.stats_received,
        "warnings_logged": run.log_counter.warnings,
        "errors_logged": run.log_counter.errors,
        "misses": miss_list,
        "failures": failures,
    }
    return figures, failures


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------------------
# Part 2: latency, the real daemon in real time.


class TimedFifoWriter:
    """Writes int16 samples into a FIFO in ``chunk_frames`` chunks, each once its last sample is
    due (start + (n+1) x chunk), and records when each write returned (``written_s``,
    monotonic) and the pipe's unread bytes just before it (``backlog_bytes``).

    The FIFO is opened read-write at construction (an ALSA ``file`` PCM on it can be opened
    before anything is written); after the payload it writes silence until :meth:`stop`
    (a capture stream blocks on an empty FIFO). Chunks stay within PIPE_BUF: atomic writes.
    """

    def __init__(self, path: Path, *, rate_hz: int, chunk_frames: int) -> None:
        if chunk_frames * 2 > 4096:
            raise ValueError("chunk_frames * 2 must stay within PIPE_BUF (4096 bytes)")
        if not path.exists():
            os.mkfifo(path)
        self.rate_hz = rate_hz
        self.chunk_frames = chunk_frames
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.payload_done = threading.Event()
        self.written_s = np.zeros(0, np.float64)
        self.backlog_bytes = np.zeros(0, np.int64)
        self.max_late_s = 0.0
        self.error: BaseException | None = None

    def start(self, payload: Int16Array) -> None:
        chunks = -(-len(payload) // self.chunk_frames)
        self.written_s = np.full(chunks, np.nan)
        self.backlog_bytes = np.full(chunks, -1, np.int64)
        padded = np.zeros(chunks * self.chunk_frames, np.int16)
        padded[: len(payload)] = payload
        self._thread = threading.Thread(target=self._run, args=(padded,), name="fifo-writer", daemon=True)
        self._thread.start()

    def _run(self, payload: Int16Array) -> None:
        chunk_s = self.chunk_frames / self.rate_hz
        silence = bytes(self.chunk_frames * 2)
        chunks = len(self.written_s)
        start = time.monotonic()
        n = 0
        try:
            while not self._stop.is_set():
                due = start + (n + 1) * chunk_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    self.max_late_s = max(self.max_late_s, -delay)
                if n < chunks:
                    self.backlog_bytes[n] = self._unread()
                    data = payload[n * self.chunk_frames : (n + 1) * self.chunk_frames].tobytes()
                else:
                    data = silence
                if not self._write(data):
                    break
                if n < chunks:
                    self.written_s[n] = time.monotonic()
                    if n == chunks - 1:
                        self.payload_done.set()
                n += 1
        except BaseException as err:  # reported by stop()
            self.error = err

    def _unread(self) -> int:
        buf = fcntl.ioctl(self._fd, termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])

    def _write(self, data: bytes) -> bool:
        while not self._stop.is_set():
            try:
                os.write(self._fd, data)
                return True
            except BlockingIOError:  # the pipe is full: nobody reads
                time.sleep(0.002)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        os.close(self._fd)
        if self.error is not None:
            raise RuntimeError(f"FIFO writer failed: {self.error!r}")


def demo_run() -> tuple[Bundle, DetectionSettings, Int16Array]:
    """The demo bundle, the detection settings ``kwsd run`` resolves for it with no config, and
    demo.wav at its rate."""
    bundle = read_bundle(demo_bundle_path())
    spec = bundle.frontend
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=spec.window_stride_ms)
    return bundle, settings, read_wav(demo_wav_path(), spec.sample_rate_hz)


def reference_detections(bundle: Bundle, samples: Int16Array) -> list[tuple[int, int]]:
    """(label index, time_ms) of what ``kwsd run``'s pipeline detects in ``samples``, in this process."""
    pipeline = build_pipeline(bundle)  # the bundle's own settings, as `kwsd run` without a config
    return [(bundle.labels.index(d.label), d.audio_time_ms) for d in pipeline.feed(samples)]


def _percentiles(values_s: npt.NDArray[np.float64]) -> tuple[float, float]:
    if not len(values_s):
        return float("nan"), float("nan")
    return float(np.percentile(values_s, 50) * 1000), float(np.percentile(values_s, 95) * 1000)


def run_latency(args: argparse.Namespace) -> int:
    if not mosquitto_available():
        raise SystemExit("latency: mosquitto is not installed (Debian: mosquitto)")
    if not alsa.portaudio_available():
        raise SystemExit("latency: PortAudio is not installed (Debian: libportaudio2)")
    bundle, settings, wav = demo_run()
    spec = bundle.frontend
    rate = spec.sample_rate_hz
    clip_stride_ms = settings.clip_stride_ms
    one_pass = demo_words(wav, spec)
    payload = np.tile(wav, args.passes)
    words = [
        DemoWord(w.label, w.start_sample + p * len(wav), w.end_sample + p * len(wav))
        for p in range(args.passes)
        for w in one_pass
    ]
    reference = reference_detections(bundle, payload)
    chunk = rate * LATENCY_BLOCK_MS // 1000
    target_ms = clip_stride_ms + TARGET_DECISION_EXTRA_MS

    with tempfile.TemporaryDirectory(prefix="kwsd-latency-") as tmp:
        workdir = Path(tmp)
        broker = MosquittoBroker(workdir / "broker")
        broker.start()
        writer = TimedFifoWriter(workdir / "mic.fifo", rate_hz=rate, chunk_frames=chunk)
        subscriber: DetectionSubscriber | None = None
        daemon: subprocess.Popen[bytes] | None = None
        stderr_lines: list[str] = []
        try:
            topic = f"kwsd/{DEVICE_ID}/detection"
            subscriber = DetectionSubscriber(
                broker.port, topic, bundle.labels, 4 * len(words) + 100, client_id="kwsd-latency-subscriber"
            )
            subscriber.wait(lambda: subscriber.subscribed, 10, "the subscriber")
            conf = alsa.write_asound_conf(
                workdir / "asound.conf", alsa.file_pcm(PCM_NAME, workdir / "mic.fifo")
            )
            config = workdir / "config.yaml"
            config.write_text(
                f"audio:\n  device: {PCM_NAME}\n  block_ms: {LATENCY_BLOCK_MS}\n"
                f"mqtt:\n  host: {HOST}\n  port: {broker.port}\n  device_id: {DEVICE_ID}\n"
                f"  spool_dir: {workdir / 'spool'}\n"
            )
            daemon = subprocess.Popen(
                [sys.executable, "-m", "kwsd", "-v", "run", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=alsa.capture_env(conf),
            )
            reader = threading.Thread(target=_collect, args=(daemon, stderr_lines), daemon=True)
            reader.start()
            deadline = time.monotonic() + 30
            while not (
                any("capturing from" in line for line in stderr_lines) and subscriber.last_status == "online"
            ):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("latency: the daemon did not start capturing:\n" + "".join(stderr_lines))
                time.sleep(0.05)
            writer.start(payload)
            if not writer.payload_done.wait(len(payload) / rate + 30):
                raise SystemExit("latency: the FIFO writer did not finish")
            with contextlib.suppress(RuntimeError):  # reported below as a mismatch with the reference
                subscriber.wait(
                    lambda: subscriber.received(len(reference)) >= len(reference), 5, "the last detections"
                )
            time.sleep(1.0)  # anything past the reference would show too
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(15)
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.kill()
                daemon.wait()
            writer.stop()
            if subscriber is not None:
                subscriber.close()
            broker.stop()

    assert subscriber is not None
    failures: list[str] = []
    if code != 0:
        failures.append(f"the daemon exited with {code}")
    received = np.flatnonzero(subscriber.copies > 0)
    labels = subscriber.label[received]
    times = subscriber.audio_time_ms[received]
    if [int(x) for x in labels] != [label for label, _ in reference]:
        failures.append(
            f"the daemon's detections {[bundle.labels[int(x)] for x in labels]} differ from the same "
            f"pipeline's on the payload {[bundle.labels[label] for label, _ in reference]}"
        )
        offsets = np.zeros(1, np.int64)
    else:
        offsets = times - np.array([t for _, t in reference], np.int64)
    offset_ms = int(np.median(offsets))
    if offsets.min() != offsets.max():
        failures.append(f"the daemon's audio time is offset unevenly: {sorted(set(offsets.tolist()))} ms")

    def written_at(sample: int) -> float:
        index = sample // chunk
        if not 0 <= index < len(writer.written_s):
            return float("nan")
        return float(writer.written_s[index])

    arrivals = subscriber.arrival_s[received]
    decision_s = np.array(
        [
            a - written_at((int(t) - offset_ms) * rate // 1000 - 1)
            for a, t in zip(arrivals, times, strict=True)
        ]
    )
    matching = match_detections(
        np.array([w.start_sample * 1000 / rate for w in words]),
        np.array([bundle.labels.index(w.label) for w in words], np.int64),
        times - offset_ms,
        labels,
        spec,
    )
    word_end_s = np.array(
        [
            arrivals[d] - written_at(words[w].end_sample - 1)
            for d, w in enumerate(matching.detection_word)
            if w >= 0
        ]
    )
    decision_s = decision_s[np.isfinite(decision_s)]
    word_end_s = word_end_s[np.isfinite(word_end_s)]
    # Where the decision delay goes: the daemon's wall-clock stamp (ms) splits it.
    mono_to_wall = time.time() - time.monotonic()
    stamp_s = subscriber.stamp_wall_s[received]
    feed_wall = np.array([written_at((int(t) - offset_ms) * rate // 1000 - 1) for t in times]) + mono_to_wall
    to_stamp = stamp_s - feed_wall
    to_arrival = subscriber.arrival_wall_s[received] - stamp_s
    d50, d95 = _percentiles(decision_s)
    w50, w95 = _percentiles(word_end_s)
    backlog = writer.backlog_bytes[writer.backlog_bytes >= 0]
    if not d95 <= target_ms:
        failures.append(f"decision delay p95 {d95:.0f} ms > target {target_ms:.0f} ms")
    if not len(decision_s):
        failures.append("no detection arrived")

    print(
        f"kwsd latency: {bundle.name} model, clip stride {clip_stride_ms} ms, `kwsd run` capturing "
        f"{LATENCY_BLOCK_MS} ms blocks from an ALSA FIFO PCM, MQTT to mosquitto on loopback, spool on; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"audio: demo.wav x {args.passes} = {len(payload) / rate:.1f} s, {len(words)} words, written in "
        f"{chunk}-frame chunks when their last sample is due; writes late by at most "
        f"{writer.max_late_s * 1000:.1f} ms; pipe backlog before a write: max {backlog.max()} bytes, "
        f"{np.count_nonzero(backlog)} of {len(backlog)} writes found unread bytes"
    )
    print(
        f"detections: {len(received)} received, {len(reference)} expected (same pipeline on the payload); "
        f"daemon audio time offset {offset_ms} ms; {matching.matched} matched a word, "
        f"{matching.false_detections} did not"
    )
    print(
        f"word-end latency (end of the word written -> message at the subscriber): "
        f"p50 {w50:.0f} ms, p95 {w95:.0f} ms, N={len(word_end_s)}"
    )
    print(
        f"decision delay (window that fired written -> message at the subscriber): p50 {d50:.0f} ms, "
        f"p95 {d95:.0f} ms, N={len(decision_s)} (target p95 <= {clip_stride_ms} + "
        f"{TARGET_DECISION_EXTRA_MS:.0f} = {target_ms:.0f} ms) {'OK' if d95 <= target_ms else 'OVER'}"
    )
    print(
        f"   of which: written -> daemon's event stamp p50 {np.nanmedian(to_stamp) * 1000:.0f} ms, "
        f"stamp -> subscriber p50 {np.nanmedian(to_arrival) * 1000:.0f} ms (event stamps are whole ms)"
    )
    print("result: " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    if args.json:
        print(
            json.dumps(
                {
                    "passes": args.passes,
                    "words": len(words),
                    "received": len(received),
                    "expected": len(reference),
                    "matched": matching.matched,
                    "offset_ms": offset_ms,
                    "word_end_p50_ms": round(w50, 1),
                    "word_end_p95_ms": round(w95, 1),
                    "word_end_n": len(word_end_s),
                    "decision_p50_ms": round(d50, 1),
                    "decision_p95_ms": round(d95, 1),
                    "decision_n": len(decision_s),
                    "decision_target_ms": target_ms,
                    "to_stamp_p50_ms": round(float(np.nanmedian(to_stamp)) * 1000, 1),
                    "stamp_to_arrival_p50_ms": round(float(np.nanmedian(to_arrival)) * 1000, 1),
                    "writer_max_late_ms": round(writer.max_late_s * 1000, 2),
                    "pipe_backlog_max_bytes": int(backlog.max()),
                    "failures": failures,
                }
            )
        )
    return 1 if failures else 0


def _collect(proc: subprocess.Popen[bytes], into: list[str]) -> None:
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        into.append(line.decode(errors="replace"))


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    soak = sub.add_parser("soak", help="accelerated hours through the listener, with broker restarts")
    soak.add_argument("--hours", type=float, default=24.0, help="simulated hours of audio (default 24)")
    soak.add_argument(
        "--restart-every-min",
        type=float,
        default=5.0,
        help="simulated minutes between broker restarts (default 5)",
    )
    soak.add_argument(
        "--outage-s", type=float, default=30.0, help="simulated seconds the broker stays down (default 30)"
    )
    soak.add_argument(
        "--warmup-hours", type=float, default=1.0, help="simulated hours before memory is judged (default 1)"
    )
    soak.add_argument(
        "--gap-min-s", type=float, default=10.0, help="shortest simulated s between word starts (default 10)"
    )
    soak.add_argument(
        "--gap-max-s", type=float, default=30.0, help="longest simulated s between word starts (default 30)"
    )
    soak.add_argument(
        "--stats-interval-s",
        type=float,
        default=1.0,
        help="real seconds between the listener's stats messages (default 1; 0: none)",
    )
    soak.add_argument("--block-ms", type=int, default=20, help="audio block the source returns (default 20)")
    soak.add_argument("--seed", type=int, default=1, help="word times and clips (default 1)")
    soak.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    soak.add_argument("-v", "--verbose", action="store_true", help="show kwsd's log")
    latency = sub.add_parser("latency", help="real-time latency of `kwsd run` through ALSA and MQTT")
    latency.add_argument("--passes", type=int, default=3, help="times demo.wav is played (default 3)")
    latency.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    args = parser.parse_args(argv)
    try:
        return run_soak(args) if args.command == "soak" else run_latency(args)
    except RuntimeError as err:  # a client that never reconnected, a broker that would not start
        print(f"{args.command}: FAILED: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
