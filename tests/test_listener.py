"""The listening loop's fault handling and systemd notifications.

A capture device that goes silent or vanishes cannot be made to on cue, so these tests use a
ScriptedSource at the AudioSource seam; the pipeline, the model and the notify socket are real.
"""

import socket
import threading
import time

import numpy as np
import pytest

from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.listener import Backoff, Listener, Reload
from kwsd.notify import SystemdNotifier
from kwsd.pipeline import build_pipeline
from kwsd.publisher import EventStamper
from kwsd.sources import AudioDeviceError


class ScriptedSource:
    """Hands out ``blocks`` (at most one per read), then nothing: a device gone quiet."""

    sample_rate_hz = 16000

    def __init__(self, blocks, fail_after=None):
        self._blocks = list(blocks)
        self._fail_after = fail_after
        self.reads = 0
        #: Reads answered with nothing after the last block was handed out.
        self.idle_reads = 0
        self.samples_read = 0
        self.closed = False
        #: When the last block was handed out (monotonic seconds).
        self.exhausted_at = None

    def read(self, timeout_s):
        self.reads += 1
        if self._fail_after is not None and self.reads > self._fail_after:
            raise AudioDeviceError("scripted: the capture stream stopped")
        if self._blocks:
            time.sleep(0.002)
            block = self._blocks.pop(0)
            self.samples_read += len(block)
            if not self._blocks:
                self.exhausted_at = time.monotonic()
            return block
        self.idle_reads += 1
        time.sleep(timeout_s)
        return None

    def close(self):
        self.closed = True


class RecordingPublisher:
    def __init__(self):
        self.events = []
        self.stats = []

    def publish(self, event):
        self.events.append(event)

    def publish_stats(self, stats):
        self.stats.append(stats)

    def counters(self):
        return {"delivered": len(self.events)}

    def score_sink(self):
        return None

    def close(self):
        pass


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    messages = []
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    yield str(path), messages
    stop.set()
    thread.join(2)
    sock.close()


def demo_pipeline():
    bundle = read_bundle(demo_bundle_path())
    return bundle, build_pipeline(bundle)


def heard_in(samples, at_least):
    """The labels kwsd's pipeline hears in ``samples`` in one go (the reference for the listener),
    checked to be at least ``at_least`` of them."""
    labels = [d.label for d in demo_pipeline()[1].feed(samples)]
    assert len(labels) >= at_least, f"the demo's opening has {labels}; the test needs {at_least} words"
    return labels


def make_listener(open_source, publisher, notifier, stall_timeout_ms, **kwargs):
    bundle, pipeline = demo_pipeline()
    return Listener(
        open_source,
        pipeline,
        publisher,
        EventStamper(bundle.name, bundle.sha256, boot_id="test"),
        stall_timeout_ms=stall_timeout_ms,
        backoff=Backoff(first_s=0.05, max_s=0.1),
        notifier=notifier,
        **kwargs,
    )


#: The longest any condition below may take on a busy machine; a test that needs it has failed.
PATIENCE_S = 60


