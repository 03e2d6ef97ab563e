"""The nursery, end to end: a sound that lasts, from recordings to one on and one off on a broker.

As a parent would do it (README, "Sounds that last"): long recordings of the baby crying and
of the quiet room (generated here: harmonic cries with vibrato in bursts, and room noise, at
44.1 kHz as a phone records), cut into 5 s clips at 22,050 Hz by ``tools/slice.py``, a
crying/quiet model trained on them by ``tools/train.py``, and ``kwsd run`` listening to 10 s
of quiet, 20 s of crying and 20 s of quiet through a real capture device (an ALSA FIFO at
22,050 Hz, fed four times faster than real time: the daemon counts audio time, not the
clock) with ``crying`` as a state label, publishing to a real mosquitto.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import Daemon
from training_tools import missing_tensorflow

from kwsd.audio import write_wav
from kwsd_tools.harness import alsa, broker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_tensorflow() is not None, reason=str(missing_tensorflow())),
    pytest.mark.skipif(not alsa.portaudio_available(), reason="libportaudio2 is not installed"),
    pytest.mark.skipif(not broker.mosquitto_available(), reason="mosquitto is not installed"),
]

ROOT = Path(__file__).resolve().parents[1]
RATE = 22050
BLOCK_MS = 20
SPEEDUP = 4
PATIENCE_S = 120


def room(samples: int, rng: np.random.Generator, level: float = 0.004) -> np.ndarray:
    """A quiet room: low-passed noise (a fan, the street)."""
    walk = np.cumsum(rng.normal(0.0, 1.0, samples))
    noise = walk - np.convolve(walk, np.ones(400) / 400, mode="same")
    return level * noise / (np.std(noise) + 1e-9)


def crying(samples: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Cries of 0.5-1.3 s with breaths between: six harmonics over a 380-560 Hz f0 with vibrato."""
    out = np.zeros(samples)
    start = 0
    while start < samples:
        t = np.arange(min(int(rng.uniform(0.5, 1.3) * rate), samples - start)) / rate
        f0 = rng.uniform(380, 560) * (1 + 0.04 * np.sin(2 * np.pi * rng.uniform(4, 8) * t))
        f0 *= 1 + 0.15 * np.sin(np.pi * t / max(t[-1], 1e-3))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        cry = sum(0.7**k * np.sin(k * phase) for k in range(1, 7))
        out[start : start + len(t)] = 0.08 * np.sin(np.pi * np.arange(len(t)) / len(t)) ** 0.5 * cry
        start += len(t) + int(rng.uniform(0.15, 0.45) * rate)
    return out


def int16(signal: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)


