"""``kwsd wyoming``: the Wyoming wake-word server, driven by the wyoming package's own client.

In process over TCP on a free loopback port (``tcp://127.0.0.1:0``), and as ``python -m kwsd
wyoming --uri stdio://`` in a subprocess. The oracle for what should be detected is kwsd's own
pipeline on the same audio at the same settings. Nothing here sleeps: every wait is on an event,
under a generous timeout.
"""

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("wyoming")

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event, async_write_event
from wyoming.info import Describe, Info
from wyoming.wake import Detect, Detection, NotDetected

from kwsd import __version__
from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.cli import EXIT_BAD_SETTING, EXIT_MISSING_DEPENDENCY
from kwsd.daemon import prepare_model
from kwsd.pipeline import build_pipeline
from kwsd.wyoming_server import ServedModel, WakeServer, WakeServerSettings, announce

ROOT = Path(__file__).resolve().parents[1]
DEMO_WAV = demo_wav_path()
RATE_HZ = 16000
#: Samples per chunk, as Home Assistant sends them.
CHUNK_SAMPLES = 1024
#: Every wait's bound: a busy 2-core machine runs the 36 s demo in a few seconds.
TIMEOUT_S = 600
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


@pytest.fixture(scope="module")
def prepared():
    return prepare_model(None)


def served(prepared, gate=None):
    """The server's settings for what prepare_model loaded, as ``kwsd wyoming`` makes them."""
    return WakeServerSettings(
        tuple(ServedModel(m.bundle, m.detection, m.key) for m in prepared.models), gate=gate
    )


@pytest.fixture(scope="module")
def settings(prepared):
    return served(prepared)


@pytest.fixture(scope="module")
def demo():
    return read_wav(DEMO_WAV, RATE_HZ)


def oracle(prepared, samples):
    """What kwsd's pipeline itself detects in ``samples`` (16 kHz mono int16): (label, ms)."""
    pipeline = build_pipeline(prepared.bundle, prepared.detection, classifier=prepared.classifier)
    return [(d.label, d.audio_time_ms) for d in pipeline.feed(samples) if d.state is None]


def truth():
    rows = [line.split(",") for line in DEMO_WAV.with_suffix(".txt").read_text().splitlines()]
    return [(label.strip(), float(ms)) for label, ms in rows]


def serve(settings, body):
    """Run ``body(host, port)`` against a server on a free loopback port; its result."""

    async def main():
        server = WakeServer(settings)
        uri = await server.start("tcp://127.0.0.1:0")
        host, port = uri.removeprefix("tcp://").split(":")
        try:
            return await asyncio.wait_for(body(host, int(port)), TIMEOUT_S)
        finally:
            await server.close()

    return asyncio.run(main())


async def send_audio(client, audio: bytes, *, rate=RATE_HZ, width=2, channels=1, samples=CHUNK_SAMPLES):
    frame_bytes = width * channels
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = samples * frame_bytes
    for start in range(0, len(audio), step):
        chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=audio[start : start + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())


async def replies(client):
    """Every event the server sends until it answers a ``describe`` (sent here): events on one
    connection are handled in order, so everything before it has been answered."""
    await client.write_event(Describe().event())
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"connection closed after {events}"
        if Info.is_type(event.type):
            return events
        events.append(event)


def heard(events):
    """The detections as (name, timestamp), and whether not-detected came."""
    found = [
        (d.name, d.timestamp) for d in map(Detection.from_event, (e for e in events if e.type == "detection"))
    ]
    return found, any(NotDetected.is_type(e.type) for e in events)


async def detect_over(host, port, audio, **audio_format):
    async with AsyncTcpClient(host, port) as client:
        await send_audio(client, audio, **audio_format)
        return await replies(client)


