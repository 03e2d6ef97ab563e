"""``kwsd run``: config -> model -> pipeline -> listener, and SIGHUP reload. Wiring only.

Everything that can be checked is checked before the device opens (a bad config, model or
TLS file raises :class:`kwsd.config.ConfigError` or a model error, which the CLI turns into
its exit code). Then :class:`kwsd.listener.Listener` runs on the main thread until SIGTERM or
SIGINT.

Reload (SIGHUP): the config file is read and checked again, as at start. If anything is wrong
it is rejected as a whole, each problem is logged with its key, and the running settings stay.
Otherwise it becomes a :class:`kwsd.listener.Reload` value, which the listener applies between
blocks, without stopping the audio:

* ``detection.*`` (thresholds, averaging window, suppression, clip stride, rule) apply from the
  next window; the smoother keeps its history, so a word is not reported twice;
* ``mqtt.*`` changes close the publisher (waiting at most :data:`RELOAD_CLOSE_TIMEOUT_S` for
  what it holds) and open a new one that first sends whatever the old one had not delivered,
  on a thread of their own while the listener goes on hearing (detections meanwhile wait, in
  order, and go first to the new one; a reload requested meanwhile waits until it is done);
  ``offline`` is published only if the broker or the status topic changes;
* ``stats_interval_s`` and ``log_level`` apply at once;
* ``model`` and ``audio.*`` need a restart: a change to them is logged as not applied.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from kwsd.bundle import Bundle, demo_bundle_path, read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.config import Channel, Config, ConfigError, ModelConfig, default_config, load_config
from kwsd.detection import DetectionError, DetectionSettings, resolve_detection
from kwsd.gate import describe as describe_gate
from kwsd.listener import Listener, Reload
from kwsd.notify import SystemdNotifier
from kwsd.pipeline import Model, MultiPipeline, PipelineError, check_gate, check_keywords, check_rates
from kwsd.publisher import EventStamper, Publisher, StdoutPublisher
from kwsd.smoother import RecognizeCommands, SmootherError
from kwsd.sources import MicrophoneSource
from kwsd.state import StateError, StateTracker

if TYPE_CHECKING:
    from kwsd.capture import CaptureRecorder
    from kwsd.mqtt import ModelFacts

log = logging.getLogger(__name__)

#: How long a reload waits for the old MQTT publisher to deliver what it holds.
RELOAD_CLOSE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class LoadedModel:
    """One model ``kwsd run`` listens with: its bundle, interpreter and detection settings."""

    bundle: Bundle
    classifier: TfliteClassifier
    detection: DetectionSettings
    #: The name its detections carry inside the pipeline: the bundle's name, made unique.
    key: str


@dataclass(frozen=True)
class Prepared:
    """Everything ``kwsd run`` builds and checks before it opens the device."""

    config: Config
    source: str  # the config file, for messages ("<defaults>" without one)
    models: tuple[LoadedModel, ...]

    @property
    def bundle(self) -> Bundle:
        """The first model's bundle (the only one, unless the config has ``models``)."""
        return self.models[0].bundle

    @property
    def classifier(self) -> TfliteClassifier:
        return self.models[0].classifier

    @property
    def detection(self) -> DetectionSettings:
        return self.models[0].detection


def prepare(config_path: str | None) -> Prepared:
    """Load and check the config, the models it names and the settings against them.

    ``kwsd run`` and ``kwsd check-config`` both call this, so a config that one refuses the
    other refuses too, with the same message and exit code: ConfigError (78) for the file and
    for settings that do not fit a model, InputNotFoundError (66) for a model file that is
    not there, ModelError (67) for one that cannot be used. Opens no device and no connection.
    """
    prepared = prepare_model(config_path)
    config, source = prepared.config, prepared.source
    _check_mqtt(config, source)
    if config.capture.enabled:
        from kwsd.capture import CaptureError, check_folder

        try:
            check_folder(config.capture.directory)
        except CaptureError as err:
            raise ConfigError([f"capture.directory: {err}"], source=source) from None
    return prepared


