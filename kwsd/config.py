"""config.yaml: frozen settings for the daemon, validated in full before anything opens.

:func:`load_config` reads a file, :func:`parse_config` a string; both return a :class:`Config`
or raise one :class:`ConfigError` that lists every problem found (unknown or misspelled keys,
wrong types, out-of-range values, YAML syntax, duplicate keys, unreadable secrets), each
prefixed with its key path. :func:`default_config` is what an empty file means; a missing
file is an error unless the caller chooses to use the defaults instead.

The file is YAML with two deliberate departures from PyYAML's YAML 1.1 defaults: a key
given twice is an error (PyYAML silently keeps the last), and only ``true``/``false`` are
booleans (YAML 1.1 also reads ``yes``, ``no``, ``on`` and ``off`` as booleans, which would
turn the Speech Commands labels of the same names into ``True``/``False``).

Relative paths (``model``, ``mqtt.password_file``, ``mqtt.tls.*_file``, ``mqtt.spool_dir``)
resolve against the folder of the config file. The model bundle is not opened here: the
bundle loader reports a missing or bad bundle with its own error.

Pure module apart from reading the secret files it names and checking the TLS files exist.
"""

from __future__ import annotations

import difflib
import enum
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kwsd.detection import KEYS as DETECTION_KEYS
from kwsd.detection import DetectionError, check_detection
from kwsd.errors import KwsdError, read_limited
from kwsd.gate import (
    FLOOR_MIN_DBFS_RANGE,
    FLOOR_RISE_DB_PER_S_RANGE,
    HANGOVER_MS_RANGE,
    MARGIN_DB_RANGE,
    GateSettings,
)

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=enum.Enum)

PORT_RANGE: tuple[int, int | None] = (1, 65535)
CHANNELS_RANGE: tuple[int, int | None] = (1, 32)
BLOCK_MS_RANGE: tuple[int, int | None] = (1, 1000)
SAMPLE_RATE_HZ_RANGE = (8000, 384000)
#: Largest config.yaml and mqtt.password_file kwsd reads (the shipped config is 6 KB).
MAX_CONFIG_BYTES = 1 << 20
MAX_SECRET_BYTES = 64 << 10
KEEPALIVE_S_RANGE: tuple[int, int | None] = (1, 65535)
QUEUE_BLOCKS_RANGE: tuple[int, int | None] = (2, None)
STALL_TIMEOUT_MS_RANGE: tuple[int, int | None] = (100, None)
STATS_INTERVAL_S_RANGE: tuple[int, int | None] = (0, None)
QUEUE_RANGE: tuple[int, int | None] = (1, None)
#: capture.pre_ms and post_ms: a minute either side at most (the ring holds it in memory).
CAPTURE_MS_RANGE: tuple[int, int | None] = (0, 60000)
#: mqtt.scores_interval_ms: 0 (off) or at least this (a dashboard needs no more).
MIN_SCORES_INTERVAL_MS = 100
#: A stall is declared only after this many blocks' worth of silence from the device,
#: so that a USB device delivering in bursts is not mistaken for a stalled one.
STALL_TIMEOUT_MIN_BLOCKS = 2


class ConfigError(KwsdError):
    """One or more problems in a config file; ``problems`` holds one ``key.path: ...`` line each."""

    def __init__(self, problems: Sequence[str], source: str = "<config>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {problem}" for problem in self.problems))