def test_describe_names_each_keyword_of_the_model(settings):
    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await client.read_event())

    info = serve(settings, body)
    bundle = read_bundle(demo_bundle_path())
    (program,) = info.wake
    assert (program.name, program.installed, program.version) == ("kwsd", True, __version__)
    assert program.attribution.name == "kwsd"
    assert program.attribution.url == "https://github.com/kwsd/kwsd"
    assert [m.name for m in program.models] == KEYWORDS  # not _silence_ or _unknown_
    people = bundle.provenance["dataset"]["sources"]["people"]["attribution"]
    for model in program.models:
        assert model.version == bundle.sha256[:12]
        assert model.phrase == model.description == model.name
        assert (model.installed, model.languages) == (True, [])
        assert model.attribution.name == people  # the Speech Commands licence text
    assert (info.asr, info.tts, info.satellite) == ([], [], None)


def test_the_demo_words_come_back_as_the_pipeline_hears_them(settings, prepared, demo):
    events = serve(settings, lambda host, port: detect_over(host, port, demo.astype("<i2").tobytes()))
    found, not_detected = heard(events)
    assert found == oracle(prepared, demo)
    assert len(found) == 6 and not not_detected  # the model hears 6 of the 10 (README, "Figures")
    for name, timestamp in found:
        # Stamped at the end of the window that fired (990 ms after its start), which began
        # within 750 ms of the word's clip start.
        spoken = [label for label, ms in truth() if abs(timestamp - 990 - ms) <= 750]
        assert spoken == [name]
    assert all(e.type == "detection" for e in events)


def test_48_khz_stereo_gives_the_same_words_as_16_khz_mono(settings, prepared, demo):
    import soxr

    left = soxr.resample(demo.astype(np.float32) / 32768, RATE_HZ, 48000, quality="HQ")
    right = left * 0.5  # averaged with the left: 0.75 of the 16 kHz level
    stereo = np.clip(np.rint(np.stack([left, right], axis=1) * 32768), -32768, 32767).astype("<i2")
    events = serve(
        settings,
        lambda host, port: detect_over(host, port, stereo.tobytes(), rate=48000, channels=2, samples=3072),
    )
    found, _ = heard(events)
    expected = oracle(prepared, demo)
    assert [name for name, _ in found] == [name for name, _ in expected]
    for (_, got), (_, want) in zip(found, expected, strict=True):
        assert abs(got - want) <= 100  # a few 20 ms strides: level and resampling move the peak


def test_each_client_has_its_own_stream(settings, prepared, demo):
    silence = np.zeros(7 * RATE_HZ, np.int16)
    later = np.concatenate([silence, demo[: 12 * RATE_HZ]])

    async def body(host, port):
        # Interleaved chunk by chunk on the loop, so a shared state would mix them up.
        return await asyncio.gather(
            detect_over(host, port, demo.astype("<i2").tobytes()),
            detect_over(host, port, later.astype("<i2").tobytes()),
            detect_over(host, port, silence.astype("<i2").tobytes()),
        )

    first, second, third = serve(settings, body)
    assert heard(first) == (oracle(prepared, demo), False)
    assert heard(second) == (oracle(prepared, later), False)
    assert heard(third) == ([], True)
    assert heard(second)[0][0][1] > 7000  # its own audio time, from its own audio-start


def test_detect_reports_only_the_names_asked_for(settings, prepared, demo):
    expected = oracle(prepared, demo)
    wanted = [expected[0][0], expected[-1][0]]

    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Detect(names=[*wanted, "hey_jarvis"]).event())
            await send_audio(client, demo.astype("<i2").tobytes())
            return await replies(client)

    events = serve(settings, body)
    error = Error.from_event(events[0])
    assert error.code == "unknown-wake-word"
    assert error.text == (
        "detect: 'hey_jarvis': not a keyword of model demo (it has yes, no, up, down, left, right, "
        "on, off, stop, go)"
    )
    found, _ = heard(events[1:])
    assert found == [hit for hit in expected if hit[0] in wanted]


def test_silence_gets_not_detected_at_audio_stop(settings):
    events = serve(settings, lambda host, port: detect_over(host, port, bytes(4 * RATE_HZ)))
    assert [e.type for e in events] == ["not-detected"]