def prepare_model(config_path: str | None, model_paths: Sequence[str] = ()) -> Prepared:
    """The config, the models and their detection settings, loaded and checked as
    :func:`prepare` checks them, with the same errors; ``model_paths`` (``-m``, given once or
    more) over the config's ``model`` and ``models``.

    What a server that takes its audio from clients (``kwsd wyoming``) needs of ``kwsd run``'s
    start: no device, MQTT or capture settings are checked here.
    """
    source = config_path or "<defaults>"
    config = load_config(config_path) if config_path else default_config()
    entries = tuple(ModelConfig(Path(p)) for p in model_paths) or config.model_entries()
    bundles = [read_bundle(entry.path if entry else demo_bundle_path()) for entry in entries]
    where = [str(entry.path) if entry else "the built-in demo" for entry in entries]
    try:
        check_keywords(list(zip(where, (b.labels for b in bundles), strict=True)))
        check_rates(list(zip(where, (b.frontend.sample_rate_hz for b in bundles), strict=True)))
    except PipelineError as err:
        raise ConfigError([f"models: {err}"], source=source) from None
    several = len(bundles) > 1
    settings = [
        _detection(bundle, config, source, entry, several=several)
        for bundle, entry in zip(bundles, entries, strict=True)
    ]
    if several:
        _check_label_keys(config, bundles, source)
    if config.audio.gate.enabled:
        for bundle in bundles:
            try:
                check_gate(bundle.name, bundle.labels)
            except PipelineError as err:
                raise ConfigError([str(err)], source=source) from None
    keys = _unique_names([bundle.name for bundle in bundles])
    models = tuple(
        LoadedModel(bundle, TfliteClassifier(bundle), one, key)
        for bundle, one, key in zip(bundles, settings, keys, strict=True)
    )
    return Prepared(config, source, models)


