"""config.yaml loading: defaults, a full config, and the exact text of every kind of problem."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from kwsd.config import (
    AudioConfig,
    Channel,
    Config,
    ConfigError,
    HermesConfig,
    HomeAssistantConfig,
    LogLevel,
    MqttConfig,
    QoS,
    TlsConfig,
    default_config,
    load_config,
    parse_config,
)
from kwsd.detection import KEYS as DETECTION_KEYS
from kwsd.detection import resolve_detection
from kwsd.errors import KwsdError
from kwsd.smoother import FiringRule

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.yaml"


def problems(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", base_dir=tmp_path, environ=environ or {})
    return caught.value.problems


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and the example file ----------------------------------------------------------


def test_an_empty_file_means_the_defaults(tmp_path: Path) -> None:
    for text in ("", "# only a comment\n", "---\n", "audio:\nmqtt:\ndetection:\n"):
        assert parse_config(text, base_dir=tmp_path, environ={}) == default_config()


def test_default_values() -> None:
    config = default_config()
    assert config.model is None
    assert config.audio == AudioConfig(None, None, 1, Channel.MIX, 20, 200, 2000)
    assert config.detection == {}
    assert config.mqtt.host is None
    assert config.mqtt.port == 1883
    assert config.mqtt.qos is QoS.AT_LEAST_ONCE
    assert config.mqtt.spool_dir == Path("/var/lib/kwsd/spool")
    assert config.mqtt.tls == TlsConfig(False, None, None, None, False)
    assert config.stats_interval_s == 60
    assert config.log_level is LogLevel.INFO


def test_the_example_config_is_the_defaults() -> None:
    assert load_config(EXAMPLE, environ={}) == default_config()


def _keys(cls: type[Any], prefix: str = "") -> list[str]:
    out = []
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        if item.name == "detection":
            out += [f"{path}.{key}" for key in DETECTION_KEYS]
        elif dataclasses.is_dataclass(item.default_factory):
            out += _keys(item.default_factory, f"{path}.")
        else:
            out.append(path)
    return out


def _file_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("label_thresholds", "states"):
            out += _file_keys(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_the_example_config_sets_every_key_each_under_a_comment() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert sorted(_file_keys(yaml.safe_load(text))) == sorted(_keys(Config))
    lines = text.splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):  # a leaf key
            assert lines[number - 1].strip().startswith("#"), f"no comment above {stripped!r}"


# --- a full valid config --------------------------------------------------------------------

FULL = """\
model: models/hey.kwsd
audio:
  device: USB
  sample_rate_hz: 48000
  channels: 2
  channel: 1
  block_ms: 10
  queue_blocks: 50
  stall_timeout_ms: 1500
detection:
  clip_stride_ms: 40
  average_window_ms: 800
  threshold: 1
  label_thresholds: {yes: 0.8, no: 0.7, on: 0.5}
  suppression_ms: null
  minimum_count: 2
  rule: micro
mqtt:
  host: broker.lan
  port: 8883
  client_id: kitchen-kwsd
  username: kwsd
  password_file: secrets/mqtt
  tls:
    enabled: true
    ca_file: tls/ca.pem
    cert_file: tls/client.pem
    key_file: /abs/never-read-before-this-check
    insecure: true
  topic_prefix: home/kwsd
  device_id: kitchen
  qos: 2
  keepalive_s: 30
  queue_max: 50
  spool_dir: null
  spool_max: 10
  home_assistant:
    enabled: true
    discovery_prefix: ha
  hermes:
    enabled: true
    site_id: kitchen
  scores_interval_ms: 250