def test_a_second_stream_on_a_connection_starts_afresh(settings, prepared, demo):
    part = demo[: 6 * RATE_HZ].astype("<i2").tobytes()

    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            await send_audio(client, part)
            first = await replies(client)
            await send_audio(client, part)
            return first, await replies(client)

    first, second = serve(settings, body)
    assert heard(first) == heard(second) == (oracle(prepared, demo[: 6 * RATE_HZ]), False)


# Bad input: one client's mistake, answered or ended, and the server goes on serving.


async def still_serving(host, port):
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        return Info.is_type((await client.read_event()).type)


def no_tracebacks(caplog):
    assert [r for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize(
    ("audio_format", "problem"),
    [
        ({"rate": 0, "width": 2, "channels": 1}, "rate: expected 1000..384000 Hz, got 0"),
        ({"rate": -16000, "width": 2, "channels": 1}, "rate: expected 1000..384000 Hz, got -16000"),
        ({"rate": 16000, "width": 3, "channels": 1}, "width: expected 1, 2 or 4 bytes per sample, got 3"),
        ({"rate": 16000, "width": 8, "channels": 1}, "width: expected 1, 2 or 4 bytes per sample, got 8"),
        ({"rate": 16000, "width": 0, "channels": 1}, "width: expected 1, 2 or 4 bytes per sample, got 0"),
        ({"rate": 16000, "width": 2, "channels": 0}, "channels: expected at least 1, got 0"),
        ({"rate": "16000", "width": 2, "channels": 1}, "rate: expected an integer, got '16000'"),
    ],
)
def test_an_impossible_format_is_answered_with_an_error(settings, caplog, audio_format, problem):
    caplog.set_level(logging.INFO)
    audio = bytes(RATE_HZ)

    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            # At audio-start: the whole stream is refused (its chunks raise nothing more).
            start = Event("audio-start", audio_format)
            await client.write_event(start)
            chunk = Event("audio-chunk", audio_format, audio)
            await client.write_event(chunk)
            await client.write_event(AudioStop().event())
            at_start = await replies(client)
            # At a chunk of a stream that started well: the rest of it is ignored.
            await client.write_event(AudioStart(rate=RATE_HZ, width=2, channels=1).event())
            await client.write_event(AudioChunk(rate=RATE_HZ, width=2, channels=1, audio=audio).event())
            await client.write_event(chunk)
            await client.write_event(AudioChunk(rate=RATE_HZ, width=2, channels=1, audio=audio).event())
            await client.write_event(AudioStop().event())
            at_chunk = await replies(client)
            return at_start, at_chunk, await still_serving(host, port)

    at_start, at_chunk, serving = serve(settings, body)
    assert [Error.from_event(e) for e in at_start] == [Error(f"audio-start: {problem}", "bad-audio-format")]
    assert [Error.from_event(e) for e in at_chunk] == [Error(f"audio-chunk: {problem}", "bad-audio-format")]
    assert serving
    no_tracebacks(caplog)


def test_a_chunk_before_audio_start_is_answered_with_an_error(settings, caplog):
    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            for _ in range(3):
                await client.write_event(
                    AudioChunk(rate=RATE_HZ, width=2, channels=1, audio=bytes(640)).event()
                )
            await client.write_event(AudioStop().event())
            return await replies(client)

    events = serve(settings, body)
    assert [Error.from_event(e) for e in events] == [  # one error, not one per chunk
        Error("audio-chunk before audio-start: ignored until the next audio-start", "no-audio-start")
    ]
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("sent", "problem"),
    [
        (b"{not json\n", "an event header that is not JSON"),
        (b'["audio-start"]\n', "an event header without a string 'type'"),
        (
            b'{"type": "audio-chunk", "payload_length": 99999999999}\n',
            "audio-chunk: payload_length: expected 0..4194304 bytes, got 99999999999",
        ),
        (b'{"type": "describe", "data_length": 5}\nabcde', "describe: its data is not JSON"),
    ],
)
def test_a_malformed_event_closes_that_connection_only(settings, caplog, sent, problem):
    caplog.set_level(logging.INFO)

    async def body(host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(sent)
        await writer.drain()
        answer = await async_read_event(reader)
        end = await reader.read()
        writer.close()
        return answer, end, await still_serving(host, port)

    answer, end, serving = serve(settings, body)
    assert Error.from_event(answer) == Error(f"{problem}; closing the connection", "bad-event")
    assert end == b""  # closed by the server
    assert serving
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].endswith(f": {problem}; closing the connection")
    no_tracebacks(caplog)