def run(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_crying_baby_is_one_on_and_one_off_from_sliced_recordings_to_the_broker(tmp_path):
    # 1. Recordings, 30 s each, as a phone makes them; sliced into 5 s clips at 22,050 Hz.
    data = tmp_path / "data"
    for n in range(1, 5):
        rng = np.random.default_rng(n)
        phone = 44100
        write_wav(
            tmp_path / f"cry{n}.wav", int16(room(30 * phone, rng) + crying(30 * phone, phone, rng)), phone
        )
        write_wav(tmp_path / f"quiet{n}.wav", int16(room(30 * phone, rng)), phone)
        for label, stem, speaker in (("crying", "cry", "baby"), ("quiet", "quiet", "room")):
            cut = ("--fixed", 5000, "--hop_ms", 2000, "--sample_rate", RATE)
            where = ("--out", data, "--label", label, "--speaker", f"{speaker}{n}")
            run(ROOT / "tools" / "slice.py", tmp_path / f"{stem}{n}.wav", *where, *cut)
    assert len(list((data / "crying").glob("*.wav"))) == len(list((data / "quiet").glob("*.wav"))) == 52

    # 2. A crying/quiet model for 5 s clips at 22,050 Hz.
    work = tmp_path / "work"
    trained = run(ROOT / "tools" / "train.py", "--data_url=", "--data_dir", data, "--work_dir", work,
                  "--wanted_words", "crying,quiet", "--silence_percentage", 0, "--unknown_percentage", 0,
                  "--sample_rate", RATE, "--clip_duration_ms", 5000, "--window_size_ms", 40,
                  "--window_stride_ms", 20, "--how_many_training_steps", "60,20",
                  "--learning_rate", "0.001,0.0001", "--eval_step_interval", 40, "--batch_size", 20,
                  "--validation_percentage", 25, "--testing_percentage", 25)  # fmt: skip
    bundle = work / "models" / "ds_cnn.kwsd"
    assert bundle.exists(), trained.stderr[-3000:]

    # 3. The nursery: 10 s quiet, 20 s crying, 20 s quiet, through an ALSA capture device.
    rng = np.random.default_rng(99)
    night = room(50 * RATE, rng)
    night[10 * RATE : 30 * RATE] += crying(20 * RATE, RATE, rng)
    fifo = tmp_path / "nursery.fifo"
    chunk = RATE * BLOCK_MS // 1000
    writer = alsa.PacedFifoWriter(fifo, rate_hz=SPEEDUP * RATE, frame_bytes=2, chunk_frames=chunk)
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("nursery", fifo))
    mosquitto = broker.MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    subscriber = broker.Subscriber(mosquitto.port, "#", client_id="parent", clean=True).wait_subscribed()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {bundle}\n"
        f"audio:\n  device: nursery\n  block_ms: {BLOCK_MS}\n"
        "detection:\n  clip_stride_ms: 500\n  average_window_ms: 1500\n  threshold: 0.8\n"
        "  states:\n    crying: {on_threshold: 0.7, off_threshold: 0.3, min_on_ms: 1000, min_off_ms: 3000}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {mosquitto.port}\n  device_id: nursery\n  spool_dir: null\n"
        "  home_assistant:\n    enabled: true\n"
        f"capture:\n  enabled: true\n  directory: {tmp_path / 'captures'}\n  pre_ms: 6000\n  post_ms: 500\n"
    )
    kwsd = Daemon(config, {**alsa.capture_env(conf), "PYTHONPATH": str(ROOT)})
    daemon = kwsd.process

    def state_messages():
        return [m.payload for m in subscriber.messages if m.topic == "kwsd/nursery/state/crying"]

    try:
        kwsd.wait_for_line("capturing from nursery", PATIENCE_S)
        deadline = time.monotonic() + PATIENCE_S
        writer.start(int16(night).tobytes())
        assert writer.payload_done.wait(PATIENCE_S)
        while "off" not in state_messages():  # what the audio produces, not a time
            assert daemon.poll() is None and time.monotonic() < deadline + PATIENCE_S, kwsd.log
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(PATIENCE_S) == 0, kwsd.log
        messages = subscriber.wait_for(
            lambda ms: [m.payload for m in ms if m.topic.endswith("/status")][-1:] == ["offline"],
            timeout_s=PATIENCE_S,
        )
    finally:
        writer.stop()
        kwsd.finish()
        subscriber.close()
        mosquitto.stop()
    text = kwsd.log
    assert "Traceback" not in text

    # One on when the crying starts, one off when it stops, the state retained.
    assert state_messages() == ["on", "off"]
    events = [json.loads(m.payload) for m in messages if m.topic == "kwsd/nursery/detection"]
    changes = [e for e in events if e["label"] == "crying"]
    assert [e["state"] for e in changes] == ["on", "off"], events
    on, off = changes
    # Audio time from the first sample the device delivered: the crying is 10-30 s. A 5 s clip
    # hears it some seconds after it starts and for up to 5 s after it stops.
    assert 10_000 <= on["started_audio_time_ms"] <= 16_000, on
    assert 30_000 <= off["ended_audio_time_ms"] <= 36_000, off
    assert 16_000 <= off["duration_ms"] <= 26_000, off
    # Captured where the crying turned on (its off is no new sound to review); "quiet" is an
    # ordinary label here, kept at each of its detections.
    kept = sorted((tmp_path / "captures" / "pending" / "crying").glob("*.json"))
    assert [json.loads(p.read_text())["kind"] for p in kept] == ["state_on"]
    # Home Assistant: crying is a binary sound sensor on the state topic.
    sensors = [json.loads(m.payload) for m in messages if m.topic.startswith("homeassistant/binary_sensor/")]
    assert [(s["name"], s["device_class"], s["state_topic"]) for s in sensors] == [
        ("crying", "sound", "kwsd/nursery/state/crying")
    ]