stats_interval_s: 0
log_level: debug
"""


def test_a_full_valid_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "tls").mkdir()
    write(tmp_path / "secrets" / "mqtt", "s3cret\n")
    for name in ("ca.pem", "client.pem", "client.key"):
        write(tmp_path / "tls" / name, "PEM\n")
    text = FULL.replace("/abs/never-read-before-this-check", str(tmp_path / "tls" / "client.key"))
    config = load_config(write(tmp_path / "kwsd.yaml", text), environ={})
    assert config == Config(
        model=tmp_path / "models" / "hey.kwsd",
        audio=AudioConfig("USB", 48000, 2, 1, 10, 50, 1500),
        detection={
            "clip_stride_ms": 40,
            "average_window_ms": 800,
            "minimum_count": 2,
            "threshold": 1.0,
            "rule": "micro",
            "label_thresholds": {"yes": 0.8, "no": 0.7, "on": 0.5},
        },
        mqtt=MqttConfig(
            host="broker.lan",
            port=8883,
            client_id="kitchen-kwsd",
            username="kwsd",
            password="s3cret",
            password_file=tmp_path / "secrets" / "mqtt",
            password_env=None,
            tls=TlsConfig(
                True,
                tmp_path / "tls" / "ca.pem",
                tmp_path / "tls" / "client.pem",
                tmp_path / "tls" / "client.key",
                True,
            ),
            topic_prefix="home/kwsd",
            device_id="kitchen",
            qos=QoS.EXACTLY_ONCE,
            keepalive_s=30,
            queue_max=50,
            spool_dir=None,
            spool_max=10,
            home_assistant=HomeAssistantConfig(True, "ha"),
            hermes=HermesConfig(True, "kitchen"),
            scores_interval_ms=250,
        ),
        stats_interval_s=0,
        log_level=LogLevel.DEBUG,
    )
    assert type(config.detection["threshold"]) is float  # an int is accepted where a number is expected
    assert config.log_level.logging_level == logging.DEBUG


def test_detection_keeps_only_what_the_file_gives_and_merges_with_the_bundle(tmp_path: Path) -> None:
    config = parse_config(
        "detection:\n  threshold: 0.6\n  rule: null\n  label_thresholds: {yes: 0.9}\n", base_dir=tmp_path
    )
    assert config.detection == {"threshold": 0.6, "label_thresholds": {"yes": 0.9}}
    assert parse_config("detection: {label_thresholds: {}}\n").detection == {}
    settings = resolve_detection(
        {"threshold": 0.3, "suppression_ms": 700, "label_thresholds": {"no": 0.4}},
        config.detection,
        window_stride_ms=20,
    )
    assert (settings.threshold, settings.suppression_ms, settings.rule) == (0.6, 700, FiringRule.TF)
    assert settings.label_thresholds == {"no": 0.4, "yes": 0.9}
    assert settings.clip_stride_ms == 20


def test_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "etc"
    folder.mkdir()
    config = load_config(write(folder / "c.yaml", "model: m.kwsd\nmqtt:\n  spool_dir: spool\n"))
    assert (config.model, config.mqtt.spool_dir) == (folder / "m.kwsd", folder / "spool")
    assert load_config(write(folder / "c.yaml", "model: /opt/m.kwsd\n")).model == Path("/opt/m.kwsd")
    assert load_config(write(folder / "c.yaml", "model: ~/m.kwsd\n")).model == tmp_path / "home" / "m.kwsd"


def test_channel_device_and_qos_forms(tmp_path: Path) -> None:
    config = parse_config("audio: {device: 3, channels: 4, channel: 3}\nmqtt: {qos: 0}\n", base_dir=tmp_path)
    assert (config.audio.device, config.audio.channel, config.mqtt.qos) == (3, 3, QoS.AT_MOST_ONCE)


# --- problems, one kind at a time -----------------------------------------------------------

NEEDS_HOST = "given without mqtt.host; set mqtt.host, or remove it to print events to stdout"
TLS_OFF = (
    "given while mqtt.tls.enabled is false; set enabled: true to use TLS, or remove it "
    "(no silent fallback to plain text)"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt:\n  port: abc\n", ["mqtt.port: expected an integer 1..65535, got 'abc'"]),
        ("mqtt:\n  port: 0\n", ["mqtt.port: expected an integer 1..65535, got 0"]),
        ("mqtt:\n  port: true\n", ["mqtt.port: expected an integer 1..65535, got True"]),
        ("mqtt:\n  port: 1883.0\n", ["mqtt.port: expected an integer 1..65535, got 1883.0"]),
        ("mqtt:\n  hots: x\n", ["mqtt.hots: unknown key; did you mean 'host'?"]),
        ("modle: x.kwsd\n", ["modle: unknown key; did you mean 'model'?"]),
        (
            "zzz: 1\n",
            [
                "zzz: unknown key; expected one of model, models, audio, detection, mqtt, capture, "
                "stats_interval_s, log_level"
            ],
        ),
        (
            "detection:\n  treshold: 0.5\n",
            ["detection.treshold: unknown key; did you mean 'threshold'?"],
        ),
        ("[1, 2]\n", ["top level: expected a mapping of settings, got a list"]),
        ("just text\n", ["top level: expected a mapping of settings, got 'just text'"]),
        ("audio: 5\n", ["audio: expected a mapping of settings, got 5"]),
        ("detection: [1]\n", ["detection: expected a mapping of settings, got a list"]),
        ("model: 3\n", ["model: expected a path to a .kwsd bundle or null, got 3"]),
        ("model: ''\n", ["model: expected a path to a .kwsd bundle or null, got ''"]),
        (
            "audio:\n  device: -1\n",
            ["audio.device: expected a device name (or part of one), a device index >= 0 or null, got -1"],
        ),
        (
            "audio:\n  sample_rate_hz: 44100.0\n",
            ["audio.sample_rate_hz: expected a rate in Hz 8000..384000 or null, got 44100.0"],
        ),
        ("audio:\n  channels: 33\n", ["audio.channels: expected a whole number of channels 1..32, got 33"]),
        (
            "audio:\n  channel: 1\n",
            ['audio.channel: expected "mix" or a channel index 0..0 (audio.channels is 1), got 1'],
        ),
        (
            "audio:\n  channel: left\n  channels: 2\n",
            ["audio.channel: expected \"mix\" or a channel index 0..1 (audio.channels is 2), got 'left'"],
        ),
        (
            "audio:\n  block_ms: 0\n",
            ["audio.block_ms: expected a whole number of milliseconds 1..1000, got 0"],
        ),
        (
            "audio:\n  queue_blocks: 1\n",
            ["audio.queue_blocks: expected a whole number of blocks >= 2, got 1"],
        ),
        (
            "audio:\n  stall_timeout_ms: 99\n",
            ["audio.stall_timeout_ms: expected a whole number of milliseconds >= 100, got 99"],
        ),
        (
            "audio:\n  block_ms: 100\n  stall_timeout_ms: 150\n",
            ["audio.stall_timeout_ms: expected at least 2 blocks of audio.block_ms (200 ms), got 150"],
        ),
        ("detection:\n  threshold: 1.5\n", ["detection.threshold: expected a number from 0 to 1, got 1.5"]),
        (
            "detection:\n  clip_stride_ms: 20.5\n",
            ["detection.clip_stride_ms: expected a whole number of milliseconds, got 20.5"],
        ),
        ("detection:\n  minimum_count: 0\n", ["detection.minimum_count: expected >= 1, got 0"]),
        ("detection:\n  rule: fancy\n", ["detection.rule: expected one of tf, micro, got 'fancy'"]),
        (
            "detection:\n  label_thresholds: [yes]\n",
            ["detection.label_thresholds: expected a mapping of label to 0..1, got ['yes']"],
        ),
        (
            "detection:\n  label_thresholds: {yes: 2, no: 0.5, off: x}\n",
            [
                "detection.label_thresholds.yes: expected a number from 0 to 1, got 2",
                "detection.label_thresholds.off: expected a number from 0 to 1, got 'x'",
            ],
        ),
        (
            "mqtt:\n  host: ''\n",
            ["mqtt.host: expected a broker host name or address, or null (no broker), got ''"],
        ),
        ("mqtt:\n  qos: 3\n", ["mqtt.qos: expected one of 0, 1, 2, got 3"]),
        ("mqtt:\n  qos: '1'\n", ["mqtt.qos: expected one of 0, 1, 2, got '1'"]),
        (
            "mqtt:\n  keepalive_s: 0\n",
            ["mqtt.keepalive_s: expected a whole number of seconds 1..65535, got 0"],
        ),
        ("mqtt:\n  queue_max: 0\n", ["mqtt.queue_max: expected a whole number of detections >= 1, got 0"]),
        (
            "detection:\n  states:\n"
            "    crying: {on_threshold: 0.4, off_threshold: 0.8, min_on_ms: 0, min_off_ms: 0}\n",
            [
                "detection.states.crying.off_threshold: expected 0 <= off_threshold <= on_threshold <= 1, "
                "got off 0.8 and on 0.4"
            ],
        ),
        (
            "detection:\n  states:\n    crying: {on_threshold: 0.8, off_threshold: 0.4, min_on_ms: 500}\n",
            [
                "detection.states.crying.min_off_ms: missing (a state label needs on_threshold, "
                "off_threshold, min_on_ms, min_off_ms)"
            ],
        ),
        (
            "capture:\n  near_miss_threshold: 1.5\n  pre_ms: -1\n",
            [
                "capture.near_miss_threshold: expected a score 0..1 or null (detections only), got 1.5",
                "capture.pre_ms: expected a whole number of ms 0..60000, got -1",
            ],
        ),
        (
            "mqtt:\n  scores_interval_ms: 50\n",
            ["mqtt.scores_interval_ms: expected 0 (none) or a whole number of ms >= 100, got 50"],
        ),
        (
            "mqtt:\n  scores_interval_ms: true\n",
            ["mqtt.scores_interval_ms: expected 0 (none) or a whole number of ms >= 100, got True"],
        ),
        ("mqtt:\n  spool_max: -5\n", ["mqtt.spool_max: expected a whole number of detections >= 1, got -5"]),
        ("mqtt:\n  spool_dir: 5\n", ["mqtt.spool_dir: expected a folder path or null (no spool), got 5"]),
        (
            "mqtt:\n  topic_prefix: home/+/kwsd\n",
            [
                "mqtt.topic_prefix: expected topic levels separated by / "
                "(no +, #, empty level or leading $), got 'home/+/kwsd'"
            ],
        ),
        (
            "mqtt:\n  topic_prefix: kwsd/\n",
            [
                "mqtt.topic_prefix: expected topic levels separated by / "
                "(no +, #, empty level or leading $), got 'kwsd/'"
            ],
        ),
        (
            "mqtt:\n  device_id: a/b\n",
            ["mqtt.device_id: expected one topic level (no /, +, # or leading $) or null, got 'a/b'"],
        ),
        (
            "mqtt:\n  hermes:\n    site_id: '#'\n",
            ["mqtt.hermes.site_id: expected one topic level (no /, +, # or leading $), got '#'"],
        ),
        (
            "mqtt:\n  home_assistant:\n    enabled: yes\n",
            ["mqtt.home_assistant.enabled: expected true or false, got 'yes'"],
        ),
        ("mqtt:\n  tls:\n    enabled: 1\n", ["mqtt.tls.enabled: expected true or false, got 1"]),
        ("stats_interval_s: -1\n", ["stats_interval_s: expected a whole number of seconds >= 0, got -1"]),
        ("stats_interval_s: 0.5\n", ["stats_interval_s: expected a whole number of seconds >= 0, got 0.5"]),
        ("log_level: INFO\n", ["log_level: expected one of debug, info, warning, error, got 'INFO'"]),
        ("mqtt:\n  username: u\n", [f"mqtt.username: {NEEDS_HOST}"]),
        ("mqtt:\n  hermes: {enabled: true}\n", [f"mqtt.hermes.enabled: {NEEDS_HOST}"]),
        ("mqtt:\n  home_assistant: {enabled: true}\n", [f"mqtt.home_assistant.enabled: {NEEDS_HOST}"]),
        (
            "mqtt:\n  host: b\n  tls:\n    ca_file: ca.pem\n    insecure: true\n",
            [f"mqtt.tls.ca_file: {TLS_OFF}", f"mqtt.tls.insecure: {TLS_OFF}"],
        ),
        (
            "mqtt:\n  host: b\n  password: pw\n",
            ["mqtt.password: a password needs mqtt.username (MQTT sends none without one)"],
        ),
        (
            "mqtt:\n  host: b\n  username: u\n  password: 1234\n",
            ["mqtt.password: expected a string (quote it), got a value of type int"],
        ),
    ],
)
def test_each_problem_is_named_with_its_key(text: str, expected: list[str], tmp_path: Path) -> None:
    assert problems(text, tmp_path) == expected


def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path) -> None:
    assert problems("audio:\n  channels: 1\n   block_ms: 20\n", tmp_path) == [
        "line 3, column 12: invalid YAML: mapping values are not allowed here"
    ]
    assert problems("mqtt: {host: b\nlog_level: info\n", tmp_path) == [
        "line 2, column 10: invalid YAML: while parsing a flow mapping, expected ',' or '}', but got ':'"
    ]
    assert problems("a: 1\n---\nb: 2\n", tmp_path) == [
        "line 2, column 1: invalid YAML: expected a single document in the stream, but found another document"
    ]


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    text = (
        "mqtt:\n  port: 1883\n  host: b\n  port: 1884\ndetection:\n  label_thresholds: {yes: 0.5, yes: 0.6}\n"
    )
    assert problems(text, tmp_path) == [
        "mqtt.port: duplicate key (line 4; first given on line 2)",
        "detection.label_thresholds.yes: duplicate key (line 6; first given on line 6)",
    ]


def test_every_problem_is_reported_together_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "kwsd.yaml",
        "log_level: loud\n"
        "audio:\n"
        "  channels: 0\n"
        "  channel: 5\n"
        "mqtt:\n"
        "  hots: broker\n"
        "  port: abc\n"
        "detection:\n"
        "  threshold: 2\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    err = caught.value
    assert isinstance(err, KwsdError)
    assert err.source == str(path)
    assert str(err) == "\n".join(
        f"{path}: {line}"
        for line in [
            "log_level: expected one of debug, info, warning, error, got 'loud'",
            "audio.channels: expected a whole number of channels 1..32, got 0",
            "mqtt.hots: unknown key; did you mean 'host'?",
            "mqtt.port: expected an integer 1..65535, got 'abc'",
            "detection.threshold: expected a number from 0 to 1, got 2",
        ]
    )


def test_a_missing_or_undecodable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert (
        str(caught.value) == f"{tmp_path / 'absent.yaml'}: cannot read the file (No such file or directory)"
    )
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"mqtt:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == ["expected UTF-8 text, got byte 0xe9 on line 2"]


def test_yes_no_on_off_are_strings_not_booleans(tmp_path: Path) -> None:
    config = parse_config("detection:\n  label_thresholds: {yes: 0.1, no: 0.2, on: 0.3, off: 0.4}\n")
    assert config.detection["label_thresholds"] == {"yes": 0.1, "no": 0.2, "on": 0.3, "off": 0.4}


# --- secrets --------------------------------------------------------------------------------

BROKER = "mqtt:\n  host: b\n  username: u\n"


def test_password_from_a_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    write(tmp_path / "pw", "p w\n\n")
    config = load_config(write(tmp_path / "c.yaml", BROKER + "  password_file: pw\n"))
    assert (config.mqtt.password, config.mqtt.password_file) == ("p w\n", tmp_path / "pw")
    (tmp_path / "pw").write_bytes(b"secret\r\n")
    assert load_config(tmp_path / "c.yaml").mqtt.password == "secret"


def test_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KWSD_MQTT_PASSWORD", "from-env")
    config = load_config(write(tmp_path / "c.yaml", BROKER + "  password_env: KWSD_MQTT_PASSWORD\n"))
    assert (config.mqtt.password, config.mqtt.password_env) == ("from-env", "KWSD_MQTT_PASSWORD")
    monkeypatch.delenv("KWSD_MQTT_PASSWORD")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert caught.value.problems == ["mqtt.password_env: environment variable KWSD_MQTT_PASSWORD is not set"]
    monkeypatch.setenv("KWSD_MQTT_PASSWORD", "")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert caught.value.problems == ["mqtt.password_env: environment variable KWSD_MQTT_PASSWORD is empty"]


def test_password_problems(tmp_path: Path) -> None:
    assert problems(BROKER + "  password_file: absent\n", tmp_path) == [
        f"mqtt.password_file: cannot read {tmp_path / 'absent'} (No such file or directory)"
    ]
    assert problems(BROKER + "  password_file: .\n", tmp_path) == [
        f"mqtt.password_file: cannot read {tmp_path / '.'} (Is a directory)"
    ]
    write(tmp_path / "empty", "\n")
    assert problems(BROKER + "  password_file: empty\n", tmp_path) == [
        f"mqtt.password_file: expected a password in {tmp_path / 'empty'}, got an empty file"
    ]
    assert problems(BROKER + "  password: a\n  password_file: pw\n  password_env: PW\n", tmp_path) == [
        "mqtt.password: expected at most one of password, password_file and password_env, "
        "got password and password_file and password_env"
    ]
    assert problems(BROKER + "  password_env: A=B\n", tmp_path) == [
        "mqtt.password_env: expected the name of an environment variable or null, got 'A=B'"
    ]


def test_the_password_never_appears_in_repr(tmp_path: Path) -> None:
    config = parse_config(BROKER + "  password: hunter2\n", base_dir=tmp_path)
    assert config.mqtt.password == "hunter2"
    for text in (repr(config), str(config), repr(config.mqtt)):
        assert "hunter2" not in text
        assert "password='<hidden>'" in text
    assert "password=None" in repr(default_config().mqtt)
    with pytest.raises(ConfigError) as caught:
        parse_config(BROKER + "  pasword: hunter2\n")
    assert "hunter2" not in str(caught.value)


# --- TLS ------------------------------------------------------------------------------------


def test_tls_with_the_system_cas(tmp_path: Path) -> None:
    config = parse_config("mqtt:\n  host: b\n  tls:\n    enabled: true\n", base_dir=tmp_path)
    assert config.mqtt.tls == TlsConfig(enabled=True)


def test_tls_problems(tmp_path: Path) -> None:
    write(tmp_path / "client.pem", "PEM\n")
    text = "mqtt:\n  host: b\n  tls:\n    enabled: true\n    ca_file: ca.pem\n    cert_file: client.pem\n"
    assert problems(text, tmp_path) == [
        f"mqtt.tls.ca_file: expected a readable file, got {tmp_path / 'ca.pem'} (No such file or directory)",
        "mqtt.tls.cert_file: needs mqtt.tls.key_file too (certificate and key go together)",
    ]
    text = "mqtt:\n  host: b\n  tls:\n    enabled: true\n    key_file: client.pem\n"
    assert problems(text, tmp_path) == [
        "mqtt.tls.key_file: needs mqtt.tls.cert_file too (certificate and key go together)"
    ]
    assert problems("mqtt:\n  tls:\n    enabled: true\n", tmp_path) == [f"mqtt.tls.enabled: {NEEDS_HOST}"]


def test_config_error_lists_its_problems_one_per_line() -> None:
    err = ConfigError(["a: expected x, got 1", "b.c: unknown key"], source="/etc/kwsd/config.yaml")
    assert str(err) == "/etc/kwsd/config.yaml: a: expected x, got 1\n/etc/kwsd/config.yaml: b.c: unknown key"
    assert (err.problems, err.source) == (
        ["a: expected x, got 1", "b.c: unknown key"],
        "/etc/kwsd/config.yaml",
    )


def test_enums() -> None:
    assert [level.logging_level for level in LogLevel] == [
        logging.DEBUG,
        logging.INFO,
        logging.WARNING,
        logging.ERROR,
    ]
    assert [int(qos) for qos in QoS] == [0, 1, 2]
    assert Channel("mix") is Channel.MIX


# --- hostile documents: a config problem (exit 78), never a crash or a hang ------------------


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt:\n  host: a\x01b\n", "line 2, column 10: character U+0001 is not allowed in YAML"),
        ("audio:\n  block_ms: \x1b[31m\n", "line 2, column 13: character U+001B is not allowed in YAML"),
        ("audio:\n  block_ms: " + "9" * 5000 + "\n", "line 2: a number of 5000 characters (at most 100)"),
        ("a: " + "[" * 2000 + "]" * 2000 + "\n", "nested more than 32 levels deep"),
        ("a: " + "{b: " * 40 + "1" + "}" * 40 + "\n", "line 1: nested more than 32 levels deep"),
        ("a: &a [*a]\n", "line 1: an alias refers to a value that holds it"),
        ("a: &a {b: *a}\n", "line 1: an alias refers to a value that holds it"),
        (_laughs(10), "more than 20000 values (aliases counted each time they are used)"),
    ],
)
def test_hostile_yaml_is_a_problem_not_a_crash(text: str, expected: str, tmp_path: Path) -> None:
    found = problems(text, tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_aliases_within_the_bounds_still_work(tmp_path: Path) -> None:
    text = "mqtt:\n  host: &h broker.lan\n  client_id: *h\n"
    config = parse_config(text, "c.yaml", base_dir=tmp_path, environ={})
    assert config.mqtt.host == config.mqtt.client_id == "broker.lan"


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        # Once passed check-config, then killed paho's network thread (never connected).
        (
            "mqtt:\n  client_id: " + "c" * 65_536 + "\n",
            "mqtt.client_id",
            "at most 65,535 bytes of UTF-8 (got 65,536)",
        ),
        (
            "mqtt:\n  client_id: " + "é" * 40_000 + "\n",
            "mqtt.client_id",
            "at most 65,535 bytes of UTF-8 (got 80,000)",
        ),
        ("mqtt:\n  host: " + "h" * 254 + "\n", "mqtt.host", "at most 253 bytes of UTF-8 (got 254)"),
        # Once exited 70 in run.
        ("mqtt:\n  topic_prefix: " + "t/" * 600 + "t\n", "mqtt.topic_prefix", "at most 1,024 bytes of UTF-8"),
        (
            'mqtt:\n  device_id: "pi\\udc80"\n',
            "mqtt.device_id",
            "text that UTF-8 can encode (it holds a lone surrogate)",
        ),
        ('mqtt:\n  username: "\\ud800"\n', "mqtt.username", "text that UTF-8 can encode"),
        ("mqtt:\n  device_id: " + "d" * 257 + "\n", "mqtt.device_id", "at most 256 bytes of UTF-8 (got 257)"),
    ],
)
def test_mqtt_strings_that_cannot_be_sent_are_config_problems(
    text: str, key: str, expected: str, tmp_path: Path
) -> None:
    found = problems(text, tmp_path)
    assert len(found) == 1 and found[0].startswith(key) and expected in found[0], found


def test_secrets_readable_by_every_user_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kwsd.config import load_config

    secret = write(tmp_path / "secret", "hunter2\n")
    inline = write(tmp_path / "inline.yaml", "mqtt:\n  host: h\n  username: u\n  password: hunter2\n")
    by_file = write(
        tmp_path / "by-file.yaml", f"mqtt:\n  host: h\n  username: u\n  password_file: {secret}\n"
    )
    for path in (secret, inline, by_file):
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="kwsd.config"):
        load_config(inline)
        load_config(by_file)
    said = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"{inline} holds mqtt.password and is readable by every user (mode 0644)") for m in said
    )
    assert any(m.startswith(f"{secret} (mqtt.password_file) holds the MQTT password") for m in said)
    assert not any(m.startswith(str(by_file)) for m in said)  # it holds no secret itself
    caplog.clear()
    for path in (secret, inline):
        path.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="kwsd.config"):
        load_config(inline)
        load_config(by_file)
    assert caplog.records == []