def test_a_connection_dropped_mid_stream_is_one_log_line(settings, caplog, demo):
    caplog.set_level(logging.INFO)

    async def body(host, port):
        dropped = asyncio.Event()

        class Watch(logging.Handler):  # the server logs on this loop's thread
            def emit(self, record):
                if "dropped" in record.getMessage():
                    dropped.set()

        logging.getLogger("kwsd.wyoming_server").addHandler(watch := Watch())
        _reader, writer = await asyncio.open_connection(host, port)
        await async_write_event(AudioStart(rate=RATE_HZ, width=2, channels=1).event(), writer)
        await async_write_event(AudioChunk(RATE_HZ, 2, 1, demo[:RATE_HZ].tobytes()).event(), writer)
        writer.write(b'{"type": "audio-chunk", "data": {"rate": 16000, "width": 2, "channels": 1}, ')
        writer.write(b'"payload_length": 2048}\n' + bytes(100))  # then gone, mid-payload
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        # The other client is served, the dropped one's end logged, in either order: wait for both.
        serving = await still_serving(host, port)
        await dropped.wait()
        logging.getLogger("kwsd.wyoming_server").removeHandler(watch)
        return serving

    assert serve(settings, body)
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and dropped[0].endswith(": connection dropped inside an event")
    no_tracebacks(caplog)


def test_a_unix_socket_serves_as_tcp_does(settings, tmp_path):
    from wyoming.client import AsyncUnixClient

    path = tmp_path / "kwsd.sock"

    async def main():
        server = WakeServer(settings)
        assert await server.start(f"unix://{path}") == f"unix://{path}"
        try:
            async with AsyncUnixClient(str(path)) as client:
                await send_audio(client, bytes(2 * RATE_HZ))
                return await asyncio.wait_for(replies(client), TIMEOUT_S)
        finally:
            await server.close()

    assert [e.type for e in asyncio.run(main())] == ["not-detected"]


def test_without_zeroconf_the_server_says_so_once(caplog, monkeypatch):
    import importlib.util

    caplog.set_level(logging.INFO)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "zeroconf" else real(name, *a)
    )
    assert asyncio.run(announce("127.0.0.1", 10400, "kwsd-test")) is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "INFO",
            "zeroconf: not announcing (the zeroconf package is not installed: pip install 'kwsd[wyoming]')",
        )
    ]


# The command.


def kwsd_env():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_stdio_serves_one_client_on_stdin_and_stdout(prepared, demo):
    part = demo[: 10 * RATE_HZ]

    async def body():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kwsd", "wyoming", "--uri", "stdio://",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=kwsd_env(),
        )  # fmt: skip

        class Pipe:  # the client's side of the pipes, as wyoming's client reads and writes
            async def write_event(self, event):
                await async_write_event(event, proc.stdin)

            async def read_event(self):
                return await async_read_event(proc.stdout)

        client = Pipe()
        await client.write_event(Describe().event())
        info = Info.from_event(await client.read_event())
        await send_audio(client, part.astype("<i2").tobytes())
        events = await replies(client)
        proc.stdin.close()
        stderr = await proc.stderr.read()
        return info, events, await proc.wait(), stderr

    info, events, code, stderr = asyncio.run(asyncio.wait_for(body(), TIMEOUT_S))
    assert [m.name for m in info.wake[0].models] == KEYWORDS
    assert heard(events) == (oracle(prepared, part), False)
    assert code == 0, stderr


