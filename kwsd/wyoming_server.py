"""``kwsd wyoming``: a Wyoming wake-word server, the kind Home Assistant's Assist pipelines use.

Needs the ``wyoming`` package (``pip install 'kwsd[wyoming]'``); nothing else in kwsd imports
this module, so ``kwsd run`` and ``import kwsd`` never load it.

One or more models (bundles), each with its own detection settings; a keyword is in one model
only. One :class:`WakeHandler` per connection, with its own classifiers, pipeline and smoothers:
clients never share state. Within a connection the models whose front-end specs are equal share
one front end (:class:`kwsd.pipeline.MultiPipeline`), and the audio gate (``audio.gate``) runs
there when it is on. The events (https://github.com/OHF-Voice/wyoming):

* ``describe`` -> ``info``: one wake program, ``kwsd``, whose models are every bundle's keywords
  (its labels but ``_silence_``, ``_unknown_`` and state labels, which report on/off rather
  than fire), each with its own bundle's version and attribution;
* ``detect`` (``names``: optional): report only those keywords, of whichever model, from now on;
  a name no model has is answered with an ``error`` naming it (the others still apply);
* ``audio-start``, ``audio-chunk``..., ``audio-stop``: signed PCM of any rate from 1,000 to
  384,000 Hz, 1, 2 or 4 bytes a sample, any number of channels (averaged), converted by
  :class:`kwsd.audio.PcmConverter` and fed to a fresh pipeline at each ``audio-start``. Each
  detection goes back as ``detection`` with ``name`` the label and ``timestamp`` the audio time
  in ms since ``audio-start`` (the end of the window that fired, as everywhere in kwsd). At
  ``audio-stop``, ``not-detected`` if nothing was reported since ``audio-start``.

A client's mistake costs that client only, with one log line and no traceback: an ``audio-chunk``
with no ``audio-start`` or an impossible format is answered with an ``error`` and the rest of
that stream is ignored until the next ``audio-start``; a malformed event (not JSON, a wrong
length) gets an ``error`` and the connection is closed, since nothing after it can be framed;
a connection dropped mid-stream is logged and ends. Unknown event types are ignored, as Wyoming
servers do.

The pipeline runs in a worker thread (``asyncio.to_thread``), one call at a time per connection,
so a connection's audio never holds up the event loop serving the others.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import json
import logging
import signal
import socket
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlparse

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_get_stdin, async_get_stdout
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.wake import Detect, Detection, NotDetected

from kwsd import __version__
from kwsd.audio import PcmConverter
from kwsd.bundle import Bundle
from kwsd.classifier import TfliteClassifier
from kwsd.detection import DetectionSettings
from kwsd.errors import AudioFormatError, KwsdError, SettingError
from kwsd.gate import GateSettings
from kwsd.gate import describe as describe_gate
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.notify import SystemdNotifier
from kwsd.pipeline import Detection as KeywordDetection
from kwsd.pipeline import Model, MultiPipeline, PipelineError, check_keywords

log = logging.getLogger(__name__)

DEFAULT_URI: Final = "tcp://0.0.0.0:10400"
PROGRAM_NAME: Final = "kwsd"
#: The project home, as systemd/kwsd.service names it.
PROJECT_URL: Final = "https://github.com/kwsd/kwsd"
ZEROCONF_SERVICE_TYPE: Final = "_wyoming._tcp.local."
#: Hex digits of the bundle's sha256 given as each model's version.
MODEL_VERSION_HEX_DIGITS: Final = 12
#: Largest ``data`` or payload accepted in one event: a chunk is a few KB (Home Assistant sends
#: 2 KB); more is a broken or hostile client, refused before it is buffered.
MAX_EVENT_PART_BYTES: Final = 4 * 1024 * 1024
#: Longest header line (asyncio's own StreamReader limit).
MAX_HEADER_BYTES: Final = 64 * 1024


class WyomingUriError(SettingError):
    """A ``--uri`` kwsd cannot serve on."""


class ListenError(KwsdError):
    """A well-formed ``--uri`` that cannot be listened on now (a port taken, a socket path in
    use): exit 75, a temporary failure systemd retries."""


@dataclass(frozen=True)
class ServedModel:
    """One model the server listens with: its bundle, its detection settings and its name in
    the pipeline (the bundle's name, made unique among the served models)."""

    bundle: Bundle
    detection: DetectionSettings
    name: str

    @property
    def keywords(self) -> tuple[str, ...]:
        """The labels a client can be told of: not silence, unknown or state labels."""
        skipped = {SILENCE_LABEL, UNKNOWN_LABEL, *self.detection.states}
        return tuple(label for label in self.bundle.labels if label not in skipped)


@dataclass(frozen=True)
class WakeServerSettings:
    """What every connection is served with: the models, in order, and the audio gate (None or
    not enabled: every window is classified).

    Raises :class:`kwsd.pipeline.PipelineError` for no model or a keyword in two models (a
    client could not tell which one it asks for); ``kwsd wyoming`` refuses those at start.
    """

    models: tuple[ServedModel, ...]
    gate: GateSettings | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise PipelineError("no model to serve")
        check_keywords([(model.name, model.bundle.labels) for model in self.models])

    @property
    def keywords(self) -> tuple[str, ...]:
        """Every model's keywords, in model order."""
        return tuple(keyword for model in self.models for keyword in model.keywords)

    def describe(self) -> str:
        """For logs and messages: ``demo (yes, no, ...)``, each model so."""
        return "; ".join(f"{m.bundle.name} ({', '.join(m.keywords)})" for m in self.models)


def wake_info(settings: WakeServerSettings) -> Info:
    """The ``info`` answer to ``describe``: program ``kwsd``, one model per keyword of every
    bundle, each with its own bundle's version, languages and attribution.

    As wyoming-openwakeword does, a model's ``name`` is the id a client asks for and gets back
    in ``detection``, and ``phrase`` (and ``description``, which older Home Assistant shows) is
    what to say: the label with ``_`` as spaces.
    """
    models = [wake_model for served in settings.models for wake_model in _wake_models(served)]
    program = WakeProgram(
        name=PROGRAM_NAME,
        attribution=Attribution(name="kwsd", url=PROJECT_URL),
        installed=True,
        description=f"kwsd keyword spotting ({', '.join(m.bundle.name for m in settings.models)})",
        version=__version__,
        models=models,
    )
    return Info(wake=[program])


def _wake_models(served: ServedModel) -> list[WakeModel]:
    """One served model's keywords, as ``info`` lists them."""
    bundle = served.bundle
    model_attribution = Attribution(name=_model_credit(bundle), url=PROJECT_URL)
    languages = bundle.provenance.get("languages", [])
    if not isinstance(languages, list) or not all(isinstance(code, str) for code in languages):
        languages = []
    return [
        WakeModel(
            name=label,
            attribution=model_attribution,
            installed=True,
            description=label.replace("_", " "),
            version=bundle.sha256[:MODEL_VERSION_HEX_DIGITS],
            languages=list(languages),
            phrase=label.replace("_", " "),
        )
        for label in served.keywords
    ]


def _model_credit(bundle: Bundle) -> str:
    """Who to credit for a model: its data sets' attribution texts, else the bundle's name."""
    dataset = bundle.provenance.get("dataset")
    texts: list[str] = []
    if isinstance(dataset, dict):
        sources = dataset.get("sources")
        for source in sources.values() if isinstance(sources, dict) else []:
            text = source.get("attribution") if isinstance(source, dict) else None
            if isinstance(text, str) and text.strip() and text not in texts:
                texts.append(text.strip())
        text = dataset.get("attribution")
        if isinstance(text, str) and text.strip() and text not in texts:
            texts.append(text.strip())
    return " ".join(texts) or bundle.name


class EventError(Exception):
    """An event that cannot even be framed: the connection cannot go on after it."""


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, as :func:`wyoming.event.async_read_event` reads it; None at a clean end.

    Unlike it, a malformed event raises :class:`EventError` (it returns None, as for an end) and
    a ``data_length`` or ``payload_length`` over :data:`MAX_EVENT_PART_BYTES` is refused before
    anything is buffered. A connection that ends inside an event raises
    :class:`asyncio.IncompleteReadError`.
    """
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as err:
        if not err.partial:
            return None
        raise
    except asyncio.LimitOverrunError:
        raise EventError(f"an event header longer than {MAX_HEADER_BYTES} bytes") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise EventError("an event header that is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise EventError("an event header without a string 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise EventError(f"{header['type']}: 'data' is not an object")
    data_length = _length(header, "data_length")
    if data_length:
        try:
            more = json.loads(await reader.readexactly(data_length))
        except ValueError:
            raise EventError(f"{header['type']}: its data is not JSON") from None
        if not isinstance(more, dict):
            raise EventError(f"{header['type']}: its data is not an object")
        data.update(more)
    payload_length = _length(header, "payload_length")
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


def _length(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EVENT_PART_BYTES:
        raise EventError(f"{header['type']}: {key}: expected 0..{MAX_EVENT_PART_BYTES} bytes, got {value!r}")
    return value


class StreamState(enum.Enum):
    """Where a connection is in the audio it sends."""

    IDLE = "idle"  # no audio-start yet, or after audio-stop
    LISTENING = "listening"  # audio-start seen: chunks go to the pipeline
    IGNORING = "ignoring"  # a stream refused with an error: its chunks are dropped until it ends


class _BadEvent(Exception):
    """An event the client gets an ``error`` for; the connection goes on."""

    def __init__(self, text: str, code: str) -> None:
        super().__init__(text)
        self.code = code


@dataclass(frozen=True)
class _Format:
    rate_hz: int
    width_bytes: int
    channels: int


class _Stream:
    """One audio stream (audio-start to audio-stop): a converter and a fresh pipeline.

    Called from worker threads, one call at a time (the handler awaits each).
    """

    def __init__(self, pipeline: MultiPipeline) -> None:
        self.pipeline = pipeline
        self.converter: PcmConverter | None = None
        self.reported = 0

    def hear(self, audio_format: _Format, audio: bytes) -> list[KeywordDetection]:
        rate_hz = self.pipeline.sample_rate_hz
        detections: list[KeywordDetection] = []
        converter = self.converter
        if converter is None or (converter.rate_hz, converter.width_bytes, converter.channels) != (
            audio_format.rate_hz,
            audio_format.width_bytes,
            audio_format.channels,
        ):
            if converter is not None:  # the format changed: the old one's tail first
                detections += self.pipeline.feed(converter.flush())
            self.converter = converter = PcmConverter(
                audio_format.rate_hz, audio_format.width_bytes, audio_format.channels, rate_hz
            )
        detections += self.pipeline.feed(converter.convert(audio))
        return detections

    def end(self) -> list[KeywordDetection]:
        return self.pipeline.feed(self.converter.flush()) if self.converter is not None else []


class WakeHandler(AsyncEventHandler):
    """One client's connection. Its classifiers (one per model) are made at its first
    ``audio-start``."""

    def __init__(
        self,
        settings: WakeServerSettings,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: str,
    ) -> None:
        super().__init__(reader, writer)
        self.settings = settings
        self.peer = peer
        self.state = StreamState.IDLE
        #: The keywords reported (``detect``); all of them until a client says otherwise.
        self.names: frozenset[str] = frozenset(settings.keywords)
        self._classifiers: tuple[TfliteClassifier, ...] | None = None
        self._stream: _Stream | None = None

    async def run(self) -> None:
        """Serve events until the client ends the connection; never raises for its mistakes."""
        log.debug("%s: connected", self.peer)
        try:
            while True:
                event = await read_event(self.reader)
                if event is None:
                    break
                await self.handle_event(event)
            log.debug("%s: disconnected", self.peer)
        except EventError as err:
            log.warning("%s: %s; closing the connection", self.peer, err)
            with suppress(ConnectionError):
                await self.write_event(Error(text=f"{err}; closing the connection", code="bad-event").event())
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            what = "inside an event" if isinstance(err, asyncio.IncompleteReadError) else f"({err})"
            log.warning("%s: connection dropped %s", self.peer, what)
        finally:
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._handle(event)
        except _BadEvent as err:
            log.warning("%s: %s", self.peer, err)
            await self.write_event(Error(text=str(err), code=err.code).event())
        return True

    async def _handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(wake_info(self.settings).event())
        elif Detect.is_type(event.type):
            self._detect(event.data.get("names"))
        elif AudioStart.is_type(event.type):
            await self._start(event)
        elif AudioChunk.is_type(event.type):
            await self._chunk(event)
        elif AudioStop.is_type(event.type):
            await self._stop()
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        else:
            log.debug("%s: %s ignored (not a wake-word event)", self.peer, event.type)

    def _detect(self, names: Any) -> None:
        keywords = self.settings.keywords
        if not names:  # None or []: every keyword, as wyoming-openwakeword takes it
            self.names = frozenset(keywords)
            return
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise _BadEvent(f"detect: names: expected a list of strings, got {names!r}", "bad-event")
        self.names = frozenset(name for name in names if name in keywords)
        unknown = [name for name in names if name not in keywords]
        if unknown:
            models = self.settings.models
            whose = (
                f"model {models[0].bundle.name} (it has"
                if len(models) == 1
                else f"the models {', '.join(m.bundle.name for m in models)} (they have"
            )
            raise _BadEvent(
                f"detect: {', '.join(map(repr, unknown))}: not a keyword of {whose} {', '.join(keywords)})",
                "unknown-wake-word",
            )

    async def _start(self, event: Event) -> None:
        self.state, self._stream = StreamState.IGNORING, None
        _audio_format(event)  # refused here rather than at every chunk
        served = self.settings.models
        if self._classifiers is None:
            self._classifiers = await asyncio.to_thread(
                lambda: tuple(TfliteClassifier(m.bundle) for m in served)
            )
        pipeline = MultiPipeline(
            [
                Model(m.name, m.bundle.frontend, classifier, tuple(m.bundle.labels), m.detection)
                for m, classifier in zip(served, self._classifiers, strict=True)
            ],
            gate=self.settings.gate,
        )
        self.state, self._stream = StreamState.LISTENING, _Stream(pipeline)

    async def _chunk(self, event: Event) -> None:
        if self.state is StreamState.IGNORING:
            return
        stream = self._stream
        if self.state is StreamState.IDLE or stream is None:
            self.state = StreamState.IGNORING
            raise _BadEvent(
                "audio-chunk before audio-start: ignored until the next audio-start", "no-audio-start"
            )
        try:
            audio_format = _audio_format(event)
            detections = await asyncio.to_thread(stream.hear, audio_format, event.payload or b"")
        except _BadEvent:
            self.state = StreamState.IGNORING
            raise
        await self._report(stream, detections)

    async def _stop(self) -> None:
        state, stream = self.state, self._stream
        self.state, self._stream = StreamState.IDLE, None
        if state is not StreamState.LISTENING or stream is None:
            log.debug("%s: audio-stop with no stream going", self.peer)
            return
        await self._report(stream, await asyncio.to_thread(stream.end))
        pipeline = stream.pipeline
        stats = pipeline.stats
        log.debug(
            "%s: audio-stop after %d ms of audio: %d windows%s, %d detections reported",
            self.peer,
            pipeline.audio_time_ms(),
            stats.windows,
            f" ({stats.gate_skipped} skipped by the audio gate)" if pipeline.gate is not None else "",
            stream.reported,
        )
        if not stream.reported:
            await self.write_event(NotDetected().event())

    async def _report(self, stream: _Stream, detections: Sequence[KeywordDetection]) -> None:
        """Send the detections the client asked for (state changes are not wake words)."""
        for detection in detections:
            if detection.state is not None or detection.label not in self.names:
                continue
            stream.reported += 1
            log.info(
                "%s: heard %s (score %.3f) at %d ms audio time",
                self.peer,
                detection.label,
                detection.score,
                detection.audio_time_ms,
            )
            await self.write_event(Detection(name=detection.label, timestamp=detection.audio_time_ms).event())


def _audio_format(event: Event) -> _Format:
    """An audio-start's or audio-chunk's format, checked; :class:`_BadEvent` names the problem."""
    values = []
    for key in ("rate", "width", "channels"):
        value = event.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _BadEvent(f"{event.type}: {key}: expected an integer, got {value!r}", "bad-audio-format")
        values.append(value)
    try:
        # Checks only: the stream makes the converter it uses.
        PcmConverter(values[0], values[1], values[2], target_rate_hz=values[0])
    except AudioFormatError as err:
        raise _BadEvent(f"{event.type}: {err}", "bad-audio-format") from None
    return _Format(*values)


class WakeServer:
    """The listening socket (TCP or Unix) or stdio, and the connections it serves."""

    def __init__(self, settings: WakeServerSettings) -> None:
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, uri: str) -> str:
        """Listen on a ``tcp://HOST:PORT`` or ``unix://PATH`` uri; returns the uri listened on
        (with the port a ``:0`` got). Raises :class:`WyomingUriError` if it cannot."""
        parsed = urlparse(uri)
        try:
            if parsed.scheme == "tcp":
                host, port = _tcp_address(uri)
                self._server = await asyncio.start_server(self._serve, host=host, port=port)
                port = self._server.sockets[0].getsockname()[1]
                return f"tcp://{host}:{port}"
            if parsed.scheme == "unix" and parsed.path:
                self._server = await asyncio.start_unix_server(self._serve, path=parsed.path)
                return uri
        except OSError as err:
            raise ListenError(f"--uri {uri}: cannot listen there ({err.strerror or err})") from None
        raise WyomingUriError(f"--uri {uri}: expected tcp://HOST:PORT, unix://PATH or stdio://")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix client"
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await WakeHandler(self.settings, reader, writer, peer=name).run()
        finally:
            self._connections.discard(task)

    async def serve_stdio(self) -> None:
        """Serve the one client on stdin and stdout until stdin ends."""
        reader = await async_get_stdin()
        writer = await async_get_stdout()
        await WakeHandler(self.settings, reader, writer, peer="stdio").run()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


def _tcp_address(uri: str) -> tuple[str, int]:
    parsed = urlparse(uri)
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise WyomingUriError(f"--uri {uri}: expected tcp://HOST:PORT (port 0..65535)")
    return parsed.hostname, port


def check_uri(uri: str) -> None:
    """Refuse a uri :class:`WakeServer` cannot serve on, before any model is loaded."""
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        _tcp_address(uri)
    elif parsed.scheme == "stdio" or (parsed.scheme == "unix" and parsed.path):
        return
    else:
        raise WyomingUriError(f"--uri {uri}: expected tcp://HOST:PORT, unix://PATH or stdio://")


async def announce(host: str, port: int, name: str) -> Any:
    """Announce ``_wyoming._tcp.local.`` with Wyoming's own zeroconf helper, where the zeroconf
    package is installed; the announcer (keep it alive) or None. A failure is one log line: Home
    Assistant can still be given the host and port by hand."""
    if importlib.util.find_spec("zeroconf") is None:
        log.info(
            "zeroconf: not announcing (the zeroconf package is not installed: pip install 'kwsd[wyoming]')"
        )
        return None
    from wyoming.zeroconf import HomeAssistantZeroconf
    from zeroconf import Error as ZeroconfError

    try:
        announcer = HomeAssistantZeroconf(
            port=port, name=name, host=None if host in ("0.0.0.0", "::") else host
        )
        await announcer.register_server()
    except (OSError, ZeroconfError) as err:
        log.warning(
            "zeroconf: could not announce %s (%s); add it in Home Assistant by host and port", name, err
        )
        return None
    log.info("zeroconf: announced %s.%s (%s:%d)", name, ZEROCONF_SERVICE_TYPE, announcer.host, port)
    return announcer


def zeroconf_name() -> str:
    return f"kwsd-{socket.gethostname()}"


async def serve(settings: WakeServerSettings, uri: str, *, zeroconf: bool = True) -> None:
    """Serve until SIGTERM or SIGINT (tcp, unix) or the end of stdin (stdio)."""
    server = WakeServer(settings)
    if settings.gate is not None and settings.gate.enabled:
        log.info("audio.gate: %s", describe_gate(settings.gate))
    if urlparse(uri).scheme == "stdio":
        log.info("wyoming: serving %s on stdio", settings.describe())
        await server.serve_stdio()
        return
    listening = await server.start(uri)
    log.info("wyoming: serving %s on %s", settings.describe(), listening)
    notifier = SystemdNotifier()  # Type=notify: started once the socket is listening
    notifier.ready(f"serving {', '.join(m.bundle.name for m in settings.models)} on {listening}")
    announcer = None
    if zeroconf and urlparse(listening).scheme == "tcp":
        host, port = _tcp_address(listening)
        announcer = await announce(host, port, zeroconf_name())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        log.info("wyoming: stopping")
        notifier.stopping()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await server.close()
        if announcer is not None:
            # The helper has no close of its own: withdraw the record (goodbye packets) so that
            # Home Assistant does not keep offering a server that has gone.
            aiozc = getattr(announcer, "_aiozc", None)
            if aiozc is not None:
                await aiozc.async_close()
        notifier.close()