def wait_for(condition, what, timeout_s=PATIENCE_S):
    """Poll ``condition()`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.01)


def run_until(listener, condition, what, timeout_s=PATIENCE_S):
    """Run ``listener`` on its own thread until ``condition()`` holds, then stop it.

    Waiting on what the test needs to have happened, not on a wall-clock interval, keeps
    these tests true on a machine whose cores are busy with other work.
    """
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,))
    thread.start()
    try:
        wait_for(condition, what, timeout_s)
    finally:
        stop.set()
        thread.join(PATIENCE_S)
    assert not thread.is_alive()


def test_ready_once_audio_flows_watchdog_only_while_it_does(notify_socket):
    path, messages = notify_socket
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 6]
    blocks = np.split(samples, 300)  # 20 ms blocks, handed out as fast as they are read
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # ping every 50 ms
    publisher = RecordingPublisher()
    sources = [ScriptedSource(blocks)]
    listener = make_listener(lambda: sources[-1], publisher, notifier, stall_timeout_ms=60_000)
    pings_when_idle = []

    def idle_for_a_while():
        # The audio ran out; half a second later, count the pings; then a second more of idling.
        if sources[0].idle_reads >= 3 and not pings_when_idle:
            pings_when_idle.append(sum(m == "WATCHDOG=1" for _, m in messages))
        return sources[0].idle_reads >= 8

    run_until(listener, idle_for_a_while, "1.6 s of idling after the audio ran out")
    wait_for(lambda: messages and messages[-1][1] == "STOPPING=1", "STOPPING=1")
    texts = [m for _, m in messages]
    assert texts[0] == "READY=1\nSTATUS=listening"
    assert texts[-1] == "STOPPING=1"
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    assert len(pings) >= 3
    # No ping while no audio comes: a ping every 50 ms would be 20 in that second; one may be
    # a datagram still in flight from the last block.
    assert len(pings) - pings_when_idle[0] <= 1
    assert [e.label for e in publisher.events] == heard_in(samples, 2)


def test_a_device_gone_quiet_is_reopened_and_listening_goes_on(notify_socket):
    path, _ = notify_socket
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 3]
    opened = []

    def open_source():
        source = ScriptedSource(np.split(samples, 150))
        opened.append(source)
        return source

    publisher = RecordingPublisher()
    listener = make_listener(
        open_source, publisher, SystemdNotifier({"NOTIFY_SOCKET": path}), stall_timeout_ms=300
    )
    run_until(
        listener,
        lambda: listener.reopens >= 1 and len(publisher.events) >= 2,
        "a reopen and the word heard again",
    )
    assert listener.reopens >= 1
    assert opened[0].closed
    # The first word is heard once per opening of the device; sequence numbers go on.
    first = heard_in(samples, 1)[0]
    assert [e.label for e in publisher.events][:2] == [first, first]
    assert [e.sequence for e in publisher.events] == list(range(1, len(publisher.events) + 1))


def test_a_device_missing_at_start_is_waited_for_and_heard_once_it_appears(notify_socket):
    path, messages = notify_socket
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 3]
    attempts = []

    def open_source():
        attempts.append(time.monotonic())
        if len(attempts) <= 3:
            raise AudioDeviceError("no capture device matching 'usb'; there are: default")
        return ScriptedSource(np.split(samples, 150))

    publisher = RecordingPublisher()
    listener = make_listener(
        open_source, publisher, SystemdNotifier({"NOTIFY_SOCKET": path}), stall_timeout_ms=60_000
    )
    run_until(
        listener,
        lambda: listener.pipeline.samples_seen == len(samples),
        "all the audio of the device that appeared",
    )
    assert len(attempts) == 4
    assert listener.reopens == 0  # the first open that worked is no reopen
    assert [e.label for e in publisher.events] == heard_in(samples, 1)
    assert "READY=1\nSTATUS=listening" in [m for _, m in messages]


def test_stats_count_audio_overflows_reopens_and_the_real_time_factor():
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 2]
    opened = []

    def open_source():
        source = ScriptedSource(np.split(samples, 100))
        source.overflows, source.dropped_blocks = 2, 1  # as the capture callback counts them
        opened.append(source)
        return source

    publisher = RecordingPublisher()
    listener = make_listener(
        open_source, publisher, SystemdNotifier({}), stall_timeout_ms=300, stats_interval_s=0.25
    )
    run_until(
        listener,
        lambda: listener.reopens >= 1 and len(publisher.stats) >= 4,
        "a reopen and four stats messages",
    )
    stats = publisher.stats
    assert len(stats) >= 4
    last = stats[-1]
    assert set(last) == {
        "time", "boot_id", "uptime_s", "listening", "audio_s", "realtime_factor", "detections",
        "audio_overflows", "audio_dropped_blocks", "device_reopens", "reloads", "mqtt",
    }  # fmt: skip
    assert last["boot_id"] == "test" and last["time"].endswith("Z")
    assert last["detections"] == last["mqtt"]["delivered"] <= len(publisher.events)
    final = listener.stats()  # after the run: every source closed
    assert final["device_reopens"] == listener.reopens == len(opened) - 1 >= 1
    # The counters of every source opened are summed.
    assert final["audio_overflows"] == 2 * len(opened)
    assert final["audio_dropped_blocks"] == len(opened)
    assert final["detections"] == len(publisher.events)
    assert [s["uptime_s"] for s in stats] == sorted(s["uptime_s"] for s in stats)
    # Audio seconds count what every source opened handed out.
    audio_s = [s["audio_s"] for s in stats]
    assert audio_s == sorted(audio_s)
    assert final["audio_s"] == round(sum(s.samples_read for s in opened) / 16000, 1) >= 2.0
    # A real-time factor is listener CPU per audio second in the interval (none without audio).
    factors = [s["realtime_factor"] for s in stats]
    assert any(f is not None for f in factors)
    assert all(0 < f < 1 for f in factors if f is not None)
    assert all(b == a for f, a, b in zip(factors, [0.0, *audio_s[:-1]], audio_s, strict=True) if f is None)


HANGING_OPEN = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from tests.test_listener import make_listener, RecordingPublisher
from kwsd.notify import SystemdNotifier

def open_source():
    time.sleep(3600)  # a driver stuck in the kernel

listener = make_listener(open_source, RecordingPublisher(), SystemdNotifier({}), 60_000, hang_timeout_s=0.5)
listener.run(threading.Event())
"""