def test_bad_uri_and_bad_model_fail_as_kwsd_run_would(tmp_path):
    def kwsd(*args):
        return subprocess.run(
            [sys.executable, "-m", "kwsd", *args],
            capture_output=True,
            text=True,
            env=kwsd_env(),
            timeout=TIMEOUT_S,
            check=False,
        )

    bad_uri = kwsd("wyoming", "--uri", "http://x:1")
    assert (bad_uri.returncode, bad_uri.stderr) == (
        EXIT_BAD_SETTING,
        "kwsd: error: --uri http://x:1: expected tcp://HOST:PORT, unix://PATH or stdio://\n",
    )
    config = tmp_path / "config.yaml"
    with socket.socket() as taken:  # a port another process holds: temporary, systemd retries (75)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = kwsd("wyoming", "--uri", f"tcp://127.0.0.1:{port}", "--no-zeroconf")
    assert busy.returncode == 75, busy.stderr
    assert busy.stderr.startswith(f"kwsd: error: --uri tcp://127.0.0.1:{port}: cannot listen there (")
    assert "Traceback" not in busy.stderr
    config.write_text(f"model: {tmp_path / 'missing.kwsd'}\n")
    checked = kwsd("check-config", str(config))
    served = kwsd("wyoming", "-c", str(config), "--no-zeroconf")
    assert checked.returncode != 0
    assert (served.returncode, served.stderr) == (checked.returncode, checked.stderr)
    given = kwsd("wyoming", "-m", str(tmp_path / "missing.kwsd"), "--no-zeroconf")
    assert given.returncode == checked.returncode and "missing.kwsd" in given.stderr
    config.write_text("detection:\n  label_thresholds:\n    hey_jarvis: 0.5\n")
    checked = kwsd("check-config", str(config))
    served = kwsd("wyoming", "-c", str(config), "--no-zeroconf")
    assert checked.returncode == 78
    assert (served.returncode, served.stderr) == (checked.returncode, checked.stderr)


def test_without_the_wyoming_package_one_line_and_exit_69():
    code = (
        "import sys\n"
        "class NoWyoming:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'wyoming' or name.startswith('wyoming.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoWyoming())\n"
        "from kwsd.cli import main\n"
        "sys.exit(main(['wyoming', '--no-zeroconf']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=kwsd_env(),
        timeout=TIMEOUT_S,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        EXIT_MISSING_DEPENDENCY,
        "kwsd: error: kwsd wyoming needs the wyoming package: pip install 'kwsd[wyoming]'\n",
    )


def test_kwsd_and_kwsd_run_never_import_wyoming():
    code = (
        "import sys, kwsd, kwsd.cli, kwsd.daemon\n"
        "from kwsd.cli import _build_parser\n"
        "_build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wyoming', 'zeroconf')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=kwsd_env(),
        timeout=TIMEOUT_S,
        check=True,
    )
    assert result.stdout == "[]\n"


def test_32_bit_samples_give_exactly_the_16_bit_answers(settings, prepared, demo):
    part = demo[: 10 * RATE_HZ]
    wide = (part.astype("<i4") << 16).tobytes()  # the same values, full scale at 2**31
    events = serve(settings, lambda host, port: detect_over(host, port, wide, width=4))
    assert heard(events) == (oracle(prepared, part), False)


def test_pcm_converter_reads_each_width_as_signed_and_waits_for_whole_frames():
    from kwsd.audio import PcmConverter

    eight = PcmConverter(16000, 1, 1, 16000)
    assert eight.convert(bytes([1, 255, 128, 127])).tolist() == [256, -256, -32768, 32512]
    stereo = PcmConverter(16000, 2, 2, 16000)
    frames = np.array([1000, 3000, -2, -4, 7], "<i2").tobytes()
    assert stereo.convert(frames[:3]).tolist() == []  # not one whole frame yet
    assert stereo.convert(frames[3:]).tolist() == [2000, -3]  # the odd sample waits
    assert stereo.flush().tolist() == []


