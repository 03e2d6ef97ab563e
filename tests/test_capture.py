"""MicrophoneSource through the real PortAudio and ALSA, with devices made of files, FIFOs and JACK.

Each test writes an asound.conf (kwsd_tools.harness.alsa), then runs the capture in a subprocess whose
ALSA_CONFIG_PATH includes it (PortAudio enumerates devices when sounddevice is imported),
and compares what the subprocess read with what was fed.

Alignment: on these devices the first sample read is the first sample fed (offset 0 was
measured for the file, FIFO and stereo cases); the tests still search the offset (within
``MAX_OFFSET_SAMPLES``) and then require exact equality over the overlap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from kwsd.sources import DeviceInfo
from kwsd_tools.harness import alsa

needs_portaudio = pytest.mark.skipif(
    not alsa.portaudio_available(), reason="libportaudio2 is not installed (no PortAudio to capture through)"
)

RATE_HZ = 16000
ALL_RATES = [8000, 16000, 22050, 32000, 44100, 48000]
MAX_OFFSET_SAMPLES = 4000


def noise(samples: int, seed: int) -> np.ndarray:
    """Random int16: an exact match at the wrong offset is impossible."""
    return np.random.default_rng(seed).integers(-20000, 20000, samples).astype(np.int16)


def find_offset(captured: np.ndarray, fed: np.ndarray) -> int:
    """The k with captured[i] == fed[i - k] (k > 0: captured starts with k extra samples)."""
    probe = 256
    for k in range(-MAX_OFFSET_SAMPLES, MAX_OFFSET_SAMPLES + 1):
        c = captured[max(k, 0) :][:probe]
        f = fed[max(-k, 0) :][:probe]
        if len(c) == probe and len(f) == probe and np.array_equal(c, f):
            return k
    raise AssertionError("the fed samples are nowhere in the capture")


def assert_same_audio(captured: np.ndarray, fed: np.ndarray, *, min_overlap: float = 0.95) -> int:
    """Exact equality over the overlap at the found offset; returns the offset."""
    k = find_offset(captured, fed)
    c = captured[max(k, 0) :]
    f = fed[max(-k, 0) :]
    n = min(len(c), len(f))
    assert n >= min_overlap * len(fed), f"overlap {n} of {len(fed)} fed samples (offset {k})"
    mismatches = np.flatnonzero(c[:n] != f[:n])
    assert mismatches.size == 0, f"offset {k}: {mismatches.size} samples differ, first at {mismatches[:5]}"
    return k


def describe(device: dict) -> str:
    """DeviceInfo.describe() of a device the subprocess returned as a dict."""
    return DeviceInfo(
        index=device["index"],
        name=device["name"],
        max_input_channels=device["max_input_channels"],
        default_rate_hz=device["default_rate_hz"],
        supported_rates_hz=tuple(device["supported_rates_hz"]),
    ).describe()


# --------------------------------------------------------------------------------------
# 1. 16 kHz mono, sample for sample.


@needs_portaudio
def test_16k_mono_file_is_captured_sample_for_sample(tmp_path: Path) -> None:
    fed = noise(2 * RATE_HZ, seed=1)
    (tmp_path / "in.raw").write_bytes(fed.astype("<i2").tobytes())
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", tmp_path / "in.raw"))
    # A plain file is read unpaced and, past its end, the device repeats stale buffer
    # contents: read exactly what was fed. The queue holds it all (no drops).
    runs, _ = alsa.run_capture(
        alsa.capture_env(conf),
        {
            "runs": [
                {
                    "source": {"device": "kwsdtest", "target_rate_hz": RATE_HZ, "queue_blocks": 1000},
                    "samples": len(fed),
                    "timeout_s": 10,
                }
            ]
        },
        tmp_path,
    )
    run = runs[0]
    assert run.error is None
    assert run.opened_rate_hz == RATE_HZ
    assert len(run.samples) == len(fed)
    assert run.samples.dtype == np.int16
    assert assert_same_audio(run.samples, fed) == 0
    assert run.overflows == 0
    # Not asserted: dropped blocks. Past the file's end the device goes on delivering stale
    # buffers as fast as it can until the source closes; on a busy machine the reader closes
    # late and over 1000 of them fill the queue and are dropped (counted, as they must be).
    # The fed audio is the first 100 blocks of the queue, and it arrived whole (above).


# --------------------------------------------------------------------------------------
# 2. A device that only does 48 kHz.


@pytest.fixture
def jack_server(tmp_path: Path):
    missing = alsa.jack_missing()
    if missing is not None:
        pytest.fail(
            f"{missing}: the 48 kHz-only device is a JACK port (apt-get install jackd2 libasound2-plugins)"
        )
    with alsa.JackServer(f"kwsdtest{os.getpid()}", rate_hz=48000, log_path=tmp_path / "jackd.log") as server:
        yield server


@needs_portaudio
def test_48k_only_device_is_opened_at_48k_and_resampled(tmp_path: Path, jack_server: alsa.JackServer) -> None:
    amplitude = 0.5
    burst_s = 1.0
    burst = amplitude * np.sin(2 * np.pi * 1000.0 * np.arange(int(48000 * burst_s)) / 48000)
    # JACK's dummy server runs in real time: on a machine whose cores are busy with other work
    # the capture can miss its deadline, which PortAudio reports as an overflow (counted, as it
    # must be). Such a run says nothing about resampling, so it is tried again, up to 3 times.
    overflows = []
    for attempt in range(3):
        (tmp_path / f"attempt{attempt}").mkdir()
        with alsa.JackFeeder(jack_server.name) as feeder:
            conf = alsa.write_asound_conf(
                tmp_path / "asound.conf", alsa.jack_pcm("kwsdtest48", feeder.port_name)
            )
            runs, probe = alsa.run_capture(
                alsa.capture_env(conf, jack_server=jack_server.name),
                {
                    "probe": {
                        "list": True,
                        "open": [
                            {"device": "kwsdtest48", "target_rate_hz": RATE_HZ, "open_rate_hz": RATE_HZ}
                        ],
                    },
                    "runs": [
                        {
                            "source": {"device": "kwsdtest48", "target_rate_hz": RATE_HZ},
                            "samples": 2 * RATE_HZ,
                            "timeout_s": 30,
                        }
                    ],
                },
                tmp_path / f"attempt{attempt}",
                on_ready=lambda _run, feeder=feeder: feeder.play(burst),
            )
        overflows.append((runs[0].overflows, runs[0].dropped_blocks))
        if overflows[-1] == (0, 0):
            break
    device = next(d for d in probe["devices"] if d["name"] == "kwsdtest48")
    assert (device["max_input_channels"], device["default_rate_hz"], device["supported_rates_hz"]) == (
        1,
        48000,
        [48000],
    )
    assert probe["open"] == [{"error": f"{describe(device)}: does not take 16000 Hz with 1 channel(s)"}]

    run = runs[0]
    assert run.error is None
    assert run.opened_rate_hz == 48000
    assert overflows[-1] == (0, 0), f"every attempt overflowed: {overflows}"
    x = run.samples.astype(np.float64) / 32768
    assert len(x) == 2 * RATE_HZ
    loud = np.flatnonzero(np.abs(x) > amplitude / 2)
    burst_samples = loud[-1] - loud[0] + 1
    assert abs(burst_samples - burst_s * RATE_HZ) <= 0.01 * burst_s * RATE_HZ, burst_samples
    steady = x[loud[0] + 1600 : loud[-1] - 1600]  # 100 ms in from each edge
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady)), n=1 << 20))
    peak_hz = np.argmax(spectrum) * RATE_HZ / (1 << 20)
    assert abs(peak_hz - 1000.0) <= 2.0, peak_hz
    level_db = 20 * np.log10(np.sqrt(np.mean(steady**2)) / (amplitude / np.sqrt(2)))
    assert abs(level_db) <= 1.0, level_db


# --------------------------------------------------------------------------------------
# 3. Stereo: one channel picked, or both mixed.


@needs_portaudio
def test_stereo_channel_pick_and_mix(tmp_path: Path) -> None:
    left, right = noise(RATE_HZ, seed=2), noise(RATE_HZ, seed=3)
    (tmp_path / "stereo.raw").write_bytes(np.stack([left, right], axis=1).astype("<i2").tobytes())
    conf = alsa.write_asound_conf(
        tmp_path / "asound.conf", alsa.file_pcm("kwsdstereo", tmp_path / "stereo.raw")
    )
    source = {"device": "kwsdstereo", "target_rate_hz": RATE_HZ, "channels": 2, "queue_blocks": 1000}
    runs, _ = alsa.run_capture(
        alsa.capture_env(conf),
        {
            "runs": [
                {"source": dict(source, channel=channel), "samples": RATE_HZ, "timeout_s": 10}
                for channel in (0, 1, "mix")
            ]
        },
        tmp_path,
    )
    assert [run.error for run in runs] == [None, None, None]
    mixed = np.rint((left.astype(np.float64) + right) / 2).astype(np.int16)  # half to even, as kwsd.audio
    assert assert_same_audio(runs[0].samples, left) == 0
    assert assert_same_audio(runs[1].samples, right) == 0
    assert assert_same_audio(runs[2].samples, mixed) == 0


# --------------------------------------------------------------------------------------
# 4. Finding devices; the errors list what exists.


@needs_portaudio
def test_find_device_and_list_devices(tmp_path: Path) -> None:
    (tmp_path / "in.raw").write_bytes(bytes(3200))
    conf = alsa.write_asound_conf(
        tmp_path / "asound.conf",
        alsa.file_pcm("kwsdtest", tmp_path / "in.raw"),
        alsa.file_pcm("kwsdtest-stereo", tmp_path / "in.raw"),
    )
    _, probe = alsa.run_capture(
        alsa.capture_env(conf),
        {
            "probe": {
                "list": True,
                "find": ["nosuch", "kwsd", "KWSDTEST", "Stereo", 1, 99, None],
                "open": [{"device": "kwsdtest", "target_rate_hz": RATE_HZ, "channels": 129}],
            }
        },
        tmp_path,
    )
    devices = probe["devices"]
    assert devices == [
        {
            "index": 0,
            "name": "kwsdtest",
            "max_input_channels": 128,
            "default_rate_hz": 44100,
            "supported_rates_hz": ALL_RATES,
        },
        {
            "index": 1,
            "name": "kwsdtest-stereo",
            "max_input_channels": 128,
            "default_rate_hz": 44100,
            "supported_rates_hz": ALL_RATES,
        },
    ]
    listing = "; ".join(describe(d) for d in devices)
    assert describe(devices[0]) == (
        "[0] kwsdtest: 128 in, default 44100 Hz, supports 8000, 16000, 22050, 32000, 44100, 48000 Hz"
    )
    assert probe["find"] == [
        {"error": f"no capture device matching 'nosuch'; the capture devices are: {listing}"},
        {"error": f"'kwsd' matches 2 capture devices: {listing}; give more of the name, or the index"},
        {"device": devices[0]},  # the exact name wins over the longer name that contains it
        {"device": devices[1]},
        {"device": devices[1]},
        {"error": f"no capture device with index 99; the capture devices are: {listing}"},
        {"device": devices[0]},  # PortAudio's default input: the first that works
    ]
    assert probe["open"] == [{"error": f"{describe(devices[0])}: cannot open 129 channels"}]


# --------------------------------------------------------------------------------------
# 5. Real time through a FIFO: nothing lost, nothing dropped.


@needs_portaudio
def test_paced_fifo_is_captured_whole_in_real_time(tmp_path: Path) -> None:
    fed = noise(2 * RATE_HZ, seed=4)
    fifo = tmp_path / "mic.fifo"
    block_frames = RATE_HZ * 20 // 1000  # MicrophoneSource's default block_ms: one read request
    with alsa.PacedFifoWriter(fifo, rate_hz=RATE_HZ, frame_bytes=2, chunk_frames=block_frames) as writer:
        conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", fifo))
        runs, _ = alsa.run_capture(
            alsa.capture_env(conf),
            # Read 100 ms of the silence that follows, so the whole 2 s must be there.
            {
                "runs": [
                    {
                        "source": {"device": "kwsdtest", "target_rate_hz": RATE_HZ},
                        "samples": len(fed) + RATE_HZ // 10,
                        "timeout_s": 8,
                    }
                ]
            },
            tmp_path,
            on_ready=lambda _run: writer.start(fed.astype("<i2").tobytes()),
        )
        assert writer.payload_done.is_set()
        assert writer.pipe_full_writes == 0  # the reader kept up: the pipe never filled
    run = runs[0]
    assert run.error is None
    assert (run.overflows, run.dropped_blocks) == (0, 0)
    assert assert_same_audio(run.samples, fed, min_overlap=1.0) == 0
    assert not run.samples[len(fed) :].any()
    # Paced, not read ahead: the blocks arrived over about the 2.1 s the writer took (read ahead,
    # they would all come at once; on a busy machine the writer's first chunks may be late).
    assert run.first_block_s is not None and run.last_block_s is not None
    assert run.last_block_s - run.first_block_s >= 1.5, (run.first_block_s, run.last_block_s)


# --------------------------------------------------------------------------------------
# 6. A device that stops delivering; a stream that PortAudio stops.


@needs_portaudio
def test_device_that_stops_delivering_reads_none_and_closes_at_once(
    tmp_path: Path, jack_server: alsa.JackServer
) -> None:
    """The JACK server dies under the capture: the stream stays "active" but no audio comes.

    read() keeps returning None (the listener's stall timeout notices), never hangs, and
    close() returns at once.
    """
    with alsa.JackFeeder(jack_server.name) as feeder:
        conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.jack_pcm("kwsdtest48", feeder.port_name))

        def kill_after_half_a_second(_run: int) -> None:
            feeder.play(np.full(48000 * 10, 0.25, np.float32))
            threading.Timer(0.5, jack_server.kill).start()

        runs, _ = alsa.run_capture(
            alsa.capture_env(conf, jack_server=jack_server.name),
            {
                "exit_at_once": True,
                "runs": [
                    {
                        "source": {"device": "kwsdtest48", "target_rate_hz": RATE_HZ},
                        "samples": 10 * RATE_HZ,
                        "timeout_s": 2.0,
                    }
                ],
            },
            tmp_path,
            on_ready=kill_after_half_a_second,
        )
    run = runs[0]
    assert run.error is None
    # Nothing after the kill (0.5 s in; a busy machine may run the timer late), where the
    # feeder had 10 s to give; close() returns instead of hanging.
    assert run.last_block_s is not None and run.last_block_s < 5.0
    assert 0.3 * RATE_HZ < len(run.samples) < 5.0 * RATE_HZ
    assert run.close_s < 5.0


@needs_portaudio
def test_stream_stopped_by_portaudio_raises_after_the_queued_audio(tmp_path: Path) -> None:
    """PortAudio stops a stream by itself when its device fails; here the capture script
    aborts the real stream behind the source's back (no device here fails that way on cue)."""
    fed = noise(2 * RATE_HZ, seed=5)
    fifo = tmp_path / "mic.fifo"
    with alsa.PacedFifoWriter(
        fifo, rate_hz=RATE_HZ, frame_bytes=2, chunk_frames=RATE_HZ * 20 // 1000
    ) as writer:
        conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdtest", fifo))
        runs, _ = alsa.run_capture(
            alsa.capture_env(conf),
            {
                "runs": [
                    {
                        "source": {"device": "kwsdtest", "target_rate_hz": RATE_HZ},
                        "samples": len(fed),
                        "timeout_s": 4,
                        "abort_stream_after_samples": RATE_HZ // 4,
                    }
                ]
            },
            tmp_path,
            on_ready=lambda _run: writer.start(fed.astype("<i2").tobytes()),
        )
    run = runs[0]
    device = run.device
    assert run.error == f"{describe(device)}: the capture stream stopped (device unplugged or failing?)"
    # Everything captured before the stop is delivered first, in order.
    assert RATE_HZ // 4 <= len(run.samples) < len(fed)
    assert np.array_equal(run.samples, fed[: len(run.samples)])


# --------------------------------------------------------------------------------------
# 7. Importing kwsd.sources loads no audio library.


def test_import_loads_no_audio_library() -> None:
    code = (
        "import sys, kwsd.sources; print(sorted({'sounddevice', 'soxr', '_sounddevice'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=alsa.capture_env(Path("/dev/null")),
    )
    assert out.stdout.strip() == "[]"