def test_an_open_that_hangs_ends_the_process_with_status_75():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # Within the subprocess timeout, not the hour the open would take.
    result = subprocess.run(
        [sys.executable, "-c", HANGING_OPEN, str(root)], capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 75, result.stderr.decode()
    assert "opening the audio device has not returned in 0.5 s: the driver is stuck" in result.stderr.decode()


def test_a_device_that_fails_is_reopened_with_backoff():
    attempts = []

    def open_source():
        attempts.append(time.monotonic())
        if len(attempts) in (2, 3):
            raise AudioDeviceError("scripted: no such device right now")
        return ScriptedSource([np.zeros(320, np.int16)] * 5, fail_after=3)

    listener = make_listener(open_source, RecordingPublisher(), SystemdNotifier({}), stall_timeout_ms=60_000)
    run_until(listener, lambda: len(attempts) >= 4 and listener.reopens >= 1, "four opens and a reopen")
    assert len(attempts) >= 4
    assert listener.reopens >= 1


def test_a_reload_that_replaces_the_publisher_never_holds_up_the_audio():
    # The replacement publisher is ready only when the test says so (a broker away, a close
    # waiting for it): meanwhile all the audio is heard, the detections wait in order, and a
    # second reload waits for the first to finish.
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 8]
    labels = heard_in(samples, 2)
    source = ScriptedSource(np.split(samples, 400))
    ready = threading.Event()
    old, new = RecordingPublisher(), RecordingPublisher()
    reloads = []

    def build(previous):
        assert ready.wait(PATIENCE_S)
        previous.close()
        return new

    def reloader():
        reloads.append(listener.publisher)
        return Reload(listener.pipeline.settings, 0.01, new_publisher=build if len(reloads) == 1 else None)

    listener = make_listener(
        lambda: source, old, SystemdNotifier({}), 60_000, stats_interval_s=0.01, reloader=reloader
    )
    listener.request_reload()
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: len(reloads) == 1, "the first reload")
        listener.request_reload()
        wait_for(
            lambda: source.exhausted_at is not None, "all the audio read while the publisher is replaced"
        )
        wait_for(lambda: listener.detections == len(labels), "every word heard")
        assert len(reloads) == 1 and old.events == [] and new.events == [] and new.stats == []
        ready.set()
        wait_for(lambda: len(new.events) == len(labels) and len(reloads) == 2, "the handover")
        wait_for(lambda: new.stats, "stats after the handover")
    finally:
        ready.set()
        stop.set()
        thread.join(PATIENCE_S)
    assert not thread.is_alive()
    assert [e.label for e in new.events] == labels
    assert [e.sequence for e in new.events] == list(range(1, len(labels) + 1))
    assert reloads[1] is new and listener.reloads == 2
    assert new.stats[-1]["detections"] == len(labels)


def test_a_handover_that_fails_stops_the_listener_with_its_error():
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 2]

    def build(previous):
        raise OSError("scripted: a bug in the new publisher")

    def reloader():
        return Reload(listener.pipeline.settings, 0, new_publisher=build)

    listener = make_listener(
        lambda: ScriptedSource(np.split(samples, 100)), RecordingPublisher(), SystemdNotifier({}), 60_000,
        reloader=reloader,
    )  # fmt: skip
    listener.request_reload()
    with pytest.raises(RuntimeError, match="replacing the publisher failed") as raised:
        listener.run(threading.Event())
    assert isinstance(raised.value.__cause__, OSError)


def test_a_reload_is_a_value_the_listener_applies_between_blocks():
    # The reloader only says what the new config asks for; the listener applies it: the new
    # detection settings, the stats interval, and the kept publisher told of the change. A
    # rejected config (None) changes nothing and is not counted.
    samples = read_wav(demo_wav_path(), 16000)[: 16000 * 2]
    publisher = RecordingPublisher()
    kept = []
    answers = []

    def reloader():
        return answers.pop(0)

    listener = make_listener(
        lambda: ScriptedSource(np.split(samples, 100)), publisher, SystemdNotifier({}), 60_000,
        reloader=reloader,
    )  # fmt: skip
    stricter = listener.pipeline.settings.replace(threshold=0.99, suppression_ms=900)
    answers += [None, Reload(stricter, 0.25, keep_publisher=kept.append)]
    listener.request_reload()
    listener._between_blocks()
    assert listener.reloads == 0 and listener.pipeline.settings != stricter
    listener.request_reload()
    listener._between_blocks()
    assert listener.reloads == 1 and listener.stats_interval_s == 0.25
    assert listener.pipeline.settings == stricter and listener.pipeline.smoother.settings == stricter.smoother
    assert kept == [publisher] and listener.publisher is publisher
