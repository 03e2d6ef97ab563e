"""Detection events to an MQTT broker (paho-mqtt 2.x).

Topics, with ``P`` = ``mqtt.topic_prefix`` and ``D`` = the device id:

* ``P/D/detection``: one JSON object per event (:meth:`DetectionEvent.to_dict`), at
  ``mqtt.qos``, never retained.
* ``P/D/status``: availability, retained, QoS 1: ``online`` on every (re)connect,
  ``offline`` as the last will (the broker sends it when the connection drops uncleanly)
  and ``offline`` published by :meth:`MqttPublisher.close` before a clean disconnect.
* ``P/D/stats``: the listener's periodic stats (:meth:`MqttPublisher.publish_stats`), QoS 0,
  retained (a dashboard that subscribes later sees the latest at once); not sent while the
  broker is away.
* Home Assistant discovery and Rhasspy Hermes hotwords when enabled: see
  :mod:`kwsd.integrations`.

paho runs its own network thread (``connect_async`` + ``loop_start``): a broker that is
down at start does not fail construction, and paho reconnects with a backoff doubling from
1 s up to 30 s.

Order: a subscriber receives detections in the order they were made, across outages. paho
alone does not promise that: it resends its queued messages only *after* calling
``on_connect``, and sends at once anything published from the socket opening onwards, so a
detection made during a reconnect would overtake the ones queued before it. So kwsd keeps a
gate: while it is closed (not connected, or connected but paho still has detections from
before the outage to resend) new detections wait in ``_held``, in kwsd's own memory; once
paho's resent detections are acknowledged the held ones are handed over in order and the gate
opens. Detections handed to paho are tracked by message id until acknowledged
(``on_publish``; PUBACK/PUBCOMP for QoS 1/2, written to the socket for QoS 0).

Drop policy: at most ``mqtt.queue_max`` detections may be undelivered (held, or handed to
paho and not acknowledged). Past that bound the *newest* detection is refused and counted in
``dropped_events``: what is already queued keeps its order and is delivered first, and the gap
shows to a subscriber as missing sequence numbers.

Disk spool (``mqtt.spool_dir`` set; :mod:`kwsd.spool`): each detection the queue accepts is
journaled (fsynced) *before* it is queued, and its acknowledgement is journaled when paho
reports it delivered. Construction first queues, in order and with their original payloads
(original ``boot_id`` and ``sequence``, so a subscriber can tell them from new ones), the
detections a previous run journaled and never got acknowledged: they go out first once the
broker accepts the connection. They count as pending like any other (the ``queue_max`` bound
then applies to new ones on top of them). A detection the queue refuses is not spooled. The
spool's own bound (``mqtt.spool_max``) drops its oldest entry, which stays queued in memory.
A folder that cannot be used raises :class:`kwsd.spool.SpoolError` from the constructor; a
write that fails later is logged and publishing goes on from memory. With ``spool_dir`` None
nothing touches the disk.

Hand-over (a config reload that changes MQTT settings): :meth:`MqttPublisher.undelivered`
after :meth:`close` gives the detections not acknowledged, in order; the next publisher takes
them as ``carry_over`` and sends them before any new one.

TLS (``mqtt.tls.enabled``): the broker's certificate must chain to ``tls.ca_file`` (None = the
system's CA certificates) and, unless ``tls.insecure``, name the host connected to (with
``insecure`` the host name is not checked; the connection is still encrypted and the CA still
checked). ``tls.cert_file``/``tls.key_file`` give a client certificate. A CA, certificate or
key file that cannot be used raises :class:`MqttSetupError` from the constructor (or from
:func:`check_tls`), naming the file. There is never a plain-text fallback: a failed TLS
handshake (for example ``certificate verify failed``) is logged as a warning naming the broker
and the reason, and the publisher keeps retrying, with TLS, with the usual backoff.

Connection failures are logged as a warning once per distinct reason (a TLS or socket error,
or the broker refusing the connection, e.g. ``Not authorized`` or ``Bad user name or
password``), then at debug level on every further attempt, until a connection succeeds.

Thread affinity: :meth:`publish`, :meth:`publish_stats` and :meth:`close` are called from the
listener thread; paho's callbacks run on paho's thread. The state is guarded by one lock.

Lock ordering: paho calls ``on_publish`` holding its own ``_out_message_mutex``, which its
``publish()`` also takes, so kwsd never holds ``self._lock`` while calling paho. The spool has
its own lock, a leaf: it is taken with neither ``self._lock`` held nor anything called while
holding it. The spool's ack (one small line, fsynced) is written inside ``on_publish``, i.e.
while paho holds ``_out_message_mutex``: a listener publishing at that moment waits for that
fsync. Detections are rare, so this small I/O is accepted rather than adding a writer thread.
"""