def test_the_command_serves_tcp_until_sigterm():
    import re
    import signal

    async def body():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kwsd", "-v", "wyoming", "--uri", "tcp://127.0.0.1:0", "--no-zeroconf",
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=kwsd_env(),
        )  # fmt: skip
        lines = []
        while not (found := re.search(r"on tcp://127\.0\.0\.1:(\d+)$", lines[-1] if lines else "")):
            line = await proc.stderr.readline()
            assert line, f"kwsd wyoming ended before it listened: {lines}"
            lines.append(line.decode().rstrip("\n"))
        serving = await still_serving("127.0.0.1", int(found.group(1)))
        proc.send_signal(signal.SIGTERM)
        rest = (await proc.stderr.read()).decode().splitlines()
        return serving, await proc.wait(), lines + rest

    serving, code, log_lines = asyncio.run(asyncio.wait_for(body(), TIMEOUT_S))
    assert serving and code == 0, log_lines
    assert log_lines[-1] == "kwsd: INFO: wyoming: stopping"
    assert not any("Traceback" in line for line in log_lines)


# Several models: every model's keywords served, each client with its own pipeline of them all.


def renamed_demo(path, suffix, name):
    """The demo's network and front end under other keyword names (``yes`` -> ``yes<suffix>``),
    written to ``path``: what it hears is what the demo hears, renamed."""
    from kwsd.bundle import make_bundle, write_bundle

    demo = read_bundle(demo_bundle_path())
    labels = [label if label.startswith("_") else label + suffix for label in demo.labels]
    bundle = make_bundle(demo.tflite, labels, demo.frontend, name=name, tool="test", detection=demo.detection)
    return write_bundle(bundle, path)


@pytest.fixture(scope="module")
def again(tmp_path_factory):
    return renamed_demo(tmp_path_factory.mktemp("models") / "again.kwsd", "_again", "again")


@pytest.fixture(scope="module")
def two(again):
    return prepare_model(None, [str(demo_bundle_path()), str(again)])


def both_heard(prepared, samples):
    """What the demo alone detects in ``samples``, then its renamed twin at the same time."""
    return [hit for name, ms in oracle(prepared, samples) for hit in ((name, ms), (f"{name}_again", ms))]


def test_two_models_are_described_each_keyword_with_its_own_bundle(two):
    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await client.read_event())

    (program,) = serve(served(two), body).wake
    assert program.description == "kwsd keyword spotting (demo, again)"
    assert [m.name for m in program.models] == [*KEYWORDS, *(f"{word}_again" for word in KEYWORDS)]
    demo, again = (m.bundle for m in two.models)
    people = demo.provenance["dataset"]["sources"]["people"]["attribution"]
    for model in program.models:
        bundle = again if model.name.endswith("_again") else demo
        assert model.version == bundle.sha256[:12]
        # Each keyword credited as its bundle asks: the demo's data sets, the other's name.
        assert model.attribution.name == (people if bundle is demo else "again")
        assert model.phrase == model.description == model.name.replace("_", " ")


def test_two_models_each_report_their_words_to_each_client(two, prepared, demo):
    part = demo[: 12 * RATE_HZ]

    async def body(host, port):
        return await asyncio.gather(
            detect_over(host, port, demo.astype("<i2").tobytes()),
            detect_over(host, port, part.astype("<i2").tobytes()),
        )

    whole, partial = serve(served(two), body)
    assert heard(whole) == (both_heard(prepared, demo), False)
    assert heard(partial) == (both_heard(prepared, part), False)
    assert {name for name, _ in heard(whole)[0]} >= {"yes", "yes_again", "go", "go_again"}