class LogLevel(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def logging_level(self) -> int:
        """The :mod:`logging` level number (``logging.INFO`` for ``info``)."""
        return logging.getLevelNamesMapping()[self.name]


class QoS(enum.IntEnum):
    """MQTT quality of service for detection events."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1
    EXACTLY_ONCE = 2


class Channel(enum.Enum):
    """``audio.channel`` when it is not a channel index."""

    #: The average of all captured channels.
    MIX = "mix"


@dataclass(frozen=True)
class AudioConfig:
    """Capture settings. Rates in Hz, durations in milliseconds, queue length in blocks."""

    #: A device name substring, a device index, or None for the system default input.
    device: str | int | None = None
    #: Rate to open the device at; None = the model's rate if the device supports it,
    #: else the device's default rate (resampled to the model's).
    sample_rate_hz: int | None = None
    #: Channels to open the device with.
    channels: int = 1
    #: What feeds the model: the mix of all channels, or one channel index (0-based).
    channel: Channel | int = Channel.MIX
    #: Duration of one capture block.
    block_ms: int = 20
    #: Capacity of the capture queue; blocks beyond it are dropped and counted.
    queue_blocks: int = 200
    #: No audio for this long means the device stalled and is reopened.
    stall_timeout_ms: int = 2000
    #: The audio gate: the interpreter skips windows with nothing in them (:mod:`kwsd.gate`).
    gate: GateSettings = field(default_factory=GateSettings)


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the broker. ``ca_file`` None = the system's CA certificates."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    #: Skip verifying the broker's host name (the connection is still encrypted).
    insecure: bool = False


@dataclass(frozen=True)
class HomeAssistantConfig:
    """Home Assistant MQTT discovery (one event entity per label)."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"


@dataclass(frozen=True)
class HermesConfig:
    """Rhasspy Hermes-compatible hotword detection messages."""

    enabled: bool = False
    site_id: str = "default"


@dataclass(frozen=True)
class CaptureConfig:
    """Keeping the audio of each detection and near-miss (:mod:`kwsd.capture`); off by default."""

    enabled: bool = False
    #: Captures go to ``<directory>/pending/<label>/`` until reviewed.
    directory: Path = Path("/var/lib/kwsd/captures")
    #: Audio kept before the decision (the word is in the clip that ends there) ...
    pre_ms: int = 2500
    #: ... and after it.
    post_ms: int = 500
    #: A keyword label whose smoothed score passes this but not its threshold is kept as a
    #: near-miss; None = detections only.
    near_miss_threshold: float | None = None
    #: Captures kept, and megabytes of them, at most; past either the oldest go first.
    max_files: int = 1000
    max_mb: int = 500


@dataclass(frozen=True)
class MqttConfig:
    """Broker connection and topics. ``host`` None = no broker: events go to stdout as JSON lines.

    ``password`` is the resolved password, whichever of ``password``, ``password_file`` or
    ``password_env`` gave it; the other two fields record where it came from. ``repr`` hides it.
    """

    host: str | None = None
    port: int = 1883
    #: None = ``kwsd-<device_id>``.
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    #: Name of the environment variable the password was read from.
    password_env: str | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: Topics are ``<topic_prefix>/<device_id>/...``.
    topic_prefix: str = "kwsd"
    #: None = the host name.
    device_id: str | None = None
    qos: QoS = QoS.AT_LEAST_ONCE
    keepalive_s: int = 60
    #: Detections held in memory while the broker is away.
    queue_max: int = 1000
    #: Folder for detections kept across restarts while the broker is away; None = no spool.
    spool_dir: Path | None = Path("/var/lib/kwsd/spool")
    #: Detections kept in the spool.
    spool_max: int = 1000
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    hermes: HermesConfig = field(default_factory=HermesConfig)
    #: Each label's highest smoothed score over this much audio, to ``.../scores``; 0 = none.
    scores_interval_ms: int = 0

    def __repr__(self) -> str:
        parts = []
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "password" and value is not None:
                parts.append("password='<hidden>'")
            else:
                parts.append(f"{item.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


@dataclass(frozen=True)
class ModelConfig:
    """One entry of ``models``: a bundle and the detection settings it has over ``detection``."""

    #: The .kwsd bundle (absolute, not checked to exist).
    path: Path
    #: Detection settings for this model only, over the top-level ``detection`` (validated as
    #: it is, nulls removed).
    detection: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """Everything config.yaml sets.

    ``detection`` holds only the detection settings the file gives (validated and normalised
    by :func:`kwsd.detection.check_detection`, nulls removed): it is merged with the model
    bundle's recommendation by :func:`kwsd.detection.resolve_detection`.
    """

    #: The .kwsd bundle (absolute, not checked to exist); None = the built-in demo model.
    model: Path | None = None
    #: Several bundles listening to the same audio (``models``); empty = ``model`` alone.
    models: tuple[ModelConfig, ...] = ()
    audio: AudioConfig = field(default_factory=AudioConfig)
    #: Read-only by contract (typed as a Mapping; a plain dict so that it copies and pickles).
    detection: Mapping[str, Any] = field(default_factory=dict)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    #: Period of the stats message; 0 = no stats messages.
    stats_interval_s: int = 60
    log_level: LogLevel = LogLevel.INFO

    def model_entries(self) -> tuple[ModelConfig | None, ...]:
        """The models to load, in order: ``models``, else ``model`` alone (None: the demo)."""
        if self.models:
            return self.models
        return (None if self.model is None else ModelConfig(self.model),)


def default_config() -> Config:
    """The settings of an empty config file."""
    return Config()


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raises :class:`ConfigError` listing every problem.

    A missing or unreadable file is a :class:`ConfigError` too: a caller that wants the
    defaults when there is no file must say so by calling :func:`default_config`.
    ``environ`` (default ``os.environ``) is where ``mqtt.password_env`` is looked up.
    """
    path = Path(path)
    try:
        raw = read_limited(path, MAX_CONFIG_BYTES)
    except OSError as err:
        raise ConfigError([f"cannot read the file ({err.strerror or err})"], str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            [f"expected UTF-8 text, got byte 0x{raw[err.start]:02x} on line {line}"], str(path)
        ) from None
    config = parse_config(text, str(path), base_dir=path.absolute().parent, environ=environ)
    if (
        config.mqtt.password is not None
        and config.mqtt.password_file is None
        and config.mqtt.password_env is None
    ):
        warn_if_others_can_read(path, "holds mqtt.password")
    return config


def warn_if_others_can_read(path: Path, what: str) -> None:
    """A WARNING when a file holding a secret is readable by every user (chmod 640 fixes it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        log.warning(
            "%s %s and is readable by every user (mode %04o): chmod o-r %s (the README installs "
            "it 0640 root:kwsd)",
            path,
            what,
            stat.S_IMODE(mode),
            path,
        )


def parse_config(
    text: str,
    source: str = "<config>",
    *,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate config text; ``source`` names it in messages, relative paths resolve against ``base_dir``.

    ``base_dir`` defaults to the current directory; ``environ`` to ``os.environ``.
    """
    problems = _Problems()
    data = _load_yaml(text, problems)
    if data is _UNREADABLE:
        raise ConfigError(problems.in_file_order(), source)
    reader = _Reader(
        problems,
        base_dir if base_dir is not None else Path.cwd(),
        environ if environ is not None else os.environ,
    )
    config = reader.config(data)
    if problems.paths:
        raise ConfigError(problems.in_file_order(), source)
    return config


# --- YAML -------------------------------------------------------------------------------

_BOOL_TAG = "tag:yaml.org,2002:bool"
_UNREADABLE = object()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose only booleans are true/false (YAML 1.2), so ``yes:`` stays a string."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


#: Deepest nesting of mappings and lists a config may have (kwsd's own go 3 deep).
MAX_CONFIG_DEPTH = 32
#: Most YAML nodes a config may hold, aliases counted each time they are used (the shipped
#: config has about 150): a "billion laughs" file is refused before it is expanded.
MAX_CONFIG_NODES = 20_000
#: Longest number a config may spell out (Python refuses to read integers over 4,300 digits).
MAX_NUMBER_CHARACTERS = 100
_INT_TAG = "tag:yaml.org,2002:int"


class _TooBig(Exception):
    """The document is deeper or larger than a config can be (the message says which)."""


def _load_yaml(text: str, problems: _Problems) -> Any:
    loader = None
    try:
        loader = _StrictLoader(text)  # refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _walk(node, "", problems, _Budget())
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        problems.add_unplaced(_yaml_problem(err))
        return _UNREADABLE
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        code = ord(err.character) if isinstance(err.character, str) else err.character
        problems.add_unplaced(
            f"line {line}, column {column}: character U+{code:04X} is not allowed in YAML "
            "(a control character?)"
        )
        return _UNREADABLE
    except yaml.YAMLError as err:
        problems.add_unplaced(" ".join(str(err).split()))
        return _UNREADABLE
    except _TooBig as err:
        problems.add_unplaced(str(err))
        return _UNREADABLE
    except RecursionError:  # the parser's own recursion, before _walk could count
        problems.add_unplaced(f"nested more than {MAX_CONFIG_DEPTH} levels deep")
        return _UNREADABLE
    except ValueError as err:  # e.g. an integer of more than 4,300 digits
        problems.add_unplaced(f"invalid YAML: {' '.join(str(err).split())}")
        return _UNREADABLE
    finally:
        if loader is not None:
            loader.dispose()


class _Budget:
    """What _walk has seen: nodes visited (aliases each time) and the nodes on the path."""

    def __init__(self) -> None:
        self.nodes = 0
        self.path: set[int] = set()


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = ", ".join(part for part in (err.context, err.problem) if part) or "not YAML"
    return f"{where}invalid YAML: {what}"


def _walk(node: yaml.Node, path: str, problems: _Problems, budget: _Budget, depth: int = 0) -> None:
    """Record where each key is (for ordering problems) and report keys given twice; refuse
    a document nested too deeply, holding itself (``a: &a [*a]``) or too many nodes."""
    budget.nodes += 1
    if budget.nodes > MAX_CONFIG_NODES:
        raise _TooBig(
            f"more than {MAX_CONFIG_NODES} values (aliases counted each time they are used): "
            "not a kwsd config"
        )
    if depth > MAX_CONFIG_DEPTH:
        raise _TooBig(f"line {node.start_mark.line + 1}: nested more than {MAX_CONFIG_DEPTH} levels deep")
    if id(node) in budget.path:
        raise _TooBig(f"line {node.start_mark.line + 1}: an alias refers to a value that holds it")
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        if node.tag == _INT_TAG and len(str(node.value)) > MAX_NUMBER_CHARACTERS:
            raise _TooBig(
                f"line {node.start_mark.line + 1}: a number of {len(str(node.value))} characters "
                f"(at most {MAX_NUMBER_CHARACTERS})"
            )
        return
    budget.path.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge" or not isinstance(key, yaml.ScalarNode):
                _walk(value, path, problems, budget, depth + 1)
                continue
            child = _join(path, str(key.value))
            first = seen.get((key.tag, key.value))
            if first is not None:
                problems.add(
                    child,
                    f"duplicate key (line {key.start_mark.line + 1}; first given on line "
                    f"{first.start_mark.line + 1})",
                )
            else:
                seen[(key.tag, key.value)] = key
                problems.lines_by_path.setdefault(child, key.start_mark.line + 1)
            _walk(value, child, problems, budget, depth + 1)
    else:
        for index, item in enumerate(node.value):
            _walk(item, f"{path}[{index}]", problems, budget, depth + 1)
    budget.path.discard(id(node))


# --- validation -------------------------------------------------------------------------


class _Problems:
    """Problems found so far, each under the key path it concerns."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        #: Key paths with a problem: checks that build on their values are skipped.
        self.paths: set[str] = set()
        #: Line (1-based) of each key path given in the file.
        self.lines_by_path: dict[str, int] = {}

    def add_unplaced(self, message: str) -> None:
        """A problem that is not about one key (YAML syntax): listed first."""
        self.entries.append(("", message))
        self.paths.add("")

    def add(self, path: str, message: str) -> None:
        self.entries.append((path, f"{path}: {message}"))
        self.paths.add(path)

    def expected(self, path: str, what: str, got: Any) -> None:
        self.add(path, f"expected {what}, got {_show(got)}")

    def in_file_order(self) -> list[str]:
        """The problems ordered by the line of their key (or of its nearest parent in the file)."""

        def line(entry: tuple[str, str]) -> int:
            path = entry[0]
            while path:
                if path in self.lines_by_path:
                    return self.lines_by_path[path]
                path = path.rpartition(".")[0]
            return 0

        return [message for _, message in sorted(self.entries, key=line)]


def _show(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _show_secret(value: Any) -> str:
    """A wrong-typed secret is described by its type, never shown."""
    if isinstance(value, Mapping | list):
        return _show(value)
    return "true or false" if isinstance(value, bool) else f"a value of type {type(value).__name__}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown_key(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; expected one of {', '.join(known)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TOPIC_FORBIDDEN = ("+", "#", "\0")
#: MQTT's longest string (a 16-bit length): a longer client id kills paho's network thread.
MQTT_STRING_MAX_BYTES = 65_535
#: Bounds well inside MQTT's for the parts kwsd joins into topics, so any topic it builds
#: (prefix, device, label and kwsd's own levels) stays a valid MQTT string.
TOPIC_PREFIX_MAX_BYTES = 1_024
TOPIC_LEVEL_MAX_BYTES = 256


def _utf8_bytes(value: str) -> int | None:
    """The length of ``value`` in UTF-8, or None when it cannot be encoded (a lone surrogate,
    which YAML's escapes can spell: ``"\\udc80"``)."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _mqtt_string_problem(value: str, max_bytes: int) -> str | None:
    size = _utf8_bytes(value)
    if size is None:
        return "text that UTF-8 can encode (it holds a lone surrogate)"
    if size > max_bytes:
        return f"at most {max_bytes:,} bytes of UTF-8 (got {size:,})"
    return None


class _Reader:
    """Builds a :class:`Config` from loaded YAML, recording every problem and carrying on."""

    def __init__(self, problems: _Problems, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.problems = problems
        self.base_dir = base_dir
        self.environ = environ

    # sections

    def config(self, data: Any) -> Config:
        values = self.section("", data, Config)
        defaults = Config()
        return Config(
            model=self.path("model", values.get("model"), what="a path to a .kwsd bundle or null"),
            models=self.models(values),
            audio=self.audio(values.get("audio")),
            detection=self.detection(values.get("detection")),
            mqtt=self.mqtt(values.get("mqtt")),
            capture=self.capture(values.get("capture")),
            stats_interval_s=self.integer(
                "stats_interval_s", values, defaults.stats_interval_s, STATS_INTERVAL_S_RANGE, "seconds"
            ),
            log_level=self.choice("log_level", values, defaults.log_level),
        )

    def section(self, path: str, data: Any, cls: type[Any]) -> dict[str, Any]:
        """The keys of ``data`` that ``cls`` knows; reports the others and a non-mapping."""
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problems.expected(path or "top level", "a mapping of settings", data)
            return {}
        known = [item.name for item in fields(cls)]
        return self.known_keys(path, data, known)

    def known_keys(self, path: str, data: Mapping[Any, Any], known: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and key in known:
                out[key] = value
            else:
                self.problems.add(_join(path, str(key)), _unknown_key(str(key), known))
        return out

    def audio(self, data: Any) -> AudioConfig:
        values = self.section("audio", data, AudioConfig)
        defaults = AudioConfig()
        device = values.get("device")
        if device is not None and not (
            (isinstance(device, str) and device.strip()) or (_is_int(device) and device >= 0)
        ):
            self.problems.expected(
                "audio.device", "a device name (or part of one), a device index >= 0 or null", device
            )
            device = None
        sample_rate_hz = values.get("sample_rate_hz")
        if sample_rate_hz is not None:
            low, high = SAMPLE_RATE_HZ_RANGE
            if not (_is_int(sample_rate_hz) and low <= sample_rate_hz <= high):
                self.problems.expected(
                    "audio.sample_rate_hz", f"a rate in Hz {low}..{high} or null", sample_rate_hz
                )
                sample_rate_hz = None
        channels = self.integer("audio.channels", values, defaults.channels, CHANNELS_RANGE, "channels")
        channel = self.channel(values, channels if "audio.channels" not in self.failed else None)
        block_ms = self.integer("audio.block_ms", values, defaults.block_ms, BLOCK_MS_RANGE, "milliseconds")
        queue_blocks = self.integer(
            "audio.queue_blocks", values, defaults.queue_blocks, QUEUE_BLOCKS_RANGE, "blocks"
        )
        stall_timeout_ms = self.integer(
            "audio.stall_timeout_ms",
            values,
            defaults.stall_timeout_ms,
            STALL_TIMEOUT_MS_RANGE,
            "milliseconds",
        )
        if (
            "audio.block_ms" not in self.failed
            and "audio.stall_timeout_ms" not in self.failed
            and stall_timeout_ms < STALL_TIMEOUT_MIN_BLOCKS * block_ms
        ):
            self.problems.add(
                "audio.stall_timeout_ms",
                f"expected at least {STALL_TIMEOUT_MIN_BLOCKS} blocks of audio.block_ms "
                f"({STALL_TIMEOUT_MIN_BLOCKS * block_ms} ms), got {stall_timeout_ms}",
            )
        return AudioConfig(
            device=device,
            sample_rate_hz=sample_rate_hz,
            channels=channels,
            channel=channel,
            block_ms=block_ms,
            queue_blocks=queue_blocks,
            stall_timeout_ms=stall_timeout_ms,
            gate=self.gate(values.get("gate")),
        )

    def gate(self, data: Any) -> GateSettings:
        values = self.section("audio.gate", data, GateSettings)
        defaults = GateSettings()
        return GateSettings(
            enabled=self.boolean("audio.gate.enabled", values, defaults.enabled),
            margin_db=self.number("audio.gate.margin_db", values, defaults.margin_db, MARGIN_DB_RANGE, "dB"),
            hangover_ms=self.integer(
                "audio.gate.hangover_ms", values, defaults.hangover_ms, HANGOVER_MS_RANGE, "milliseconds"
            ),
            floor_min_dbfs=self.number(
                "audio.gate.floor_min_dbfs", values, defaults.floor_min_dbfs, FLOOR_MIN_DBFS_RANGE, "dBFS"
            ),
            floor_rise_db_per_s=self.number(
                "audio.gate.floor_rise_db_per_s",
                values,
                defaults.floor_rise_db_per_s,
                FLOOR_RISE_DB_PER_S_RANGE,
                "dB per second",
            ),
        )

    def channel(self, values: Mapping[str, Any], channels: int | None) -> Channel | int:
        if "channel" not in values:
            return Channel.MIX
        value = values["channel"]
        if value == Channel.MIX.value:
            return Channel.MIX
        if channels is None:  # audio.channels is wrong already: check the type only
            if not _is_int(value) or value < 0:
                self.problems.expected("audio.channel", '"mix" or a channel index', value)
            return Channel.MIX
        if not _is_int(value) or not 0 <= value < channels:
            self.problems.expected(
                "audio.channel",
                f'"mix" or a channel index 0..{channels - 1} (audio.channels is {channels})',
                value,
            )
            return Channel.MIX
        return int(value)

    def models(self, values: Mapping[str, Any]) -> tuple[ModelConfig, ...]:
        """``models``: a list of bundle paths, or of {path, detection} mappings."""
        data = values.get("models")
        if data is None:
            return ()
        if values.get("model") is not None:
            self.problems.add("models", "give either model (one bundle) or models (several), not both")
            return ()
        what = "a list of .kwsd bundle paths (or of {path: ..., detection: {...}} mappings)"
        if not isinstance(data, list) or not data:
            self.problems.expected("models", what, data)
            return ()
        entries: list[ModelConfig] = []
        for index, item in enumerate(data):
            key = f"models[{index}]"
            if isinstance(item, Mapping):
                known = self.known_keys(key, item, [f.name for f in fields(ModelConfig)])
                if "path" not in known:
                    self.problems.add(f"{key}.path", "missing: the .kwsd bundle of this model")
                    continue
                path = self.path(f"{key}.path", known["path"], what="a path to a .kwsd bundle")
                detection = self.detection(known.get("detection"), f"{key}.detection")
            else:
                path = self.path(key, item, what="a path to a .kwsd bundle (or a {path, detection} mapping)")
                detection = {}
            if path is not None:
                entries.append(ModelConfig(path, detection))
        return tuple(entries)

    def detection(self, data: Any, where: str = "detection") -> Mapping[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            self.problems.expected(where, "a mapping of settings", data)
            return {}
        given = {
            key: value
            for key, value in self.known_keys(where, data, list(DETECTION_KEYS)).items()
            if value is not None
        }
        ok = True
        for key, value in given.items():
            if key in ("label_thresholds", "states") and isinstance(value, Mapping):
                # One label at a time, so that every bad label is reported.
                for label, setting in value.items():
                    ok &= self.check_detection({key: {label: setting}}, where)
            else:
                ok &= self.check_detection({key: value}, where)
        if not ok or not self.check_detection(given, where):  # the whole set: checks across settings
            return {}
        checked = check_detection(given)
        for per_label in ("label_thresholds", "states"):
            if not checked.get(per_label, True):  # an empty mapping overrides nothing, like none
                del checked[per_label]
        return checked

    def check_detection(self, settings: Mapping[str, Any], where: str = "detection") -> bool:
        try:
            check_detection(settings)
        except DetectionError as err:
            key, _, message = str(err).partition(": ")
            self.problems.add(f"{where}.{key}", message)
            return False
        return True

    def mqtt(self, data: Any) -> MqttConfig:
        values = self.section("mqtt", data, MqttConfig)
        defaults = MqttConfig()
        host = self.text(
            "mqtt.host", values, what="a broker host name or address, or null (no broker)", max_bytes=253
        )
        username = self.text("mqtt.username", values, what="a user name or null")
        password, password_file, password_env = self.password(values)
        if password is not None and username is None and "mqtt.username" not in self.failed:
            given = "password_file" if password_file else "password_env" if password_env else "password"
            self.problems.add(f"mqtt.{given}", "a password needs mqtt.username (MQTT sends none without one)")
        tls = self.tls(values.get("tls"))
        home_assistant = self.home_assistant(values.get("home_assistant"))
        hermes = self.hermes(values.get("hermes"))
        if host is None and "mqtt.host" not in self.failed:
            needs_broker = {
                "mqtt.username": username is not None,
                "mqtt.password": "password" in values and values["password"] is not None,
                "mqtt.password_file": password_file is not None,
                "mqtt.password_env": password_env is not None,
                "mqtt.tls.enabled": tls.enabled,
                "mqtt.home_assistant.enabled": home_assistant.enabled,
                "mqtt.hermes.enabled": hermes.enabled,
            }
            for key, is_given in needs_broker.items():
                if is_given and key not in self.failed:
                    self.problems.add(
                        key, "given without mqtt.host; set mqtt.host, or remove it to print events to stdout"
                    )
        return MqttConfig(
            host=host,
            port=self.integer("mqtt.port", values, defaults.port, PORT_RANGE),
            client_id=self.text("mqtt.client_id", values, what="a client id or null (kwsd-<device_id>)"),
            username=username,
            password=password,
            password_file=password_file,
            password_env=password_env,
            tls=tls,
            topic_prefix=self.topic_prefix("mqtt.topic_prefix", values, defaults.topic_prefix),
            device_id=self.topic_level("mqtt.device_id", values, None),
            qos=self.choice("mqtt.qos", values, defaults.qos),
            keepalive_s=self.integer(
                "mqtt.keepalive_s", values, defaults.keepalive_s, KEEPALIVE_S_RANGE, "seconds"
            ),
            queue_max=self.integer("mqtt.queue_max", values, defaults.queue_max, QUEUE_RANGE, "detections"),
            spool_dir=self.path(
                "mqtt.spool_dir",
                values.get("spool_dir", defaults.spool_dir),
                what="a folder path or null (no spool)",
            ),
            spool_max=self.integer("mqtt.spool_max", values, defaults.spool_max, QUEUE_RANGE, "detections"),
            home_assistant=home_assistant,
            hermes=hermes,
            scores_interval_ms=self.scores_interval_ms(values, defaults.scores_interval_ms),
        )

    def scores_interval_ms(self, values: Mapping[str, Any], default: int) -> int:
        value = values.get("scores_interval_ms", default)
        if _is_int(value) and (value == 0 or value >= MIN_SCORES_INTERVAL_MS):
            return int(value)
        self.problems.expected(
            "mqtt.scores_interval_ms",
            f"0 (none) or a whole number of ms >= {MIN_SCORES_INTERVAL_MS}",
            value,
        )
        return default

    def password(self, values: Mapping[str, Any]) -> tuple[str | None, Path | None, str | None]:
        """(resolved password, the file it came from, the variable it came from)."""
        password = values.get("password")
        if password is not None and not isinstance(password, str):
            self.problems.add("mqtt.password", f"expected a string (quote it), got {_show_secret(password)}")
            password = None
        password_file = self.path(
            "mqtt.password_file", values.get("password_file"), what="a file path or null"
        )
        password_env = values.get("password_env")
        if password_env is not None and not (
            isinstance(password_env, str)
            and password_env
            and "=" not in password_env
            and "\0" not in password_env
        ):
            self.problems.expected(
                "mqtt.password_env", "the name of an environment variable or null", password_env
            )
            password_env = None
        given = [
            key
            for key in ("password", "password_file", "password_env")
            if key in values and values[key] is not None
        ]
        if len(given) > 1:
            self.problems.add(
                f"mqtt.{given[0]}",
                "expected at most one of password, password_file and password_env, "
                f"got {' and '.join(given)}",
            )
            return None, password_file, password_env
        if password_file is not None:
            password = self.read_secret(password_file)
        elif password_env is not None:
            password = self.environ.get(password_env)
            if password is None:
                self.problems.add("mqtt.password_env", f"environment variable {password_env} is not set")
            elif not password:
                self.problems.add("mqtt.password_env", f"environment variable {password_env} is empty")
                password = None
        return password, password_file, password_env

    def read_secret(self, path: Path) -> str | None:
        try:
            text = read_limited(path, MAX_SECRET_BYTES).decode(
                "utf-8"
            )  # bytes: no newline translation inside the secret
        except OSError as err:
            self.problems.add("mqtt.password_file", f"cannot read {path} ({err.strerror or err})")
            return None
        except UnicodeDecodeError:
            self.problems.add("mqtt.password_file", f"expected UTF-8 text in {path}")
            return None
        if text.endswith("\r\n"):
            text = text[:-2]
        elif text.endswith("\n"):
            text = text[:-1]
        if not text:
            self.problems.add("mqtt.password_file", f"expected a password in {path}, got an empty file")
            return None
        warn_if_others_can_read(path, "(mqtt.password_file) holds the MQTT password")
        return text

    def tls(self, data: Any) -> TlsConfig:
        values = self.section("mqtt.tls", data, TlsConfig)
        enabled = self.boolean("mqtt.tls.enabled", values, False)
        files = {
            key: self.path(f"mqtt.tls.{key}", values.get(key), what="a file path or null")
            for key in ("ca_file", "cert_file", "key_file")
        }
        insecure = self.boolean("mqtt.tls.insecure", values, False)
        if not enabled:
            if "mqtt.tls.enabled" not in self.failed:
                given = [key for key, value in files.items() if value is not None]
                given += ["insecure"] if insecure else []
                for key in given:
                    self.problems.add(
                        f"mqtt.tls.{key}",
                        "given while mqtt.tls.enabled is false; set enabled: true to use TLS, "
                        "or remove it (no silent fallback to plain text)",
                    )
            return TlsConfig(False, files["ca_file"], files["cert_file"], files["key_file"], insecure)
        if (files["cert_file"] is None) != (files["key_file"] is None):
            present, missing = (
                ("cert_file", "key_file") if files["key_file"] is None else ("key_file", "cert_file")
            )
            if f"mqtt.tls.{missing}" not in self.failed:
                self.problems.add(
                    f"mqtt.tls.{present}",
                    f"needs mqtt.tls.{missing} too (certificate and key go together)",
                )
        for key, path in files.items():
            if path is not None:
                try:
                    with path.open("rb"):
                        pass
                except OSError as err:
                    self.problems.add(
                        f"mqtt.tls.{key}", f"expected a readable file, got {path} ({err.strerror or err})"
                    )
        return TlsConfig(True, files["ca_file"], files["cert_file"], files["key_file"], insecure)

    def capture(self, data: Any) -> CaptureConfig:
        values = self.section("capture", data, CaptureConfig)
        defaults = CaptureConfig()
        near = values.get("near_miss_threshold")
        if near is not None and (
            isinstance(near, bool) or not isinstance(near, int | float) or not 0 <= near <= 1
        ):
            self.problems.expected(
                "capture.near_miss_threshold", "a score 0..1 or null (detections only)", near
            )
            near = None
        directory = self.path(
            "capture.directory", values.get("directory", defaults.directory), what="a folder path"
        )
        return CaptureConfig(
            enabled=self.boolean("capture.enabled", values, defaults.enabled),
            directory=directory or defaults.directory,
            pre_ms=self.integer("capture.pre_ms", values, defaults.pre_ms, CAPTURE_MS_RANGE, "ms"),
            post_ms=self.integer("capture.post_ms", values, defaults.post_ms, CAPTURE_MS_RANGE, "ms"),
            near_miss_threshold=None if near is None else float(near),
            max_files=self.integer("capture.max_files", values, defaults.max_files, QUEUE_RANGE, "captures"),
            max_mb=self.integer("capture.max_mb", values, defaults.max_mb, QUEUE_RANGE, "megabytes"),
        )

    def home_assistant(self, data: Any) -> HomeAssistantConfig:
        values = self.section("mqtt.home_assistant", data, HomeAssistantConfig)
        defaults = HomeAssistantConfig()
        return HomeAssistantConfig(
            enabled=self.boolean("mqtt.home_assistant.enabled", values, defaults.enabled),
            discovery_prefix=self.topic_prefix(
                "mqtt.home_assistant.discovery_prefix", values, defaults.discovery_prefix
            ),
        )

    def hermes(self, data: Any) -> HermesConfig:
        values = self.section("mqtt.hermes", data, HermesConfig)
        defaults = HermesConfig()
        return HermesConfig(
            enabled=self.boolean("mqtt.hermes.enabled", values, defaults.enabled),
            site_id=self.topic_level("mqtt.hermes.site_id", values, defaults.site_id) or defaults.site_id,
        )

    # values: each returns the default when the value is wrong (the problem is recorded)

    @property
    def failed(self) -> set[str]:
        return self.problems.paths

    def integer(
        self,
        path: str,
        values: Mapping[str, Any],
        default: int,
        span: tuple[int, int | None],
        unit: str | None = None,
    ) -> int:
        """An int (not a bool) in ``span`` (inclusive; None = no upper bound)."""
        low, high = span
        key = path.rsplit(".", 1)[-1]
        if key not in values:
            return default
        value = values[key]
        if _is_int(value) and value >= low and (high is None or value <= high):
            return int(value)
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        what = f"a whole number of {unit} {bounds}" if unit else f"an integer {bounds}"
        self.problems.expected(path, what, value)
        return default

    def number(
        self, path: str, values: Mapping[str, Any], default: float, span: tuple[float, float], unit: str
    ) -> float:
        """An int or float (not a bool) in ``span`` (inclusive), as a float."""
        key = path.rsplit(".", 1)[-1]
        if key not in values:
            return default
        value = values[key]
        low, high = span
        if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
            return float(value)
        self.problems.expected(path, f"a number of {unit} {low:g}..{high:g}", value)
        return default

    def boolean(self, path: str, values: Mapping[str, Any], default: bool) -> bool:
        key = path.rsplit(".", 1)[-1]
        value = values.get(key, default)
        if isinstance(value, bool):
            return value
        self.problems.expected(path, "true or false", value)
        return default

    def choice(self, path: str, values: Mapping[str, Any], default: _E) -> _E:
        key = path.rsplit(".", 1)[-1]
        if key not in values:
            return default
        value = values[key]
        kind = type(default)
        for member in kind:
            if value == member.value and type(value) is type(member.value):
                return member
        choices = ", ".join(str(member.value) for member in kind)
        self.problems.expected(path, f"one of {choices}", value)
        return default

    def text(
        self, path: str, values: Mapping[str, Any], *, what: str, max_bytes: int = MQTT_STRING_MAX_BYTES
    ) -> str | None:
        value = values.get(path.rsplit(".", 1)[-1])
        if value is None:
            return None
        if isinstance(value, str) and value.strip():
            return value if self._sendable(path, value, max_bytes) else None
        self.problems.expected(path, what, value)
        return None

    def _sendable(self, path: str, value: str, max_bytes: int) -> bool:
        """True if ``value`` can go into an MQTT packet; else the problem is recorded."""
        problem = _mqtt_string_problem(value, max_bytes)
        if problem is None:
            return True
        self.problems.add(path, f"expected {problem}")
        return False

    def topic_prefix(self, path: str, values: Mapping[str, Any], default: str) -> str:
        """Leading topic levels: ``/`` between levels, no wildcards, not a ``$`` system topic."""
        value = values.get(path.rsplit(".", 1)[-1], default)
        if (
            isinstance(value, str)
            and value
            and not any(c in value for c in _TOPIC_FORBIDDEN)
            and not value.startswith(("/", "$"))
            and not value.endswith("/")
            and "//" not in value
        ):
            return value if self._sendable(path, value, TOPIC_PREFIX_MAX_BYTES) else default
        self.problems.expected(path, "topic levels separated by / (no +, #, empty level or leading $)", value)
        return default

    def topic_level(self, path: str, values: Mapping[str, Any], default: str | None) -> str | None:
        """One topic level (no ``/``, no wildcards); None only where the default is None."""
        value = values.get(path.rsplit(".", 1)[-1], default)
        if value is None and default is None:
            return None
        if (
            isinstance(value, str)
            and value
            and not any(c in value for c in (*_TOPIC_FORBIDDEN, "/"))
            and not value.startswith("$")
        ):
            return value if self._sendable(path, value, TOPIC_LEVEL_MAX_BYTES) else default
        what = "one topic level (no /, +, # or leading $)" + (" or null" if default is None else "")
        self.problems.expected(path, what, value)
        return default

    def path(self, key: str, value: Any, *, what: str) -> Path | None:
        if value is None:
            return None
        if isinstance(value, Path):  # a default
            return value
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            self.problems.expected(key, what, value)
            return None
        return self.base_dir / Path(value).expanduser()