from __future__ import annotations

import enum
import json
import logging
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kwsd import integrations
from kwsd.config import MqttConfig, QoS, TlsConfig
from kwsd.errors import KwsdError
from kwsd.publisher import DetectionEvent
from kwsd.spool import DetectionSpool, SpoolKey, event_key

log = logging.getLogger(__name__)

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
#: Backoff between connection attempts: doubles from the first to the second.
RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
#: The longest :meth:`MqttPublisher.close` waits for ``offline`` to be acknowledged.
OFFLINE_TIMEOUT_S = 2.0
#: Distinct connection-failure reasons remembered (each warned about once) until a success.
MAX_WARNED_REASONS = 32


class MqttSetupError(KwsdError):
    """An MQTT setting that cannot be used: a TLS CA, certificate or key file.

    The message reads ``MQTT TLS: cannot use <what> <path>: <reason>``.
    """


@dataclass(frozen=True)
class ModelFacts:
    """What Home Assistant discovery and Hermes messages say about the model."""

    name: str
    sha256: str
    labels: tuple[str, ...]
    #: Each label's detection threshold (Hermes' ``currentSensitivity``).
    thresholds: Mapping[str, float] = field(default_factory=dict)


class _Kind(enum.Enum):
    DETECTION = "detection"
    STATUS = "status"
    #: Everything else (stats, discovery, hotwords): tracked so that every acknowledgement
    #: is claimed (see _publish_other), never counted.
    OTHER = "other"