def _unique_names(names: list[str]) -> list[str]:
    """``names`` with a ``#2``, ``#3``... after a name that came before."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


@dataclass
class _Running:
    """What the daemon runs with now; replaced piece by piece on reload."""

    config: Config
    source: str  # the config file, for messages ("<defaults>" without one)
    #: Where a StdoutPublisher writes events (``--scores``: through the score display).
    stdout: TextIO | None = None


def run_daemon(config_path: str | None, *, verbose: bool, scores: bool = False) -> None:
    """Run until SIGTERM/SIGINT. Raises ConfigError (and model errors) before any device opens.

    ``scores``: each window's smoothed scores on stdout too (:mod:`kwsd.scores`).
    """
    prepared = prepare(config_path)
    if not verbose:
        logging.getLogger().setLevel(prepared.config.log_level.logging_level)
    stop = threading.Event()
    # Before the first worker starts (paho's thread connects at once).
    died = _stop_when_a_thread_dies(stop)
    try:
        _listen(prepared, config_path, stop, verbose=verbose, scores=scores)
    finally:
        threading.excepthook = threading.__excepthook__
    if died:
        thread = died[0].thread
        name = thread.name if thread is not None else "a thread"
        raise WorkerDied(f"{name} died; kwsd stopped rather than go on without it") from died[0].exc_value


def _listen(
    prepared: Prepared, config_path: str | None, stop: threading.Event, *, verbose: bool, scores: bool
) -> None:
    config, source, models = prepared.config, prepared.source, prepared.models
    pipeline = MultiPipeline(
        [Model(m.key, m.bundle.frontend, m.classifier, tuple(m.bundle.labels), m.detection) for m in models],
        gate=config.audio.gate,
    )
    if len(models) > 1:
        described = ", ".join(f"{m.key} ({', '.join(m.bundle.labels)})" for m in models)
        log.info("%s: %s", pipeline.sharing(), described)
    if config.audio.gate.enabled:
        log.info("audio.gate: %s", describe_gate(config.audio.gate))
    stdout: TextIO | None = None
    if scores:
        from kwsd.scores import ScoreDisplay

        display = ScoreDisplay(sys.stdout, pipeline.labels, lambda: pipeline)
        pipeline.on_smoothed = display.window
        stdout = cast(TextIO, display)  # events on stdout go above the meter
    publisher = _publisher(config, source, models, stdout=stdout)
    running = _Running(config, source, stdout)
    audio = config.audio

    def open_source() -> MicrophoneSource:
        return MicrophoneSource(
            audio.device,
            pipeline.sample_rate_hz,
            open_rate_hz=audio.sample_rate_hz,
            channels=audio.channels,
            channel="mix" if audio.channel is Channel.MIX else audio.channel,
            block_ms=audio.block_ms,
            queue_blocks=audio.queue_blocks,
        )

    def reload() -> Reload | None:
        assert config_path is not None  # no reloader without a config file
        log.info("SIGHUP: reloading %s", source)
        return _reload(running, config_path, models, verbose=verbose)

    first = models[0].bundle
    listener = Listener(
        open_source,
        pipeline,
        publisher,
        EventStamper(
            first.name, first.sha256, models={m.key: (m.bundle.name, m.bundle.sha256) for m in models}
        ),
        capture=_capture(config, models),
        stall_timeout_ms=audio.stall_timeout_ms,
        notifier=SystemdNotifier(),
        stats_interval_s=config.stats_interval_s,
        reloader=reload if config_path else None,
    )

    # The handlers only set flags: one that logged could interrupt the main thread's own write
    # to stderr, and Python 3.13 then fails that write ("reentrant call": a Logging error seen
    # under a storm of SIGHUPs). The reload logs as the listener applies it; the stop below.
    stopped_by: list[int] = []

    def request_stop(signum: int, _frame: Any) -> None:
        stopped_by.append(signum)
        stop.set()

    def request_reload(_signum: int, _frame: Any) -> None:
        listener.request_reload()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    listener.run(stop)
    if stopped_by:
        log.info("%s: stopping", signal.Signals(stopped_by[0]).name)


class WorkerDied(RuntimeError):
    """A thread of kwsd's ended with an exception: a bug. kwsd stops with exit 70 (systemd
    restarts it) rather than go on without it (paho's network thread dead is MQTT gone)."""


def _stop_when_a_thread_dies(stop: threading.Event) -> list[threading.ExceptHookArgs]:
    """Any thread's uncaught exception is logged with its traceback and stops the listener
    (which closes the publisher: the spool keeps what was not delivered). The list fills with
    the threads that died."""
    died: list[threading.ExceptHookArgs] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        died.append(args)
        name = args.thread.name if args.thread is not None else "a thread"
        log.critical(
            "%s died (%s: %s); stopping",
            name,
            args.exc_type.__name__,
            args.exc_value,
            exc_info=args.exc_value,
        )
        stop.set()

    threading.excepthook = hook
    return died


def _detection(
    bundle: Bundle, config: Config, source: str, entry: ModelConfig | None = None, *, several: bool = False
) -> DetectionSettings:
    """The config's detection settings over the bundle's; a misfit is a config error.

    With ``models``, a model's own ``detection`` goes over the top-level one key by key (its
    per-label mappings over the top-level ones label by label), and top-level per-label
    settings apply to the models that have the label (:func:`_check_label_keys` checks that
    some model has each).
    """
    given = dict(config.detection)
    if several:
        for key in ("label_thresholds", "states"):
            if key in given:
                given[key] = {label: v for label, v in given[key].items() if label in bundle.labels}
    where = "detection"
    if entry is not None and entry.detection:
        where = f"models[{config.models.index(entry)}].detection"
        for key, value in entry.detection.items():
            if key in ("label_thresholds", "states"):
                given[key] = {**given.get(key, {}), **value}
            else:
                given[key] = value
    try:
        settings = resolve_detection(
            bundle.detection, given, window_stride_ms=bundle.frontend.window_stride_ms
        )
        RecognizeCommands(bundle.labels, settings.smoother)  # a threshold for a label it lacks
        StateTracker(bundle.labels, settings.states)  # a state label it lacks
    except StateError as err:
        raise ConfigError([f"{where}.states.{err}{_of(bundle, several)}"], source=source) from None
    except (DetectionError, SmootherError) as err:
        # Settings that do not fit this model (a threshold for a label it lacks, a stride
        # that is not a multiple of its window stride) are config errors too.
        raise ConfigError([f"{where}.{err}{_of(bundle, several)}"], source=source) from None
    return settings


def _of(bundle: Bundle, several: bool) -> str:
    return f" (model {bundle.name})" if several else ""


def _check_label_keys(config: Config, bundles: list[Bundle], source: str) -> None:
    """With several models, a top-level per-label setting must name a label some model has."""
    labels = {label for bundle in bundles for label in bundle.labels}
    problems = [
        f"detection.{key}.{label}: no loaded model has this label (they have: {', '.join(sorted(labels))})"
        for key in ("label_thresholds", "states")
        for label in config.detection.get(key, {})
        if label not in labels
    ]
    if problems:
        raise ConfigError(problems, source=source)


def _publisher(
    config: Config,
    source: str,
    models: tuple[LoadedModel, ...],
    carry_over: list[dict[str, Any]] | None = None,
    *,
    stdout: TextIO | None = None,
) -> Publisher:
    """MQTT when a broker is configured, else JSON lines on ``stdout`` (the built-in default)."""
    if config.mqtt.host is None:
        if carry_over:
            log.warning("reload: %d undelivered MQTT detections written to stdout", len(carry_over))
        stdout_publisher = StdoutPublisher(stdout)
        for data in carry_over or []:
            stdout_publisher.write(data)
        return stdout_publisher
    from kwsd.mqtt import MqttPublisher, MqttSetupError
    from kwsd.spool import SpoolError

    try:
        publisher = MqttPublisher(
            config.mqtt, _device_id(config), model=_model_facts(models), carry_over=carry_over or []
        )
    except SpoolError as err:
        # Exit 78 like any config problem: restarting cannot fix a folder kwsd may not write.
        raise ConfigError([f"mqtt.spool_dir: {err}"], source=source) from None
    except MqttSetupError as err:
        raise ConfigError([f"mqtt.tls: {err}"], source=source) from None
    log.info("events to mqtt://%s:%d/%s", config.mqtt.host, config.mqtt.port, publisher.detection_topic)
    return publisher


def _model_facts(
    models: tuple[LoadedModel, ...], settings: tuple[DetectionSettings, ...] | None = None
) -> ModelFacts:
    """What Home Assistant and Hermes are told: every model's labels (a keyword is in one model
    only, so each label's threshold is its model's), under the models' names joined."""
    from kwsd.mqtt import ModelFacts

    each = settings if settings is not None else tuple(m.detection for m in models)
    labels: dict[str, float] = {}
    states: list[str] = []
    for model, one in zip(models, each, strict=True):
        for label in model.bundle.labels:
            labels.setdefault(label, float(one.threshold_of(label)))
        states += [label for label in one.states if label not in states]
    return ModelFacts(
        name=" + ".join(m.bundle.name for m in models),
        sha256=models[0].bundle.sha256,
        labels=tuple(labels),
        thresholds=labels,
        state_labels=tuple(states),
    )


def _update_model(
    models: tuple[LoadedModel, ...], settings: tuple[DetectionSettings, ...]
) -> Callable[[Publisher], None]:
    """What tells an MQTT publisher kept across a reload the new thresholds."""

    def update(publisher: Publisher) -> None:
        from kwsd.mqtt import MqttPublisher

        if isinstance(publisher, MqttPublisher):
            publisher.update_model(_model_facts(models, settings))

    return update


def _capture(config: Config, models: tuple[LoadedModel, ...]) -> list[CaptureRecorder] | None:
    """One recorder of detections and near-misses per model, all handing their captures to one
    writer thread (one folder, one ledger of the audio listened to), when enabled."""
    if not config.capture.enabled:
        return None
    from kwsd.capture import CaptureRecorder, CaptureSettings, CaptureWriter

    capture = config.capture
    settings_of_capture = CaptureSettings(
        capture.directory,
        capture.pre_ms,
        capture.post_ms,
        capture.near_miss_threshold,
        capture.max_files,
        capture.max_mb,
    )
    rate = models[0].bundle.frontend.sample_rate_hz
    writer = CaptureWriter(settings_of_capture, _device_id(config), rate).start()
    log.info(
        "capture: detections%s to %s",
        " and near-misses" if capture.near_miss_threshold else "",
        capture.directory,
    )
    return [
        CaptureRecorder(
            settings_of_capture,
            writer,
            m.bundle.labels,
            sample_rate_hz=rate,
            model={"name": m.bundle.name, "sha256": m.bundle.sha256},
            detection=m.detection.to_dict(),
            thresholds={label: m.detection.threshold_of(label) for label in m.bundle.labels},
        )
        for m in models
    ]


def _device_id(config: Config) -> str:
    return config.mqtt.device_id or socket.gethostname()


def _reload(running: _Running, path: str, models: tuple[LoadedModel, ...], *, verbose: bool) -> Reload | None:
    """The config file read again, as the :class:`Reload` the listener applies; None (each
    problem logged) when it is rejected."""
    old = running.config
    try:
        new = load_config(path)
        entries = new.model_entries()
        several = len(models) > 1
        if len(entries) != len(models):
            # The models themselves change only at a restart; their settings must fit the running ones.
            raise ConfigError(
                [
                    f"models: {len(entries)} given where {len(models)} run now; "
                    "adding or removing models needs a restart"
                ],
                source=path,
            )
        settings = tuple(
            _detection(m.bundle, new, path, entry, several=several)
            for m, entry in zip(models, entries, strict=True)
        )
        if several:
            _check_label_keys(new, [m.bundle for m in models], path)
        if new.mqtt != old.mqtt:
            _check_mqtt(new, path)
    except ConfigError as err:
        log.error(
            "reload: %s rejected, going on with the running config: %s",
            path,
            "; ".join(str(err).splitlines()),
        )
        return None
    if [e.path if e else None for e in new.model_entries()] != [
        e.path if e else None for e in old.model_entries()
    ]:
        log.warning("reload: model changed, but takes effect only when kwsd restarts")
    for key in ("audio", "capture"):
        if getattr(new, key) != getattr(old, key):
            log.warning("reload: %s changed, but takes effect only when kwsd restarts", key)
    if not verbose:
        logging.getLogger().setLevel(new.log_level.logging_level)
    if new.mqtt == old.mqtt:
        reload = Reload(settings, new.stats_interval_s, keep_publisher=_update_model(models, settings))
    else:
        replace = _replace_publisher(old=old, new=new, path=path, models=models, stdout=running.stdout)
        reload = Reload(settings, new.stats_interval_s, new_publisher=replace)
    running.config = new
    log.info(
        "reload: %s applied (%s)",
        path,
        "; ".join(
            (f"{m.key}: " if several else "")
            + f"clip stride {one.clip_stride_ms} ms, threshold {one.threshold:.3f}"
            for m, one in zip(models, settings, strict=True)
        ),
    )
    return reload


def _check_mqtt(config: Config, path: str) -> None:
    """What the new publisher would fail on, found before the old one is closed."""
    from kwsd.tls import MqttSetupError, check_tls

    mqtt = config.mqtt
    problems = []
    if mqtt.host is not None and mqtt.tls.enabled:
        try:
            check_tls(mqtt.tls)
        except MqttSetupError as err:
            problems.append(f"mqtt.tls: {err}")
    spool_dir = mqtt.spool_dir
    if mqtt.host is not None and spool_dir is not None:
        # The folder, or the nearest one that exists, in which the spool opens it (mkdir -p): a
        # fresh install's /var/lib/kwsd is made by systemd's StateDirectory= at the first start.
        probe = spool_dir
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            problems.append(f"mqtt.spool_dir: {spool_dir}: kwsd may not write there ({probe})")
    if problems:
        raise ConfigError(problems, source=path)


def _replace_publisher(
    *,
    old: Config,
    new: Config,
    path: str,
    models: tuple[LoadedModel, ...],
    stdout: TextIO | None,
) -> Callable[[Publisher], Publisher]:
    """What replaces the publisher, off the listener thread: closing the old one waits for the
    broker (at most :data:`RELOAD_CLOSE_TIMEOUT_S`, and longer if paho's thread is in a connect),
    and the audio must not wait with it. Detections meanwhile wait in order in the handover."""

    def build(previous: Publisher) -> Publisher:
        from kwsd.mqtt import MqttPublisher

        carry_over: list[dict[str, Any]] = []
        if isinstance(previous, MqttPublisher):
            same_place = (old.mqtt.host, old.mqtt.port, old.mqtt.topic_prefix, _device_id(old)) == (
                new.mqtt.host,
                new.mqtt.port,
                new.mqtt.topic_prefix,
                _device_id(new),
            )
            previous.close(timeout_s=RELOAD_CLOSE_TIMEOUT_S, announce_offline=not same_place)
            same_spool = new.mqtt.host is not None and new.mqtt.spool_dir == old.mqtt.spool_dir
            if not (same_spool and new.mqtt.spool_dir is not None):
                carry_over = previous.undelivered()  # else the spool hands them over
        else:
            previous.close()
        try:
            replacement = _publisher(new, path, models, carry_over, stdout=stdout)
        except ConfigError as err:
            # Checked beforehand, so only a race (a file changed meanwhile) gets here: go on
            # with the old settings rather than with no publisher at all.
            log.error("reload: %s; reconnecting with the previous MQTT settings", err)
            replacement = _publisher(old, path, models, carry_over, stdout=stdout)
        log.info("reload: MQTT settings applied")
        return replacement

    return build
