"""`kwsd run` as a user runs it: a real PortAudio capture from an ALSA device fed in real time."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd_tools.harness import alsa, broker

pytestmark = pytest.mark.skipif(not alsa.portaudio_available(), reason="libportaudio2 is not installed")

ROOT = Path(__file__).resolve().parents[1]
BLOCK_MS = 20
#: The longest a condition below may take on a busy machine (a test that needs it has failed).
PATIENCE_S = 60


def kwsd_stream_times(samples):
    """What `kwsd stream` reports for the same audio (the reference for the daemon)."""
    result = subprocess.run(
        [sys.executable, "-m", "kwsd", "stream", "-"],
        input=samples.tobytes(),
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def demo_opening(count):
    """The demo's audio up to 500 ms or a little more (whole blocks) after its ``count``-th
    detection (what `kwsd stream` reports on the whole file), and those detections' labels."""
    demo = read_wav(demo_wav_path(), 16000)
    whole = kwsd_stream_times(demo)
    assert len(whole) > count, f"the demo has {len(whole)} detections, fewer than the test needs"
    cut_ms = -(-(whole[count - 1]["audio_time_ms"] + 500) // BLOCK_MS) * BLOCK_MS  # whole blocks
    assert whole[count]["audio_time_ms"] > cut_ms, "the demo's words are too close for the test"
    return demo[: cut_ms * 16], [d["label"] for d in whole[:count]]


def kwsd(*args, env=None, timeout=60):
    """``python -m kwsd ARGS`` with this checkout's kwsd, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        capture_output=True,
        check=False,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
    )


def start_daemon(tmp_path, config_text, env, run_args=()):
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    return subprocess.Popen(
        [sys.executable, "-m", "kwsd", "-v", "run", "-c", str(config), *run_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def read_lines(stream, into, stop):
    for line in iter(stream.readline, b""):
        into.append(line.decode())
        if stop.is_set():
            break


class Daemon:
    """``kwsd -v run -c CONFIG`` in the background, its stdout and stderr read as they come."""

    def __init__(self, tmp_path, config_text, env):
        self.config = tmp_path / "config.yaml"
        self.config.write_text(config_text)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kwsd", "-v", "run", "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**env, "PYTHONPATH": str(ROOT)},
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._done = threading.Event()
        self._threads = [
            threading.Thread(
                target=read_lines, args=(self.proc.stdout, self.stdout, self._done), daemon=True
            ),
            threading.Thread(
                target=read_lines, args=(self.proc.stderr, self.stderr, self._done), daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def log(self):
        return "".join(self.stderr)

    def wait_for_log(self, text, timeout_s=PATIENCE_S, after=0):
        """The first stderr line (from index ``after`` on) containing ``text``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.stderr[after:]:
                if text in line:
                    return line
            assert self.proc.poll() is None, f"kwsd exited with {self.proc.returncode}:\n{self.log}"
            assert time.monotonic() < deadline, f"no {text!r} in the log after {timeout_s} s:\n{self.log}"
            time.sleep(0.05)

    def wait_for_events(self, count, timeout_s=PATIENCE_S):
        deadline = time.monotonic() + timeout_s
        while len(self.stdout) < count:
            assert time.monotonic() < deadline, f"{len(self.stdout)} of {count} events:\n{self.log}"
            time.sleep(0.05)
        return [json.loads(line) for line in self.stdout]

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self, timeout_s=PATIENCE_S):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._done.set()
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._done.set()


def heard(log_lines, count):
    """The daemon has logged ``count`` detections (it logs each one, whatever the outputs)."""
    return sum(" heard " in line for line in log_lines) >= count