class MqttPublisher:
    """A :class:`kwsd.publisher.Publisher` that sends detections to an MQTT broker.

    ``config.host`` must be set. ``device_id`` is resolved by the caller (``mqtt.device_id``
    or the host name). ``model`` is needed when Home Assistant or Hermes is enabled.
    ``carry_over`` are detection payloads a previous publisher did not deliver (see
    :meth:`undelivered`), sent before any new one. ``clock`` (monotonic seconds) times the
    bounded waits in :meth:`close`. Construction never waits for the broker. With
    ``config.spool_dir`` set it opens the spool (raising :class:`kwsd.spool.SpoolError` when
    the folder cannot be used) and queues what it holds.
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        *,
        model: ModelFacts | None = None,
        carry_over: Sequence[dict[str, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.host is None:
            raise ValueError("MqttPublisher needs mqtt.host; with no broker use StdoutPublisher")
        if model is None and (config.home_assistant.enabled or config.hermes.enabled):
            raise ValueError("MqttPublisher needs the model's facts for Home Assistant or Hermes")
        self.config = config
        self.device_id = device_id
        self._model = model
        self._clock = clock
        self._qos = QoS(config.qos)
        self._queue_max = config.queue_max
        base = f"{config.topic_prefix}/{device_id}"
        self.detection_topic = f"{base}/detection"
        self.status_topic = f"{base}/status"
        self.stats_topic = f"{base}/stats"
        self._ha = config.home_assistant
        self._ha_status_topic = f"{self._ha.discovery_prefix}/status"
        self._hermes = config.hermes
        # Opened first: a spool folder that cannot be used fails before any connection.
        self._spool = (
            DetectionSpool(config.spool_dir, config.spool_max) if config.spool_dir is not None else None
        )

        # Guards everything below; also the condition close() waits on.
        self._lock = threading.Condition()
        #: mid -> kind of every message handed to paho and not acknowledged.
        self._inflight: dict[int, _Kind] = {}
        #: mid -> payload of the detections among them, in the order they were handed over.
        self._inflight_data: dict[int, dict[str, Any]] = {}
        # Acknowledgements that arrived before the mid was recorded (paho calls on_publish
        # under its own lock, which kwsd must not wait on while holding ours).
        self._early_acks: set[int] = set()
        #: mid -> spool key of a spooled detection handed to paho, not acknowledged.
        self._spool_keys: dict[int, SpoolKey] = {}
        #: Detections waiting for the gate (see the module notes), oldest first.
        self._held: deque[dict[str, Any]] = deque()
        self._gate_open = False
        #: Detections paho holds from before the current connection; the gate waits for them.
        self._resend_mids: set[int] = set()
        #: publish() calls handing a detection to paho right now, past an open gate.
        self._direct_sends = 0
        self._flushing = False
        #: Counts successful connections: a send that spans one is treated as a resend.
        self._epoch = 0
        self._hermes_on = True
        self._delivered = 0
        self._dropped = 0
        self._reconnects = 0
        self._connected = False
        self._dropping = False
        self._closed = False
        self._connect_failures = 0
        #: Connection-failure reasons already warned about since the last successful connection.
        self._warned_reasons: set[str] = set()
        #: The broker refused the current attempt (CONNACK): its disconnect is not news.
        self._attempt_refused = False
        self._broker = f"{config.host}:{config.port}"
        self._tls = config.tls.enabled

        client_id = config.client_id or f"kwsd-{device_id}"
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if config.username is not None:
            self._client.username_pw_set(config.username, config.password)
        if config.tls.enabled:
            _configure_tls(self._client, config.tls)
        self._client.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._queue_earlier(carry_over)
        self._client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        self._client.loop_start()
        log.info(
            "MQTT: connecting to %s:%d%s as %s, events on %s",
            config.host,
            config.port,
            " over TLS" if config.tls.enabled else "",
            client_id,
            self.detection_topic,
        )

    def _queue_earlier(self, carry_over: Sequence[dict[str, Any]]) -> None:
        """Hold what a previous run spooled, then what a previous publisher handed over.

        Held, they go out first, in order, once the broker accepts the connection.
        """
        spooled = self._spool.pending() if self._spool is not None else []
        if spooled and self._spool is not None:
            log.warning(
                "MQTT: republishing %d spooled detections from %s before any new one",
                len(spooled),
                self._spool.path,
            )
        for data in carry_over:
            if self._spool is not None:
                self._spool.add(data)
        self._held.extend(spooled)
        self._held.extend(carry_over)

    # --- counters -------------------------------------------------------------------------

    @property
    def delivered_events(self) -> int:
        """Detections acknowledged by the broker (QoS 0: written to the socket)."""
        with self._lock:
            return self._delivered

    @property
    def pending_events(self) -> int:
        """Detections held or handed to paho and not yet acknowledged."""
        with self._lock:
            return self._pending_locked()

    @property
    def dropped_events(self) -> int:
        """Detections refused because ``queue_max`` were pending (or paho refused them)."""
        with self._lock:
            return self._dropped

    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        with self._lock:
            return self._reconnects

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the current connection."""
        with self._lock:
            return self._connected

    def update_model(self, model: ModelFacts) -> None:
        """New thresholds after a reload (Hermes' ``currentSensitivity``). Listener thread."""
        self._model = model

    @property
    def hermes_active(self) -> bool:
        """False while Rhasspy has paused hotwords for this site (``toggleOff``)."""
        with self._lock:
            return self._hermes_on

    def counters(self) -> dict[str, Any]:
        """The MQTT part of a stats message."""
        with self._lock:
            return {
                "connected": self._connected,
                "delivered": self._delivered,
                "pending": self._pending_locked(),
                "dropped": self._dropped,
                "reconnects": self._reconnects,
            }

    # --- Publisher ------------------------------------------------------------------------

    def publish(self, event: DetectionEvent) -> None:
        """Queue one detection; never blocks on the network. Listener thread.

        With a spool, the detection is journaled (fsynced) before it is queued.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("MqttPublisher.publish() after close()")
            if self._pending_locked() >= self._queue_max:
                self._drop_locked(event.sequence, f"{self._queue_max} detections are already waiting")
                return
        data = event.to_dict()
        if self._spool is not None:
            self._spool.add(data)
        with self._lock:
            direct = self._gate_open
            if direct:
                self._direct_sends += 1
            else:
                self._held.append(data)
        if direct:
            try:
                self._send(data)
            finally:
                with self._lock:
                    self._direct_sends -= 1
            self._flush_if_ready()  # the gate may have closed and reopened meanwhile
        if self._hermes.enabled:
            self._send_hermes(event)

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Send one stats message (QoS 0, retained) if connected; else it is skipped."""
        if not self._publish_other(self.stats_topic, json.dumps(stats), qos=0, retain=True):
            log.debug("MQTT: stats not sent: not connected")

    def _publish_other(
        self, topic: str, payload: str, *, qos: int, retain: bool, kind: _Kind = _Kind.OTHER
    ) -> bool:
        """Publish a message that is not a detection; False if paho neither sent nor queued it.

        Every message paho will report through ``on_publish`` is recorded by its mid, QoS 0
        included: an acknowledgement nobody claims would stay in ``_early_acks`` and, once
        paho's mids wrap around (65535), pass for the acknowledgement of a later detection.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        will_report = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        )
        if will_report:
            with self._lock:
                self._track_locked(info.mid, kind)
        return will_report

    def _send_hermes(self, event: DetectionEvent) -> None:
        model = self._model
        if model is None or event.label not in integrations.keyword_labels(model.labels):
            return
        with self._lock:
            if not (self._hermes_on and self._connected):
                log.debug("MQTT: Hermes hotword %s not sent (paused or not connected)", event.label)
                return
        topic, payload = integrations.hermes_hotword(
            label=event.label,
            site_id=self._hermes.site_id,
            model_sha256=model.sha256,
            sensitivity=float(model.thresholds.get(event.label, 0.0)),
        )
        # QoS 0, never queued: a wake word is only meaningful at once.
        self._publish_other(topic, payload, qos=0, retain=False)

    def _send(self, data: dict[str, Any]) -> None:
        """Hand one detection (already spooled, if there is a spool) to paho."""
        key = event_key(data) if self._spool is not None else None
        with self._lock:
            epoch = self._epoch
        info = self._client.publish(self.detection_topic, json.dumps(data), qos=int(self._qos), retain=False)
        queued = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            self._qos is not QoS.AT_MOST_ONCE and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        )
        acked = False
        with self._lock:
            if not queued:
                self._drop_locked(data["sequence"], f"paho refused it: {mqtt.error_string(info.rc)}")
            else:
                acked = self._track_locked(info.mid, _Kind.DETECTION, data)
                if not acked:
                    if key is not None:
                        self._spool_keys[info.mid] = key
                    if epoch != self._epoch or not self._connected:
                        # Handed over around a reconnect: paho resends it after the CONNACK,
                        # so whatever is held must wait for it.
                        self._resend_mids.add(info.mid)
                if self._dropping:
                    self._dropping = False
                    log.warning("MQTT: queueing detections again (%d dropped so far)", self._dropped)
        if self._spool is not None and key is not None and (acked or not queued):
            # Delivered already, or dropped like any refused detection: not kept for a restart.
            self._spool.ack(key)

    def _flush_if_ready(self) -> None:
        """Hand the held detections to paho, in order, and open the gate, when nothing is ahead.

        Runs on whichever thread made it possible (paho's in on_connect/on_publish, the
        listener's after a direct send); ``_flushing`` keeps it to one at a time.
        """
        with self._lock:
            if self._flushing or not self._ready_locked():
                return
            self._flushing = True
            count = len(self._held)
        if count:
            log.info("MQTT: sending %d detections held while the broker was away", count)
        try:
            while True:
                with self._lock:
                    if not self._ready_locked():
                        return
                    if not self._held:
                        self._gate_open = True
                        return
                    data = self._held.popleft()
                self._send(data)
        finally:
            with self._lock:
                self._flushing = False

    def undelivered(self) -> list[dict[str, Any]]:
        """The detections not acknowledged, oldest first (meaningful after :meth:`close`)."""
        with self._lock:
            return [*self._inflight_data.values(), *self._held]

    def close(self, timeout_s: float = 5.0, *, announce_offline: bool = True) -> None:
        """Publish ``offline``, wait (bounded) for it and pending detections, disconnect.

        Waits at most ``timeout_s`` in all (``offline`` itself at most ``OFFLINE_TIMEOUT_S``
        after the pending detections). ``announce_offline`` False (a reload that keeps the
        same broker and topics) skips ``offline``: a clean disconnect sends no last will.
        Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = self._clock() + timeout_s
        offline_mid: int | None = None
        if announce_offline:
            info = self._client.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                offline_mid = info.mid
        with self._lock:
            if offline_mid is not None and self._track_locked(offline_mid, _Kind.STATUS):
                offline_mid = -1  # acknowledged already
            # Detections first (paho sends in order), then offline, within the bound.
            self._wait_locked(lambda: self._pending_locked() == 0, deadline)
            offline_deadline = min(deadline, self._clock() + OFFLINE_TIMEOUT_S)
            self._wait_locked(lambda: offline_mid not in self._inflight, offline_deadline)
            pending = self._pending_locked()
            offline_sent = offline_mid is not None and offline_mid not in self._inflight
        if pending:
            log.warning("MQTT: closing with %d detections undelivered", pending)
        if announce_offline and not offline_sent:
            log.warning("MQTT: offline status not acknowledged; the broker will send the last will")
        self._client.disconnect()
        self._client.loop_stop()
        # loop_start() made a socket pair that loop_stop() leaves open; a reload makes a new
        # client, so close it here rather than leak two descriptors per reload.
        self._client._reset_sockets()
        if self._spool is not None:
            self._spool.close()
            if pending:
                log.warning("MQTT: %d undelivered detections stay in the spool for the next start", pending)
        log.info(
            "MQTT: closed (%d delivered, %d dropped, %d reconnects)",
            self.delivered_events,
            self.dropped_events,
            self.reconnects,
        )

    # --- helpers (call with self._lock held) ------------------------------------------------

    def _pending_locked(self) -> int:
        return len(self._inflight_data) + len(self._held)

    def _ready_locked(self) -> bool:
        """Whether held detections may go to paho: connected, with nothing of ours ahead."""
        return self._connected and not self._resend_mids and not self._direct_sends

    def _track_locked(self, mid: int, kind: _Kind, data: dict[str, Any] | None = None) -> bool:
        """Record ``mid`` as in flight; True when its acknowledgement already came."""
        if mid in self._early_acks:
            self._early_acks.discard(mid)
            if kind is _Kind.DETECTION:
                self._delivered += 1
            self._lock.notify_all()
            return True
        self._inflight[mid] = kind
        if data is not None:
            self._inflight_data[mid] = data
        return False

    def _drop_locked(self, sequence: int, why: str) -> None:
        self._dropped += 1
        if not self._dropping:
            self._dropping = True
            log.warning("MQTT: dropping detections (sequence %d onwards): %s", sequence, why)

    def _first_time_locked(self, reason: str) -> bool:
        """Whether ``reason`` (a connection failure) is new since the last successful connection."""
        if reason in self._warned_reasons:
            return False
        if len(self._warned_reasons) >= MAX_WARNED_REASONS:
            self._warned_reasons.clear()
        self._warned_reasons.add(reason)
        return True

    def _wait_locked(self, done: Callable[[], bool], deadline: float) -> None:
        while not done():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            # Short slices: the deadline is on self._clock, which need not be the wait's clock.
            self._lock.wait(min(remaining, 0.1))

    # --- paho callbacks (paho's thread) ----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            reason = str(reason_code)
            with self._lock:
                self._attempt_refused = True
                first = self._first_time_locked(f"refused: {reason}")
            if first:
                log.warning(
                    "MQTT: broker %s refused the connection: %s; retrying with backoff up to %d s",
                    self._broker,
                    reason,
                    RECONNECT_MAX_DELAY_S,
                )
            else:
                log.debug("MQTT: broker %s refused the connection again: %s", self._broker, reason)
            return
        with self._lock:
            self._connected = True
            self._epoch += 1
            self._connect_failures = 0
            self._warned_reasons.clear()
            # What paho resends after this callback must reach the broker before anything held.
            self._resend_mids = set(self._inflight_data)
            if self._epoch > 1:
                self._reconnects += 1
                log.warning(
                    "MQTT: connection to the broker regained (%d pending detections)", self._pending_locked()
                )
            else:
                log.info("MQTT: connected to the broker")
            closing = self._closed
        if not closing:  # else offline is on its way; do not follow it with online
            self._publish_other(self.status_topic, STATUS_ONLINE, qos=1, retain=True, kind=_Kind.STATUS)
            self._subscribe_and_announce(client)
        self._flush_if_ready()

    def _subscribe_and_announce(self, client: mqtt.Client) -> None:
        if self._ha.enabled:
            client.subscribe(self._ha_status_topic, qos=1)
            self._announce_to_home_assistant(client)
        if self._hermes.enabled:
            client.subscribe([(integrations.HERMES_TOGGLE_OFF, 0), (integrations.HERMES_TOGGLE_ON, 0)])

    def _announce_to_home_assistant(self, client: mqtt.Client) -> None:
        model = self._model
        assert model is not None  # checked in __init__
        messages = integrations.ha_discovery_messages(
            discovery_prefix=self._ha.discovery_prefix,
            device_id=self.device_id,
            labels=model.labels,
            detection_topic=self.detection_topic,
            status_topic=self.status_topic,
            model_name=model.name,
        )
        for topic, payload in messages:
            self._publish_other(topic, payload, qos=1, retain=False)
        log.info("MQTT: announced %d labels to Home Assistant", len(messages))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._ha.enabled and message.topic == self._ha_status_topic:
            if message.payload == b"online":
                log.info("MQTT: Home Assistant came online; announcing the labels again")
                self._announce_to_home_assistant(client)
            return
        if self._hermes.enabled:
            toggle = integrations.hermes_toggle(message.topic, message.payload, self._hermes.site_id)
            if toggle is not None:
                with self._lock:
                    changed = self._hermes_on != toggle
                    self._hermes_on = toggle
                if changed:
                    log.info("MQTT: Hermes hotwords %s", "resumed" if toggle else "paused (toggleOff)")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` around the connection attempt
        # (socket, then TLS handshake), so the exception being handled is the reason.
        error = sys.exc_info()[1]
        if isinstance(error, ssl.SSLError | ssl.CertificateError):
            reason = f"TLS handshake failed: {error}"
        elif error is not None:
            reason = str(error) or type(error).__name__
        else:
            reason = "unknown reason"
        with self._lock:
            self._connect_failures += 1
            failures = self._connect_failures
            first = self._first_time_locked(reason)
        if first:
            log.warning(
                "MQTT: cannot connect to the broker %s (%s); retrying with backoff up to %d s",
                self._broker,
                reason,
                RECONNECT_MAX_DELAY_S,
            )
        else:
            log.debug("MQTT: connection attempt %d to %s failed: %s", failures, self._broker, reason)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            was_connected = self._connected
            self._connected = False
            self._gate_open = False
            closing = self._closed
            pending = self._pending_locked()
            refused, self._attempt_refused = self._attempt_refused, False
            # Closed before any CONNACK (e.g. a TLS 1.3 broker rejecting the client certificate
            # only after the handshake): warn once, like any other failed attempt.
            dropped_early = not (was_connected or closing or refused)
            first = dropped_early and self._first_time_locked(f"closed: {reason_code}")
            self._lock.notify_all()
        if first:
            log.warning(
                "MQTT: broker %s closed the connection before accepting it (%s)%s; retrying",
                self._broker,
                reason_code,
                " - does it require a client certificate?" if self._tls else "",
            )
        if was_connected and not closing:
            log.warning(
                "MQTT: connection to the broker lost (%s); %d detections pending, reconnecting",
                reason_code,
                pending,
            )

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            kind = self._inflight.pop(mid, None)
            if kind is None:
                self._early_acks.add(mid)
            elif kind is _Kind.DETECTION:
                self._inflight_data.pop(mid, None)
                self._delivered += 1
            key = self._spool_keys.pop(mid, None)
            was_resend = mid in self._resend_mids
            self._resend_mids.discard(mid)
            self._lock.notify_all()
        if key is not None and self._spool is not None:
            # Outside self._lock, but under paho's _out_message_mutex (see the module notes).
            self._spool.ack(key)
        if was_resend:
            # Still under paho's _out_message_mutex: a listener publish() waits, keeping order.
            self._flush_if_ready()


def check_tls(tls: TlsConfig) -> None:
    """Raise :class:`MqttSetupError` naming the TLS file that cannot be used; else nothing."""
    _configure_tls(mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2), tls)


def _configure_tls(client: mqtt.Client, tls: TlsConfig) -> None:
    """``client.tls_set`` from ``tls``; :class:`MqttSetupError` names a file that cannot be used."""
    if tls.key_file is not None and tls.cert_file is None:
        raise MqttSetupError(f"MQTT TLS: cannot use key file {tls.key_file}: it needs a cert_file")
    # Checked one at a time on a scratch context first, so the error names the file at fault
    # (paho's tls_set loads the certificate chain and the CA file in one go).
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for what, path in (
        ("CA file", tls.ca_file),
        ("certificate file", tls.cert_file),
        ("key file", tls.key_file),
    ):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as err:
                raise MqttSetupError(f"MQTT TLS: cannot use {what} {path}: {err.strerror or err}") from err
    if tls.ca_file is not None:
        try:
            scratch.load_verify_locations(cafile=tls.ca_file)
        except (ssl.SSLError, OSError) as err:
            raise MqttSetupError(f"MQTT TLS: cannot use CA file {tls.ca_file}: {err}") from err
    if tls.cert_file is not None:
        try:
            scratch.load_cert_chain(tls.cert_file, tls.key_file, password=_no_key_password)
        except (ssl.SSLError, OSError, _EncryptedKeyError) as err:
            raise MqttSetupError(_cert_chain_problem(tls.cert_file, tls.key_file, err)) from err
    try:
        client.tls_set(
            ca_certs=None if tls.ca_file is None else str(tls.ca_file),
            certfile=None if tls.cert_file is None else str(tls.cert_file),
            keyfile=None if tls.key_file is None else str(tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
            keyfile_password=None,
        )
    except (ssl.SSLError, OSError, ValueError) as err:
        files = ", ".join(str(p) for p in (tls.ca_file, tls.cert_file, tls.key_file) if p is not None)
        raise MqttSetupError(
            f"MQTT TLS: cannot use the TLS settings ({files or 'system CAs'}): {err}"
        ) from err
    if tls.insecure:
        client.tls_insecure_set(True)


class _EncryptedKeyError(Exception):
    """The key file asks for a password (kwsd has none to give)."""


def _no_key_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKeyError("the key is encrypted (a password-protected key is not supported)")


def _cert_chain_problem(cert_file: Path, key_file: Path | None, err: Exception) -> str:
    """Which of the certificate and key files is at fault, for the message."""
    if isinstance(err, _EncryptedKeyError):
        return f"MQTT TLS: cannot use key file {key_file or cert_file}: {err}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
    except (ssl.SSLError, OSError):
        return f"MQTT TLS: cannot use certificate file {cert_file}: {err}"
    if key_file is None:
        return f"MQTT TLS: cannot use certificate file {cert_file} (no key_file: no key in it?): {err}"
    if "KEY_VALUES_MISMATCH" in str(err) or "values mismatch" in str(err):
        return f"MQTT TLS: cannot use key file {key_file} with certificate file {cert_file}: {err}"
    return f"MQTT TLS: cannot use key file {key_file}: {err}"