def test_detect_chooses_among_every_models_keywords(two, prepared, demo):
    expected = both_heard(prepared, demo)
    wanted = ["yes", "go_again"]

    async def body(host, port):
        async with AsyncTcpClient(host, port) as client:
            await client.write_event(Detect(names=[*wanted, "hey_jarvis"]).event())
            await send_audio(client, demo.astype("<i2").tobytes())
            return await replies(client)

    events = serve(served(two), body)
    assert Error.from_event(events[0]) == Error(
        "detect: 'hey_jarvis': not a keyword of the models demo, again (they have "
        + ", ".join([*KEYWORDS, *(f"{word}_again" for word in KEYWORDS)])
        + ")",
        "unknown-wake-word",
    )
    found, _ = heard(events[1:])
    assert found == [hit for hit in expected if hit[0] in wanted]
    assert [name for name, _ in found] == wanted


def test_the_config_s_models_and_gate_serve_on_stdio(tmp_path, two, again, demo):
    from kwsd.gate import GateSettings
    from kwsd.pipeline import Model, MultiPipeline

    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  - {demo_bundle_path()}\n  - {again}\naudio:\n  gate:\n    enabled: true\n")
    # Silence first, which the gate keeps from the models, then words.
    audio = np.concatenate([np.zeros(3 * RATE_HZ, np.int16), demo[: 7 * RATE_HZ]])
    gated = MultiPipeline(
        [Model(m.key, m.bundle.frontend, m.classifier, m.bundle.labels, m.detection) for m in two.models],
        gate=GateSettings(enabled=True),
    )
    expected = [(d.label, d.audio_time_ms) for d in gated.feed(audio)]
    skipped = gated.stats.gate_skipped

    async def body():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kwsd", "-vv", "wyoming", "-c", str(config), "--uri", "stdio://",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=kwsd_env(),
        )  # fmt: skip

        class Pipe:
            async def write_event(self, event):
                await async_write_event(event, proc.stdin)

            async def read_event(self):
                return await async_read_event(proc.stdout)

        client = Pipe()
        await send_audio(client, audio.astype("<i2").tobytes())
        events = await replies(client)
        proc.stdin.close()
        stderr = await proc.stderr.read()
        return events, await proc.wait(), stderr.decode()

    events, code, stderr = asyncio.run(asyncio.wait_for(body(), TIMEOUT_S))
    assert code == 0, stderr
    assert heard(events) == (expected, False)
    assert {name for name, _ in expected} == {"yes", "yes_again", "no", "no_again"}
    assert skipped > 100  # the 3 s of silence: 150 windows a model, less the gate's hangover
    assert "kwsd: INFO: audio.gate: gate on (margin 12 dB, hangover 250 ms," in stderr
    assert "kwsd: INFO: wyoming: serving demo (yes, no, " in stderr
    assert "; again (yes_again, no_again, " in stderr
    assert (
        f"stdio: audio-stop after 10000 ms of audio: {2 * 451} windows ({skipped} skipped by the audio gate)"
        in stderr
    )


def test_a_keyword_in_two_models_is_refused_at_start_naming_both(tmp_path, again):
    demo = demo_bundle_path()
    float_demo = demo.with_name("demo-float.kwsd")

    def kwsd(*args):
        return subprocess.run(
            [sys.executable, "-m", "kwsd", "wyoming", "--uri", "tcp://127.0.0.1:0", "--no-zeroconf", *args],
            capture_output=True, text=True, env=kwsd_env(), timeout=TIMEOUT_S, check=False,
        )  # fmt: skip

    same_keyword = kwsd("-m", str(demo), "-m", str(float_demo))
    assert (same_keyword.returncode, same_keyword.stderr) == (
        78,
        f"kwsd: error: <defaults>: models: the keyword 'yes' is in two models, {demo} and {float_demo}; "
        "each keyword may be in one loaded model only\n",
    )
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  - {again}\n  - {again}\n")
    twice = kwsd("-c", str(config))
    assert (twice.returncode, twice.stderr) == (
        78,
        f"kwsd: error: {config}: models: {again} is given twice; each model may be loaded once\n",
    )