def run_daemon_on_demo_words(tmp_path, extra_config="", settled=None, run_args=()):
    """The demo's opening (its first three words) paced in real time through an ALSA FIFO
    device into `kwsd run`, then SIGTERM once the three words are heard (and ``settled()``
    holds, if given). Returns (expected, exit code, stdout, stderr)."""
    samples, labels = demo_opening(3)
    expected = kwsd_stream_times(samples)
    assert [d["label"] for d in expected] == labels
    fifo = tmp_path / "mic.fifo"
    writer = alsa.PacedFifoWriter(fifo, rate_hz=16000, frame_bytes=2, chunk_frames=16000 * BLOCK_MS // 1000)
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", fifo))
    daemon = start_daemon(
        tmp_path,
        f"audio:\n  device: kwsdtest\n  block_ms: {BLOCK_MS}\n{extra_config}",
        alsa.capture_env(conf),
        run_args,
    )
    stdout: list[str] = []
    stderr: list[str] = []
    done = threading.Event()
    threads = [
        threading.Thread(target=read_lines, args=(daemon.stdout, stdout, done), daemon=True),
        threading.Thread(target=read_lines, args=(daemon.stderr, stderr, done), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + PATIENCE_S
        while not any("capturing from kwsdtest" in line for line in stderr):
            assert daemon.poll() is None, "".join(stderr)
            assert time.monotonic() < deadline, "".join(stderr)
            time.sleep(0.05)
        writer.start(samples.tobytes())
        assert writer.payload_done.wait(PATIENCE_S)
        # The last window and the smoother: wait for what they produce, not for a time.
        while not (heard(stderr, len(expected)) and (settled is None or settled())):
            assert daemon.poll() is None, "".join(stderr)
            assert time.monotonic() < deadline + PATIENCE_S, "".join(stderr)
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(PATIENCE_S)
    finally:
        done.set()
        if daemon.poll() is None:
            daemon.kill()
        writer.stop()
    for thread in threads:
        thread.join(5)
    return expected, code, stdout, "".join(stderr)


def check_events(events, expected):
    assert [e["label"] for e in events] == [d["label"] for d in expected]
    # One event shape: every field `kwsd stream` prints, `kwsd run` prints under the same name.
    assert all(set(d) <= set(e) for d in expected for e in events)
    # Audio time counts from the daemon's start, silence before the words included: the same
    # detections shifted by one offset (within a capture block, where the FIFO's first
    # payload chunk landed).
    offset = events[0]["audio_time_ms"] - expected[0]["audio_time_ms"]
    assert offset >= 0
    for event, reference in zip(events, expected, strict=True):
        assert abs(event["audio_time_ms"] - offset - reference["audio_time_ms"]) <= BLOCK_MS
        assert event["score"] == pytest.approx(reference["score"], abs=0.05)
        assert event["model"]["name"] == "demo" and len(event["model"]["sha256"]) == 64
        assert event["time"].endswith("Z")
    assert [e["sequence"] for e in events] == [1, 2, 3]
    assert len({e["boot_id"] for e in events}) == 1


def run_daemon_with_broker(tmp_path, mqtt="", extra_config="", *, topic="#", settled=None, run_args=()):
    """run_daemon_on_demo_words with a broker of its own (mosquitto on a free loopback port):
    the config's mqtt section is the broker's address, device pi1, no spool, then ``mqtt``'s
    lines; ``extra_config`` follows. ``settled(subscriber)`` is what to wait for besides the
    words. Returns (expected, exit code, stdout, log, every message up to the offline status)."""
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    subscriber = broker.Subscriber(mosquitto.port, topic, client_id="e2e", clean=True).wait_subscribed()
    try:
        expected, code, stdout, log = run_daemon_on_demo_words(
            tmp_path,
            f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  device_id: pi1\n  spool_dir: null\n"
            f"{mqtt}{extra_config}",
            settled=None if settled is None else lambda: settled(subscriber),
            run_args=run_args,
        )
        assert code == 0, log
        messages = until_offline(subscriber)
    finally:
        subscriber.close()
        mosquitto.stop()
    return expected, code, stdout, log, messages


def test_run_hears_real_time_audio_from_a_capture_device_and_stops_cleanly(tmp_path):
    expected, code, stdout, log = run_daemon_on_demo_words(tmp_path)
    assert code == 0, log
    assert "Traceback" not in log
    check_events([json.loads(line) for line in stdout], expected)
    assert "SIGTERM: stopping" in log
    # The log says listening only once audio flows, and names each word heard.
    assert log.index("capturing from kwsdtest") < log.index("listening: audio is flowing")
    heard_labels = [line.split(" heard ")[1].split(" (")[0] for line in log.splitlines() if " heard " in line]
    assert heard_labels == [d["label"] for d in expected]


needs_mosquitto = pytest.mark.skipif(not Path(broker.MOSQUITTO).exists(), reason="mosquitto is not installed")


@needs_mosquitto
def test_run_publishes_detections_availability_stats_and_integrations_over_mqtt(tmp_path):
    def stats_after_the_words(subscriber):
        stats = [json.loads(m.payload) for m in subscriber.messages if m.topic == "kwsd/pi1/stats"]
        return len(stats) >= 5 and stats[-1]["detections"] == 3

    expected, code, stdout, log, messages = run_daemon_with_broker(
        tmp_path,
        "  home_assistant:\n    enabled: true\n  hermes:\n    enabled: true\n    site_id: hall\n",
        "stats_interval_s: 1\n",
        settled=stats_after_the_words,
    )
    assert code == 0, log
    assert stdout == []  # events go to the broker, not stdout
    detections = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/detection"]
    check_events(detections, expected)
    assert not any(m.retain for m in messages if m.topic == "kwsd/pi1/detection")
    assert [m.payload for m in messages if m.topic == "kwsd/pi1/status"] == ["online", "offline"]
    # Home Assistant: one event entity per keyword label of the demo model.
    configs = [json.loads(m.payload) for m in messages if m.topic.startswith("homeassistant/event/kwsd_pi1/")]
    keywords = [label for label in read_bundle(demo_bundle_path()).labels if not label.startswith("_")]
    assert sorted(c["name"] for c in configs) == sorted(keywords)
    assert len(keywords) == 10  # the demo hears Speech Commands' ten words
    # Hermes: the same words as hotwords for site "hall".
    hotwords = [m for m in messages if m.topic.startswith("hermes/hotword/")]
    assert [m.topic for m in hotwords] == [f"hermes/hotword/{d['label']}/detected" for d in expected]
    assert {json.loads(m.payload)["siteId"] for m in hotwords} == {"hall"}
    # Stats, about once a second, the last one after all the words.
    stats = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/stats"]
    assert len(stats) >= 5
    last = stats[-1]
    assert last["listening"] and last["detections"] == 3 and last["mqtt"]["delivered"] == 3
    assert (last["audio_overflows"], last["audio_dropped_blocks"], last["mqtt"]["dropped"]) == (0, 0, 0)
    assert 0 < last["realtime_factor"] < 0.5


@needs_mosquitto
def test_run_scores_prints_each_windows_scores_and_mqtt_sends_their_peaks(tmp_path):
    expected, code, stdout, log, messages = run_daemon_with_broker(
        tmp_path, "  scores_interval_ms: 500\n", topic="kwsd/pi1/#", run_args=["--scores"]
    )
    assert code == 0, log
    labels = read_bundle(demo_bundle_path()).labels
    # stdout (not a terminal, and events go to the broker): one JSON line per window.
    lines = [json.loads(line) for line in stdout]
    assert lines and all(set(line) == {"audio_time_ms", "scores"} for line in lines)
    assert all(list(line["scores"]) == list(labels) for line in lines)
    times = [line["audio_time_ms"] for line in lines]
    assert all(b - a == 20 for a, b in itertools.pairwise(times))  # every window, in order
    detections = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/detection"]
    check_events(detections, expected)
    # Where each word fired, its smoothed score passed the threshold in that window's line.
    by_time = {line["audio_time_ms"]: line["scores"] for line in lines}
    for event in detections:
        assert by_time[event["audio_time_ms"]][event["label"]] == pytest.approx(event["score"], abs=1e-4)
    # MQTT: every 500 ms of audio, each label's highest smoothed score over it.
    peaks = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/scores"]
    assert len(peaks) >= 3 and not any(m.retain for m in messages if m.topic == "kwsd/pi1/scores")
    assert all(p["interval_ms"] >= 500 and list(p["peak_scores"]) == list(labels) for p in peaks)
    for event in detections:
        covering = [
            p
            for p in peaks
            if p["audio_time_ms"] - p["interval_ms"] < event["audio_time_ms"] <= p["audio_time_ms"]
        ]
        assert covering and covering[0]["peak_scores"][event["label"]] >= event["score"] - 1e-4


@needs_mosquitto
def test_a_state_label_goes_on_and_off_retained_with_its_duration_and_a_home_assistant_sensor(tmp_path):
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    subscriber = broker.Subscriber(mosquitto.port, "#", client_id="states", clean=True).wait_subscribed()

    def off_published():
        return any(m.topic == "kwsd/pi1/state/no" and m.payload == "off" for m in subscriber.messages)

    try:
        _, code, _, log = run_daemon_on_demo_words(
            tmp_path,
            f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  device_id: pi1\n  spool_dir: null\n"
            "  home_assistant:\n    enabled: true\n"
            "detection:\n  states:\n    no:\n      on_threshold: 0.8\n      off_threshold: 0.3\n"
            "      min_on_ms: 100\n      min_off_ms: 200\n",
            settled=off_published,
        )
        assert code == 0, log
        messages = until_offline(subscriber)
        # Retained: a subscriber that comes later is told the sound is over.
        late = broker.Subscriber(mosquitto.port, "kwsd/pi1/state/#", client_id="late", clean=True)
        retained = late.wait_for_count(1, "kwsd/pi1/state/no", timeout_s=5.0)
        late.close()
    finally:
        subscriber.close()
        mosquitto.stop()
    states = [m for m in messages if m.topic == "kwsd/pi1/state/no"]
    assert [m.payload for m in states] == ["on", "off"]
    assert [(m.payload, m.retain) for m in retained] == [("off", True)]
    events = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/detection"]
    # "no" is a state now: its on and off are events (in order, numbered), the other words as before.
    assert [(e["label"], e.get("state")) for e in events][:3] == [("yes", None), ("no", "on"), ("no", "off")]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    on, off = events[1], events[2]
    assert (
        on["started_audio_time_ms"] < on["audio_time_ms"] < off["ended_audio_time_ms"] <= off["audio_time_ms"]
    )
    assert off["duration_ms"] == off["ended_audio_time_ms"] - off["started_audio_time_ms"] > 0
    assert off["started_audio_time_ms"] == on["started_audio_time_ms"] and off["started"] == on["started"]
    # Home Assistant: a binary sound sensor for "no", event entities for the other words.
    sensors = [json.loads(m.payload) for m in messages if m.topic.startswith("homeassistant/binary_sensor/")]
    assert [(c["name"], c["device_class"], c["state_topic"]) for c in sensors] == [
        ("no", "sound", "kwsd/pi1/state/no")
    ]
    event_entities = [m for m in messages if m.topic.startswith("homeassistant/event/")]
    assert len(event_entities) == 9 and not any("/no/" in m.topic for m in event_entities)
    assert "heard no on" in log and "heard no off" in log


def until_offline(subscriber):
    """Every message the subscriber got, once the daemon's last status is offline."""
    return subscriber.wait_for(
        lambda ms: [m.payload for m in ms if m.topic.endswith("/status")][-1:] == ["offline"],
        timeout_s=PATIENCE_S,
    )


def tear_down(daemon, writer, subscriber, mosquitto):
    """Stop what a daemon-with-broker test started, whatever happened in it."""
    daemon.kill()
    writer.stop()
    subscriber.close()
    mosquitto.stop()


@needs_mosquitto
def test_sighup_applies_new_thresholds_and_mqtt_settings_without_an_audio_gap(tmp_path):
    # The demo's first word, 4 s of silence, then its second and third words. The writer holds
    # at the start of the silence (sending more silence) until both reloads are done, however
    # long they take.
    opening, labels = demo_opening(3)
    pause_at_frame = len(demo_opening(1)[0])
    samples = np.concatenate(
        [opening[:pause_at_frame], np.zeros(4000 * 16, np.int16), opening[pause_at_frame:]]
    )
    expected = kwsd_stream_times(samples)
    assert [d["label"] for d in expected] == labels
    first_label, second_label, third_label = labels
    assert third_label not in (first_label, second_label), "the test needs a third word of its own"
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    subscriber = broker.Subscriber(mosquitto.port, "kwsd/#", client_id="e2e", clean=True).wait_subscribed()
    fifo = tmp_path / "mic.fifo"
    writer = alsa.PacedFifoWriter(fifo, rate_hz=16000, frame_bytes=2, chunk_frames=16000 * BLOCK_MS // 1000)
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", fifo))
    base = (
        f"audio:\n  device: kwsdtest\n  block_ms: {BLOCK_MS}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n"
    )
    daemon = Daemon(tmp_path, base + "  device_id: pi1\n  spool_dir: null\n", alsa.capture_env(conf))
    try:
        daemon.wait_for_log("capturing from kwsdtest")
        writer.start(samples.tobytes(), pause_at_frame=pause_at_frame)
        subscriber.wait_for(lambda ms: any(m.topic == "kwsd/pi1/detection" for m in ms), 10, "the first word")

        daemon.config.write_text(base + "  device_id: pi1\n  spool_dir: null\ndetection:\n  threshold: 2\n")
        mark = len(daemon.stderr)
        daemon.signal(signal.SIGHUP)
        rejected = daemon.wait_for_log("rejected", after=mark)
        assert "detection.threshold" in rejected and "going on with the running config" in rejected

        daemon.config.write_text(
            base + "  device_id: pi2\n  spool_dir: null\n"
            f"detection:\n  label_thresholds:\n    {third_label}: 1.0\nstats_interval_s: 1\n"
        )
        mark = len(daemon.stderr)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for_log("applied", after=mark)
        writer.resume()
        assert writer.payload_done.wait(PATIENCE_S)
        # The last window, the smoother and a stats message after all the audio.
        audio_s = (len(samples) + writer.paused_frames) / 16000

        def stats_after_the_audio(ms):
            stats = [json.loads(m.payload) for m in ms if m.topic == "kwsd/pi2/stats"]
            return bool(stats) and stats[-1]["audio_s"] >= audio_s

        subscriber.wait_for(stats_after_the_audio, PATIENCE_S, "stats after all the audio")
        code = daemon.stop()
        messages = subscriber.wait_for(
            lambda ms: [m.payload for m in ms if m.topic == "kwsd/pi2/status"][-1:] == ["offline"], 10
        )
    finally:
        tear_down(daemon, writer, subscriber, mosquitto)
    assert code == 0, daemon.log
    first = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/detection"]
    after = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi2/detection"]
    # The second word went to the new topic; the third no longer reaches its new threshold.
    assert [(e["label"], e["sequence"]) for e in first + after] == [(first_label, 1), (second_label, 2)]
    # No audio lost across the reloads: the second word is where it is in the audio (later by
    # the silence the writer held for).
    offset = first[0]["audio_time_ms"] - expected[0]["audio_time_ms"]
    held_ms = writer.paused_frames * 1000 / 16000
    assert abs(after[0]["audio_time_ms"] - offset - held_ms - expected[1]["audio_time_ms"]) <= BLOCK_MS
    assert [m.payload for m in messages if m.topic == "kwsd/pi1/status"] == ["online", "offline"]
    assert [m.payload for m in messages if m.topic == "kwsd/pi2/status"] == ["online", "offline"]
    stats = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi2/stats"]
    assert stats and stats[-1]["reloads"] == 1, daemon.log
    assert (stats[-1]["audio_overflows"], stats[-1]["audio_dropped_blocks"]) == (0, 0)
    assert "Traceback" not in daemon.log


@needs_mosquitto
def test_reloads_that_change_mqtt_during_an_outage_never_stop_the_audio(tmp_path):
    # The demo's first word, 3 s of silence, its second word; the broker is down throughout.
    # In the silence a storm of SIGHUPs, each changing the MQTT client id: each replaces the
    # publisher, whose close waits for the undelivered first word. The audio queue holds only
    # 0.5 s, so a listener that waited for those closes would drop audio.
    opening, labels = demo_opening(2)
    first_end = len(demo_opening(1)[0])
    samples = np.concatenate([opening[:first_end], np.zeros(3000 * 16, np.int16), opening[first_end:]])
    expected = kwsd_stream_times(samples)
    assert [d["label"] for d in expected] == labels
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    subscriber = broker.Subscriber(mosquitto.port, "kwsd/#", client_id="storm").wait_subscribed()
    fifo = tmp_path / "mic.fifo"
    writer = alsa.PacedFifoWriter(fifo, rate_hz=16000, frame_bytes=2, chunk_frames=16000 * BLOCK_MS // 1000)
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", fifo))

    def config(n):
        return (
            f"audio:\n  device: kwsdtest\n  block_ms: {BLOCK_MS}\n  queue_blocks: 25\n"
            f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  device_id: pi1\n"
            f"  spool_dir: null\n  client_id: kwsd-{n}\nstats_interval_s: 1\n"
        )

    daemon = Daemon(tmp_path, config(0), alsa.capture_env(conf))
    try:
        daemon.wait_for_log("capturing from kwsdtest")
        subscriber.wait_for(lambda ms: ("kwsd/pi1/status", "online") in [(m.topic, m.payload) for m in ms])
        mosquitto.stop()
        writer.start(samples.tobytes())
        daemon.wait_for_log(f"heard {labels[0]}")
        for n in range(1, 13):
            daemon.config.write_text(config(n))
            daemon.signal(signal.SIGHUP)
            time.sleep(0.15)
        assert writer.payload_done.wait(PATIENCE_S)
        daemon.wait_for_log(f"heard {labels[1]}")
        mosquitto.start()
        audio_s = len(samples) / 16000

        def detections_and_stats_after_the_audio(ms):
            stats = [json.loads(m.payload) for m in ms if m.topic == "kwsd/pi1/stats"]
            heard = [m for m in ms if m.topic == "kwsd/pi1/detection"]
            return len(heard) == 2 and bool(stats) and stats[-1]["audio_s"] >= audio_s

        messages = subscriber.wait_for(detections_and_stats_after_the_audio, PATIENCE_S, "both words")
        code = daemon.stop()
    finally:
        tear_down(daemon, writer, subscriber, mosquitto)
    assert code == 0, daemon.log
    heard = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/detection"]
    assert [(e["label"], e["sequence"]) for e in heard] == [(labels[0], 1), (labels[1], 2)]
    # No audio lost: the second word is as far after the first as in the audio.
    gap_ms = heard[1]["audio_time_ms"] - heard[0]["audio_time_ms"]
    assert abs(gap_ms - (expected[1]["audio_time_ms"] - expected[0]["audio_time_ms"])) <= BLOCK_MS, daemon.log
    stats = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/stats"][-1]
    assert (stats["audio_overflows"], stats["audio_dropped_blocks"]) == (0, 0), daemon.log
    assert stats["reloads"] >= 2 and daemon.log.count("reload: MQTT settings applied") >= 2, daemon.log
    assert "Traceback" not in daemon.log


@needs_mosquitto
def test_a_worker_thread_that_dies_stops_kwsd_with_exit_70(tmp_path):
    # A bug in a paho callback ends paho's network thread, and with it every MQTT delivery. It
    # cannot be caused for real, so on_connect is made to raise; the broker, the daemon and
    # its configuration are real. kwsd must not go on deaf to MQTT: exit 70 (a bug, which
    # systemd restarts), the thread's traceback in the log.
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    other = tmp_path / "other.raw"
    other.write_bytes(np.zeros(16000, np.int16).tobytes())
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("othermic", other))
    config = tmp_path / "config.yaml"
    config.write_text(
        "audio:\n  device: kwsdtest\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  spool_dir: {tmp_path / 'spool'}\n"
    )
    script = (
        "import sys\n"
        "from kwsd import mqtt\n"
        "def on_connect(self, *args):\n"
        "    raise RuntimeError('scripted: a bug in on_connect')\n"
        "mqtt.MqttPublisher._on_connect = on_connect\n"
        "from kwsd.cli import main\n"
        f"sys.exit(main(['-v', 'run', '-c', {str(config)!r}]))\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            env={**alsa.capture_env(conf), "PYTHONPATH": str(ROOT)},
            timeout=PATIENCE_S,
            check=False,
        )
    finally:
        mosquitto.stop()
    log = done.stderr.decode()
    assert done.returncode == 70, log
    assert "paho-mqtt-client" in log and "died (RuntimeError: scripted: a bug in on_connect); stopping" in log
    assert "Traceback" in log and "internal error" in log


def test_a_bad_config_exits_78_naming_every_key_before_any_device_opens(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  channels: 0\n  devise: USB\nmqtt:\n  port: abc\n")
    result = kwsd("run", "-c", config)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 78
    assert len(lines) == 3, lines
    assert all(line.startswith(f"kwsd: error: {config}: ") for line in lines)
    text = "\n".join(lines)
    assert "audio.channels: " in text
    assert "audio.devise: unknown key; did you mean 'device'?" in text
    assert "mqtt.port: " in text and "'abc'" in text
    # check-config says the same, with the same code.
    check = kwsd("check-config", config)
    assert check.returncode == 78 and check.stderr.decode().splitlines() == lines


def test_the_documented_config_file_checks_out():
    result = kwsd("check-config", ROOT / "config.yaml")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == (
        f"{ROOT / 'config.yaml'}: OK (model built-in demo: demo, _silence_, _unknown_, yes, no, up, down, "
        "left, right, on, off, stop, go; clip stride 20 ms, threshold 0.9; events to stdout)\n"
    )


def test_a_tls_file_that_is_not_a_certificate_is_a_config_error(tmp_path):
    bogus = tmp_path / "ca.crt"
    bogus.write_text("not a certificate\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"mqtt:\n  host: 127.0.0.1\n  spool_dir: null\n  tls:\n    enabled: true\n    ca_file: {bogus}\n"
    )
    result = kwsd("run", "-c", config)
    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("kwsd: error: ")]
    assert result.returncode == 78, stderr
    assert len(errors) == 1 and errors[0].startswith(
        f"kwsd: error: {config}: mqtt.tls: MQTT TLS: cannot use CA file {bogus}: "
    )
    assert "Traceback" not in stderr


def test_a_device_absent_at_start_is_waited_for_and_heard_once_it_appears(tmp_path):
    # At start only another device exists; the daemon says so, listing it, and keeps trying.
    other = tmp_path / "other.raw"
    other.write_bytes(np.zeros(16000, np.int16).tobytes())
    conf_path = tmp_path / "asound.conf"
    alsa.write_asound_conf(conf_path, alsa.file_pcm("othermic", other))
    samples, labels = demo_opening(1)
    expected = kwsd_stream_times(samples)
    assert [d["label"] for d in expected] == labels
    daemon = Daemon(
        tmp_path, f"audio:\n  device: kwsdtest\n  block_ms: {BLOCK_MS}\n", alsa.capture_env(conf_path)
    )
    writer = None
    try:
        line = daemon.wait_for_log("audio device not available")
        assert "no capture device matching 'kwsdtest'" in line and "othermic" in line
        # The microphone is plugged in: the device appears in the ALSA configuration.
        writer = alsa.PacedFifoWriter(
            tmp_path / "mic.fifo", rate_hz=16000, frame_bytes=2, chunk_frames=16000 * BLOCK_MS // 1000
        )
        alsa.write_asound_conf(
            conf_path, alsa.file_pcm("othermic", other), alsa.file_pcm("kwsdtest", tmp_path / "mic.fifo")
        )
        daemon.wait_for_log("capturing from kwsdtest", timeout_s=40)
        writer.start(samples.tobytes())
        assert writer.payload_done.wait(PATIENCE_S)
        events = daemon.wait_for_events(1)
        code = daemon.stop()
    finally:
        daemon.kill()
        if writer is not None:
            writer.stop()
    assert code == 0, daemon.log
    assert [e["label"] for e in events] == labels
    assert "Traceback" not in daemon.log


def test_detection_settings_that_do_not_fit_the_model_are_config_errors(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("detection:\n  clip_stride_ms: 30\n  label_thresholds:\n    maybe: 0.5\n")
    result = kwsd("run", "-c", config)
    stderr = result.stderr.decode()
    assert result.returncode == 78, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith(f"kwsd: error: {config}: detection.")
    # check-config loads the model and refuses the same settings, with the same words and code.
    check = kwsd("check-config", config)
    assert (check.returncode, check.stderr.decode(), check.stdout) == (78, stderr, b"")


def test_a_state_label_the_model_lacks_or_thresholds_upside_down_are_config_errors(tmp_path):
    state = (
        "      on_threshold: {on}\n      off_threshold: {off}\n      min_on_ms: 500\n      min_off_ms: 2000\n"
    )
    for label, on, off, expected in [
        (
            "crying",
            0.8,
            0.4,
            "detection.states.crying: not a label of this model (_silence_, _unknown_, yes,",
        ),
        (
            "no",
            0.4,
            0.8,
            "detection.states.no.off_threshold: expected 0 <= off_threshold <= on_threshold <= 1",
        ),
    ]:
        config = tmp_path / f"{label}.yaml"
        config.write_text(f"detection:\n  states:\n    {label}:\n" + state.format(on=on, off=off))
        for command in ("run", "check-config"):
            args = ("run", "-c", config) if command == "run" else ("check-config", config)
            result = kwsd(*args)
            stderr = result.stderr.decode()
            assert result.returncode == 78 and "Traceback" not in stderr, stderr
            assert stderr.startswith(f"kwsd: error: {config}: {expected}"), stderr


def test_run_keeps_each_detection_as_a_wav_and_sidecar_in_the_data_set_layout(tmp_path):
    captures = tmp_path / "captures"

    def all_written():
        return len(list(captures.glob("pending/*/*.json"))) == 3

    expected, code, stdout, log = run_daemon_on_demo_words(
        tmp_path,
        f"capture:\n  enabled: true\n  directory: {captures}\n  pre_ms: 1000\n  post_ms: 300\n"
        "mqtt:\n  device_id: pi1\n",
        settled=all_written,
    )
    assert code == 0, log
    events = [json.loads(line) for line in stdout]
    check_events(events, expected)  # capturing changes nothing of what is published
    samples, _ = demo_opening(3)
    windows = np.lib.stride_tricks.sliding_window_view(samples, 64)
    for event in events:
        wav = captures / "pending" / event["label"] / "pi1_nohash_0.wav"
        sidecar = json.loads(wav.with_suffix(".json").read_text())
        assert (sidecar["kind"], sidecar["label"], sidecar["audio_time_ms"]) == (
            "detection",
            event["label"],
            event["audio_time_ms"],
        )
        assert sidecar["score"] == event["score"] and sidecar["time"] == event["time"]
        assert sidecar["audio_time_ms"] - sidecar["first_sample_audio_time_ms"] == 1000
        audio = read_wav(wav, 16000)
        assert len(audio) == 1300 * 16  # pre_ms + post_ms of what the device delivered
        # The very samples that were fed, around the detection (found in the demo's opening).
        at = np.flatnonzero((windows == audio[:64]).all(axis=1))
        assert len(at) == 1 and np.array_equal(samples[at[0] : at[0] + len(audio)], audio)
        scored = [s["audio_time_ms"] for s in sidecar["scores"]]
        assert scored[-1] <= event["audio_time_ms"] + 300 and event["audio_time_ms"] in scored


def test_a_capture_folder_kwsd_cannot_write_is_a_config_error_for_run_and_check_config(tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    config = tmp_path / "config.yaml"
    config.write_text(f"capture:\n  enabled: true\n  directory: {tmp_path / 'not-a-folder'}\n")
    for args in (("run", "-c", config), ("check-config", config)):
        result = kwsd(*args)
        stderr = result.stderr.decode()
        assert result.returncode == 78 and "Traceback" not in stderr, stderr
        assert stderr.startswith(
            f"kwsd: error: {config}: capture.directory: {tmp_path / 'not-a-folder'}: "
        ), stderr


def test_devices_lists_capture_devices_with_their_rates(tmp_path):
    raw = tmp_path / "x.raw"
    raw.write_bytes(np.zeros(16000, np.int16).tobytes())
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", raw))
    result = kwsd("devices", env=alsa.capture_env(conf))
    assert result.returncode == 0, result.stderr.decode()
    lines = [line for line in result.stdout.decode().splitlines() if "kwsdtest" in line]
    assert len(lines) == 1
    assert "supports 8000, 16000, 22050, 32000, 44100, 48000 Hz" in lines[0]


def test_a_spool_folder_kwsd_cannot_write_is_a_config_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  host: 127.0.0.1\n  port: 1\n  spool_dir: /proc/kwsd-spool\n")
    result = kwsd("run", "-c", config)
    stderr = result.stderr.decode()
    assert result.returncode == 78, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("kwsd: error: ")]
    assert errors == [f"kwsd: error: {config}: mqtt.spool_dir: /proc/kwsd-spool: No such file or directory"]
    assert "Traceback" not in stderr


def test_check_config_accepts_a_spool_folder_whose_parents_do_not_exist_yet(tmp_path):
    # A fresh install: /var/lib/kwsd is made by systemd's StateDirectory= at the first start,
    # so README's check-config step ran into "kwsd may not write there" (found by
    # tools/check_systemd.sh). The nearest existing folder is what the spool would write in.
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: 1\n  spool_dir: {tmp_path}/state/kwsd/spool\n")
    result = kwsd("check-config", config)
    assert result.returncode == 0, result.stderr.decode()
    assert not (tmp_path / "state").exists()  # checking writes nothing


def test_a_model_bundle_that_fails_its_checks_stops_run_before_any_device_opens(tmp_path):
    bundle = tmp_path / "broken.kwsd"
    bundle.write_bytes(b"PK\x03\x04 not really a zip")
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {bundle}\naudio:\n  device: nosuchmic\n")
    result = kwsd("run", "-c", config)
    stderr = result.stderr.decode()
    assert result.returncode == 67, stderr
    assert stderr.startswith(f"kwsd: error: {bundle}: ")
    assert "nosuchmic" not in stderr and "Traceback" not in stderr  # no device was tried
    check = kwsd("check-config", config)
    assert (check.returncode, check.stderr.decode(), check.stdout) == (67, stderr, b"")


def test_check_config_refuses_a_missing_model_as_run_does(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {tmp_path / 'gone.kwsd'}\naudio:\n  device: nosuchmic\n")
    run = kwsd("run", "-c", config)
    check = kwsd("check-config", config)
    assert run.returncode == check.returncode == 66
    message = f"kwsd: error: {tmp_path / 'gone.kwsd'}: no such model bundle\n"
    assert run.stderr.decode() == check.stderr.decode() == message


@needs_mosquitto
def test_detections_made_while_the_broker_is_down_survive_a_daemon_kill(tmp_path):
    # The subscriber's persistent session is registered, then the broker goes away. The
    # daemon hears three words, spools them, and is killed; with the broker back, a new daemon
    # delivers them first, with their original boot id and sequence numbers.
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    subscriber = broker.Subscriber(mosquitto.port, "kwsd/pi1/detection", client_id="kept").wait_subscribed()
    mosquitto.stop()
    samples, labels = demo_opening(3)
    fifo = tmp_path / "mic.fifo"
    writer = alsa.PacedFifoWriter(fifo, rate_hz=16000, frame_bytes=2, chunk_frames=16000 * BLOCK_MS // 1000)
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", fifo))
    spool = tmp_path / "spool"
    config = (
        f"audio:\n  device: kwsdtest\n  block_ms: {BLOCK_MS}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  device_id: pi1\n  spool_dir: {spool}\n"
    )
    first = Daemon(tmp_path, config, alsa.capture_env(conf))
    second = None
    try:
        first.wait_for_log("capturing from kwsdtest")
        writer.start(samples.tobytes())
        assert writer.payload_done.wait(PATIENCE_S)
        journal = spool / "journal.jsonl"
        deadline = time.monotonic() + PATIENCE_S
        while journal.read_text().count('"add"') < 3:
            assert time.monotonic() < deadline, journal.read_text()
            time.sleep(0.1)
        first.proc.kill()  # SIGKILL: no clean stop, nothing flushed but what the spool holds
        first.proc.wait(PATIENCE_S)
        mosquitto.start()
        second = Daemon(tmp_path, config, alsa.capture_env(conf))
        messages = subscriber.wait_for(lambda ms: len(ms) >= 3, 20, "the spooled detections")
        code = second.stop()
    finally:
        first.kill()
        if second is not None:
            second.kill()
        writer.stop()
        subscriber.close()
        mosquitto.stop()
    assert code == 0, second.log
    events = [json.loads(m.payload) for m in messages]
    assert [(e["label"], e["sequence"]) for e in events] == [(label, k + 1) for k, label in enumerate(labels)]
    assert len({e["boot_id"] for e in events}) == 1
    assert "republishing 3 spooled detections" in second.log
