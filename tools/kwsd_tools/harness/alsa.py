"""Capture devices without a sound card, for tests of the real PortAudio path.

PortAudio enumerates ALSA devices when ``sounddevice`` is imported, so a test writes an
``asound.conf`` and runs the capture in a subprocess whose ``ALSA_CONFIG_PATH`` lists the
system's ``alsa.conf`` first and this file second (:func:`capture_env`).

The devices:

* :func:`file_pcm`: ``type file`` over the ``null`` slave with ``infile``: a capture device
  whose samples are read from a file or FIFO, in whatever rate, format and channel count
  the client opens it with (PortAudio sees 128 channels and every rate). A plain file is
  read as fast as the reader pulls (unpaced); past its end the device repeats stale buffer
  contents (not silence), so read exactly as much as the file holds. A FIFO is paced by its
  writer (:class:`PacedFifoWriter`, which explains the chunk size it needs). Opening the
  device opens the FIFO, so the writer must hold it open before ``import sounddevice``, and
  a stream blocks on an empty FIFO (``stop()`` included).
* :func:`jack_pcm`: the ``type jack`` plugin from libasound2-plugins, capturing one port of
  a JACK server with the dummy backend (:class:`JackServer`, no hardware). It takes only
  the server's rate, so a server at 48 kHz is a 48 kHz-only device, as cheap USB mics are;
  :class:`JackFeeder` plays samples into it. Needs jackd2 (Debian package) installed.

Rejected for the 48 kHz-only device (measured with alsa-lib 1.2.8, PortAudio 19.6):
``null`` and ``file`` take no rate setting; ``plug`` and ``rate`` with ``slave.rate 48000``
convert, so they still accept 16 kHz; ``dsnoop``/``dshare``/``dmix`` refuse any slave but
``hw`` (there is no card); ``share`` does fix the rate but aborts (``snd_pcm_areas_copy:
Assertion `dst_areas' failed``) or dies with SIGFPE over a non-hw slave. A ``route`` plugin
over the file device (to make a device with exactly 2 channels) drops frames on every
period, so the stereo tests open the plain file device with 2 channels.

This module also runs the capture side: ``python <this file> capture SPEC.json`` opens
:class:`kwsd.sources.MicrophoneSource` per the spec, prints one JSON line per event on
stdout and saves what it read (:func:`run_capture` drives it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SYSTEM_ALSA_CONF = "/usr/share/alsa/alsa.conf"

#: The dummy JACK backend's period. 1024, not 960: with a 960-frame period the jack plugin
#: refuses ``snd_pcm_hw_params_set_buffer_size_near(2048)`` (EINVAL) while PortAudio probes
#: the device, and PortAudio then leaves the device out of its list.
JACK_PERIOD_FRAMES = 1024


# --------------------------------------------------------------------------------------
# asound.conf


def file_pcm(name: str, infile: Path, description: str = "kwsd test capture (file)") -> str:
    """A capture PCM reading raw samples from ``infile`` (a file or a FIFO)."""
    return f"""pcm.{name} {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
    hint {{ show on; description "{description}" }}
}}
"""


def jack_pcm(name: str, port: str, description: str = "kwsd test capture (JACK)") -> str:
    """A one-channel capture PCM fed by the JACK output port ``port`` (float32, server rate only)."""
    return f"""pcm.{name} {{
    type jack
    capture_ports {{ 0 "{port}" }}
    hint {{ show on; description "{description}" }}
}}
"""


def write_asound_conf(path: Path, *pcms: str) -> Path:
    path.write_text("".join(pcms))
    return path


def capture_env(conf: Path, *, jack_server: str | None = None) -> dict[str, str]:
    """Environment for a subprocess that should see the PCMs in ``conf`` (kwsd is installed
    beside this package, so the subprocess imports the same kwsd)."""
    env = dict(os.environ)
    env["ALSA_CONFIG_PATH"] = f"{SYSTEM_ALSA_CONF}:{conf}"
    # libjack would otherwise try to start a default jackd while PortAudio probes the stock
    # `jack` PCM of libasound2-plugins.
    env["JACK_NO_START_SERVER"] = "1"
    if jack_server is not None:
        env["JACK_DEFAULT_SERVER"] = jack_server
    return env


def portaudio_available() -> bool:
    return ctypes.util.find_library("portaudio") is not None


# --------------------------------------------------------------------------------------
# A FIFO written in real time.


class PacedFifoWriter:
    """Writes into a FIFO at the real rate, from its own thread.

    The FIFO is opened read-write at construction, so an ALSA ``file`` device on it can be
    opened (and probed by PortAudio) before anything is written, and its reader never sees
    end-of-file. Nothing is written until :meth:`start`; then ``payload`` goes out in
    ``chunk_frames`` chunks on a real-time schedule, followed by silence until :meth:`stop`
    (a capture stream blocks on an empty FIFO, closing included).

    ``chunk_frames`` must be a multiple of what the reader asks for at a time: the ``file``
    plugin's capture reads the FIFO once per request and, when it gets less than asked for,
    still returns the whole request, the rest being stale buffer contents (measured: 160-frame
    chunks against 320-frame requests gave every other 160 frames as zeros). Through
    PortAudio a request is one callback block (``block_ms``). Chunks stay within PIPE_BUF
    (4096 bytes), so each write is atomic and a request never sees half a chunk.
    """

    def __init__(self, path: Path, *, rate_hz: int, frame_bytes: int, chunk_frames: int) -> None:
        if chunk_frames * frame_bytes > 4096:
            raise ValueError("chunk_frames * frame_bytes must stay within PIPE_BUF (4096 bytes)")
        if not path.exists():
            os.mkfifo(path)
        self.path = path
        self.rate_hz = rate_hz
        self.frame_bytes = frame_bytes
        self.chunk_frames = chunk_frames
        # Non-blocking: a reader that stopped reading must not wedge the thread (and stop()).
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.payload_done = threading.Event()
        #: Wall-clock (monotonic) times the payload started and finished going out.
        self.started_s: float | None = None
        self.finished_s: float | None = None
        #: Most a chunk was written after its due time (pipe full: nobody reading).
        self.max_late_s = 0.0
        #: Writes that found the pipe full (the reader fell 64 KB behind).
        self.pipe_full_writes = 0
        #: Frames written so far, payload and silence.
        self.frames_written = 0
        self.error: BaseException | None = None
        self._pause_at_byte: int | None = None
        self._resumed = threading.Event()
        #: Silence sent while paused, in frames.
        self.paused_frames = 0
        #: Set once the writer has reached the pause point.
        self.paused = threading.Event()

    def start(self, payload: bytes, *, pause_at_frame: int | None = None) -> None:
        """Send ``payload``; with ``pause_at_frame``, send silence from that frame on until
        :meth:`resume` (``paused_frames`` counts it), then the rest: a test can then do what
        it must at that point of the audio however long that takes on a busy machine."""
        if len(payload) % self.frame_bytes:
            raise ValueError("payload must be whole frames")
        if pause_at_frame is not None:
            if (pause_at_frame * self.frame_bytes) % (self.chunk_frames * self.frame_bytes):
                raise ValueError("pause_at_frame must be a multiple of chunk_frames")
            self._pause_at_byte = pause_at_frame * self.frame_bytes
        self._thread = threading.Thread(target=self._run, args=(payload,), name="fifo-writer", daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._resumed.set()

    def _run(self, payload: bytes) -> None:
        assert self._fd is not None
        chunk_bytes = self.chunk_frames * self.frame_bytes
        chunk_s = self.chunk_frames / self.rate_hz
        silence = bytes(chunk_bytes)
        start = time.monotonic()
        self.started_s = start
        written = 0
        n = 0
        try:
            while not self._stop.is_set():
                due = start + n * chunk_s
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    self.max_late_s = max(self.max_late_s, -delay)
                holding = written == self._pause_at_byte and not self._resumed.is_set()
                if holding:
                    self.paused.set()
                    chunk = silence
                else:
                    chunk = payload[written : written + chunk_bytes] if written < len(payload) else silence
                if not self._write(chunk):
                    break
                self.frames_written += self.chunk_frames
                if holding:
                    self.paused_frames += self.chunk_frames
                elif written < len(payload):
                    written += len(chunk)
                    if written >= len(payload):
                        self.finished_s = time.monotonic()
                        self.payload_done.set()
                n += 1
        except BaseException as err:  # reported by stop()
            self.error = err

    def _write(self, chunk: bytes) -> bool:
        """Write the whole chunk (atomic: it is within PIPE_BUF); False if stopped meanwhile."""
        assert self._fd is not None
        while not self._stop.is_set():
            try:
                os.write(self._fd, chunk)
                return True
            except BlockingIOError:  # the pipe is full: nobody is reading
                self.pipe_full_writes += 1
                time.sleep(0.005)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.error is not None:
            raise RuntimeError(f"FIFO writer failed: {self.error!r}")

    def __enter__(self) -> PacedFifoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# JACK: a server with the dummy backend, and a client that plays into it.


def jack_missing() -> str | None:
    """Why the JACK-backed device cannot be made here, or None."""
    if shutil.which("jackd") is None:
        return "jackd is not installed (Debian package jackd2)"
    if ctypes.util.find_library("jack") is None:
        return "libjack is not installed (Debian package libjack-jackd2-0)"
    plugin_dirs = [
        "/usr/lib/x86_64-linux-gnu/alsa-lib",
        "/usr/lib/aarch64-linux-gnu/alsa-lib",
        "/usr/lib/arm-linux-gnueabihf/alsa-lib",
        "/usr/lib/alsa-lib",
        "/usr/lib64/alsa-lib",
    ]
    if not any(Path(d, "libasound_module_pcm_jack.so").exists() for d in plugin_dirs):
        return "the ALSA jack plugin is not installed (Debian package libasound2-plugins)"
    return None


_JACK_NO_START_SERVER = 0x01
_JACK_USE_EXACT_NAME = 0x02
_JACK_SERVER_NAME = 0x04
_JACK_PORT_IS_OUTPUT = 0x02
_JACK_AUDIO_TYPE = b"32 bit float mono audio"
_JackProcess = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p)


def _libjack() -> Any:
    lib = ctypes.CDLL(ctypes.util.find_library("jack"))
    # jack_client_open is variadic; the one extra argument is the server name (JackServerName).
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
    ]
    lib.jack_port_register.restype = ctypes.c_void_p
    lib.jack_port_register.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    lib.jack_port_get_buffer.restype = ctypes.c_void_p
    lib.jack_port_get_buffer.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.jack_set_process_callback.argtypes = [ctypes.c_void_p, _JackProcess, ctypes.c_void_p]
    for name in ("jack_activate", "jack_deactivate", "jack_client_close", "jack_get_sample_rate"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    return lib


def _open_jack_client(lib: Any, server: str, client_name: str) -> int | None:
    status = ctypes.c_int(0)
    client = lib.jack_client_open(
        client_name.encode(),
        _JACK_NO_START_SERVER | _JACK_USE_EXACT_NAME | _JACK_SERVER_NAME,
        ctypes.byref(status),
        server.encode(),
    )
    return int(client) if client else None


class JackServer:
    """``jackd`` with the dummy backend (no hardware, real-time clock), no realtime scheduling."""

    def __init__(self, name: str, *, rate_hz: int = 48000, log_path: Path | None = None) -> None:
        self.name = name
        self.rate_hz = rate_hz
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> JackServer:
        env = dict(os.environ, JACK_NO_AUDIO_RESERVATION="1", JACK_NO_START_SERVER="1")
        command = ["jackd", "-n", self.name, "--no-realtime", "-d", "dummy"]
        command += ["-r", str(self.rate_hz), "-p", str(JACK_PERIOD_FRAMES), "-C", "0", "-P", "0"]
        if self._log_path is None:
            self._proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
        else:
            with open(self._log_path, "wb") as log:  # the child keeps its own descriptor
                self._proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        lib = _libjack()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"jackd exited with {self._proc.returncode}; log: {self._log_path}")
            client = _open_jack_client(lib, self.name, "kwsd-probe")
            if client is not None:
                lib.jack_client_close(client)
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"jackd did not come up in 10 s; log: {self._log_path}")

    def kill(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL): its clients lose their device."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        # A server that dies with clients attached leaves their semaphores behind.
        for leftover in Path("/dev/shm").glob(f"jack_sem.*_{self.name}_*"):
            leftover.unlink(missing_ok=True)


class JackFeeder:
    """A JACK client with one output port, ``<client_name>:out``, playing silence until :meth:`play`.

    Its process callback runs on JACK's thread; :meth:`play` hands it a new float32 signal
    (full scale 1.0) to play from its next period, then silence again.
    """

    def __init__(self, server: str, client_name: str = "kwsdfeed") -> None:
        self._lib = _libjack()
        client = _open_jack_client(self._lib, server, client_name)
        if client is None:
            raise RuntimeError(f"cannot open JACK client {client_name!r} on server {server!r}")
        self._client = client
        self.port_name = f"{client_name}:out"
        self.rate_hz = int(self._lib.jack_get_sample_rate(client))
        self._port = self._lib.jack_port_register(client, b"out", _JACK_AUDIO_TYPE, _JACK_PORT_IS_OUTPUT, 0)
        if not self._port:
            raise RuntimeError("cannot register the JACK output port")
        self._next: np.ndarray | None = None
        self._signal = np.zeros(0, np.float32)
        self._position = 0
        self.frames_played = 0
        self._callback = _JackProcess(self._process)  # kept: JACK holds only the C pointer
        self._lib.jack_set_process_callback(client, self._callback, None)
        if self._lib.jack_activate(client) != 0:
            raise RuntimeError("cannot activate the JACK client")

    def _process(self, frames: int, _arg: object) -> int:
        buffer = self._lib.jack_port_get_buffer(self._port, frames)
        out = np.ctypeslib.as_array(ctypes.cast(buffer, ctypes.POINTER(ctypes.c_float)), shape=(frames,))
        pending = self._next
        if pending is not None:
            self._next = None
            self._signal, self._position = pending, 0
        chunk = self._signal[self._position : self._position + frames]
        out[: len(chunk)] = chunk
        out[len(chunk) :] = 0.0
        self._position += len(chunk)
        self.frames_played += len(chunk)
        return 0

    def play(self, signal: np.ndarray) -> None:
        self._next = np.ascontiguousarray(signal, np.float32)

    def close(self) -> None:
        if self._client:
            self._lib.jack_deactivate(self._client)
            self._lib.jack_client_close(self._client)
            self._client = 0

    def __enter__(self) -> JackFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# The capture side (runs in the subprocess).


@dataclasses.dataclass
class CaptureRun:
    """What one MicrophoneSource in the subprocess did."""

    samples: np.ndarray
    opened_rate_hz: int
    overflows: int
    dropped_blocks: int
    device: dict[str, Any]
    #: Seconds from the source being open to its first and last block.
    first_block_s: float | None
    last_block_s: float | None
    #: The AudioDeviceError that read() raised, if any.
    error: str | None
    #: How long close() took.
    close_s: float


def run_capture(
    env: dict[str, str],
    spec: dict[str, Any],
    workdir: Path,
    *,
    on_ready: Callable[[int], None] | None = None,
    timeout_s: float = 120.0,
) -> tuple[list[CaptureRun], dict[str, Any]]:
    """Run this module's ``capture`` with ``spec`` in a subprocess; returns the runs and the probe results.

    ``spec``::

        {"exit_at_once": bool,  # optional
         "runs": [{"source": {MicrophoneSource kwargs}, "samples": N, "timeout_s": T,
                   "abort_stream_after_samples": M}],  # optional
         "probe": {"list": true, "find": [device, ...], "open": [{MicrophoneSource kwargs}, ...]}}

    The probe (done first) returns ``{"devices": [DeviceInfo as dict], "find": [{"device": ...}
    or {"error": message}], "open": [{"opened_rate_hz": rate} or {"error": message}]}``.
    ``on_ready(i)`` is called when run ``i``'s source is open (the place to start feeding a
    paced device).
    """
    spec_path = workdir / "capture-spec.json"
    spec_path.write_text(json.dumps(dict(spec, outdir=str(workdir))))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "capture", str(spec_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    done: dict[str, Any] | None = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "ready" and on_ready is not None:
                on_ready(event["run"])
            elif event["event"] == "done":
                done = event
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or done is None:
        raise AssertionError(f"capture subprocess failed (exit {proc.returncode}):\n{stderr}")
    runs = [
        CaptureRun(samples=np.load(workdir / f"run{i}.npy"), **{k: v for k, v in run.items() if k != "run"})
        for i, run in enumerate(done["runs"])
    ]
    return runs, done.get("probe", {})


def _capture_main(spec_path: str) -> int:
    from kwsd.sources import AudioDeviceError, MicrophoneSource, find_device, list_devices

    spec = json.loads(Path(spec_path).read_text())
    outdir = Path(spec["outdir"])

    def emit(event: dict[str, Any]) -> None:
        print(json.dumps(event), flush=True)

    probe: dict[str, Any] = {}
    if "probe" in spec:
        if spec["probe"].get("list"):
            probe["devices"] = [dataclasses.asdict(d) for d in list_devices()]
        probe["find"] = []
        for name in spec["probe"].get("find", []):
            try:
                probe["find"].append({"device": dataclasses.asdict(find_device(name))})
            except AudioDeviceError as err:
                probe["find"].append({"error": str(err)})
        probe["open"] = []
        for kwargs in spec["probe"].get("open", []):
            try:
                with MicrophoneSource(**kwargs) as source:
                    probe["open"].append({"opened_rate_hz": source.opened_rate_hz})
            except AudioDeviceError as err:
                probe["open"].append({"error": str(err)})
    runs = []
    for i, run in enumerate(spec.get("runs", [])):
        wanted = int(run["samples"])
        got: list[np.ndarray] = []
        count = 0
        first = last = None
        error = None
        abort_after = run.get("abort_stream_after_samples")
        source = MicrophoneSource(**run["source"])
        with source:
            opened = time.monotonic()
            emit({"event": "ready", "run": i, "opened_rate_hz": source.opened_rate_hz})
            deadline = opened + float(run.get("timeout_s", 10.0))
            while count < wanted and time.monotonic() < deadline:
                if abort_after is not None and count >= abort_after:
                    # What PortAudio does by itself when a device fails: the stream stops.
                    source._stream.abort()
                    abort_after = None
                try:
                    block = source.read(0.2)
                except AudioDeviceError as err:
                    error = str(err)
                    break
                if block is None:
                    continue
                now = time.monotonic() - opened
                first = now if first is None else first
                last = now
                got.append(block)
                count += len(block)
            closing = time.monotonic()
        close_s = time.monotonic() - closing
        samples = np.concatenate(got)[:wanted] if got else np.zeros(0, np.int16)
        np.save(outdir / f"run{i}.npy", samples)
        runs.append(
            {
                "run": i,
                "opened_rate_hz": source.opened_rate_hz,
                "overflows": source.overflows,
                "dropped_blocks": source.dropped_blocks,
                "device": dataclasses.asdict(source.device),
                "first_block_s": first,
                "last_block_s": last,
                "error": error,
                "close_s": close_s,
            }
        )
    emit({"event": "done", "runs": runs, "probe": probe})
    if spec.get("exit_at_once"):
        # PortAudio's JACK host API asserts in Pa_Terminate (pa_jack.c) once its server is gone.
        os._exit(0)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "capture":
        sys.exit(_capture_main(sys.argv[2]))
    sys.exit(f"usage: {sys.argv[0]} capture SPEC.json")
