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
* ``P/D/state/<label>`` for each label in ``detection.states`` (:mod:`kwsd.state`): ``on`` or
  ``off``, retained, QoS 1, at each change (the change is also a detection event, with
  ``state``, ``started`` and, when off, ``duration_ms``).
* ``P/D/scores`` (``mqtt.scores_interval_ms`` > 0): every that many ms of audio, each label's
  highest smoothed score over it (:class:`kwsd.scores.ScorePeaks`), QoS 0, not retained; not
  sent while the broker is away.
* Home Assistant discovery and Rhasspy Hermes hotwords when enabled: see
  :mod:`kwsd.integrations`.

paho runs its own network thread (``connect_async`` + ``loop_start``): a broker that is
down at start does not fail construction, and paho reconnects with a backoff doubling from
1 s up to 30 s.

Order, bounds and the disk spool (``mqtt.queue_max``, ``mqtt.spool_dir``) are
:class:`kwsd.delivery.DeliveryQueue`'s: detections reach a subscriber in the order they were
made, across outages; past ``queue_max`` undelivered the newest is dropped and counted; with a
spool each detection is journaled before it is queued, and what a previous run left
unacknowledged goes out first. This module tells the queue what the connection does and hands
what it releases to paho, tracked by message id until acknowledged (``on_publish``:
PUBACK/PUBCOMP for QoS 1/2, written to the socket for QoS 0). A spool folder that cannot be
used raises :class:`kwsd.spool.SpoolError` from the constructor; a write that fails later is
logged and publishing goes on from memory.

Hand-over (a config reload that changes MQTT settings): :meth:`MqttPublisher.undelivered`
after :meth:`close` gives the detections not acknowledged, in order; the next publisher takes
them as ``carry_over`` and sends them before any new one.

TLS (``mqtt.tls.enabled``; :mod:`kwsd.tls`): a CA, certificate or key file that cannot be used
raises :class:`MqttSetupError` from the constructor, naming the file. There is never a
plain-text fallback: a failed TLS handshake (for example ``certificate verify failed``) is
logged as a warning naming the broker and the reason, and the publisher keeps retrying, with
TLS, with the usual backoff.

Connection failures are logged as a warning once per distinct reason (a TLS or socket error,
or the broker refusing the connection, e.g. ``Not authorized`` or ``Bad user name or
password``), then at debug level on every further attempt, until a connection succeeds.

Thread affinity: :meth:`publish`, :meth:`publish_stats` and :meth:`close` are called from the
listener thread; paho's callbacks run on paho's thread. The publisher's own state (connection
failures warned about, Hermes' pause, closed) is guarded by one lock, the queue's by its own;
neither is held while calling paho: paho calls ``on_publish`` holding its own
``_out_message_mutex``, which its ``publish()`` also takes. The spool's ack (one small line,
fsynced) is written inside ``on_publish``, i.e. while paho holds that mutex: a listener
publishing at that moment waits for that fsync. Detections are rare, so this small I/O is
accepted rather than adding a writer thread.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from kwsd import integrations
from kwsd.config import MqttConfig, QoS
from kwsd.delivery import DeliveryQueue, Handed, Outgoing
from kwsd.publisher import DetectionEvent, ScoreSink
from kwsd.scores import ScorePeaks
from kwsd.spool import DetectionSpool
from kwsd.tls import MqttSetupError, check_tls, configure_tls

__all__ = ["ModelFacts", "MqttPublisher", "MqttSetupError", "check_tls"]

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


@dataclass(frozen=True)
class ModelFacts:
    """What Home Assistant discovery and Hermes messages say about the model."""

    name: str
    sha256: str
    labels: tuple[str, ...]
    #: Each label's detection threshold (Hermes' ``currentSensitivity``).
    thresholds: Mapping[str, float] = field(default_factory=dict)
    #: The labels reported as a state, on and off (``detection.states``).
    state_labels: tuple[str, ...] = ()


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
        carry_over: Sequence[Mapping[str, Any]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.host is None:
            raise ValueError("MqttPublisher needs mqtt.host; with no broker use StdoutPublisher")
        needs_model = config.home_assistant.enabled or config.hermes.enabled or config.scores_interval_ms
        if model is None and needs_model:
            raise ValueError("MqttPublisher needs the model's facts for Home Assistant, Hermes or scores")
        self.config = config
        self.device_id = device_id
        self._model = model
        self._clock = clock
        self._qos = QoS(config.qos)
        base = f"{config.topic_prefix}/{device_id}"
        self.detection_topic = f"{base}/detection"
        self.status_topic = f"{base}/status"
        self.stats_topic = f"{base}/stats"
        self.scores_topic = f"{base}/scores"
        self.state_topic_prefix = f"{base}/state"
        self._ha = config.home_assistant
        self._ha_status_topic = f"{self._ha.discovery_prefix}/status"
        self._hermes = config.hermes
        # Opened first: a spool folder that cannot be used fails before any connection.
        self._spool = (
            DetectionSpool(config.spool_dir, config.spool_max) if config.spool_dir is not None else None
        )
        self._queue = DeliveryQueue(
            self._hand_to_paho,
            queue_max=config.queue_max,
            spool=self._spool,
            carry_over=[Outgoing.from_payload(data) for data in carry_over],
            clock=clock,
        )

        # Guards the connection bookkeeping below (the queue guards its own state).
        self._lock = threading.Lock()
        self._hermes_on = True
        self._closed = False
        self._connect_failures = 0
        #: Connection-failure reasons already warned about since the last successful connection.
        self._warned_reasons: set[str] = set()
        #: The broker refused the current attempt (CONNACK): its disconnect is not news.
        self._attempt_refused = False
        self._broker = f"{config.host}:{config.port}"
        self._tls = config.tls.enabled
        self._score_peaks = (
            ScorePeaks(model.labels, config.scores_interval_ms)
            if model is not None and config.scores_interval_ms
            else None
        )

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
            configure_tls(self._client, config.tls)
        self._client.will_set(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=RECONNECT_MIN_DELAY_S, max_delay=RECONNECT_MAX_DELAY_S)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
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

    # --- counters -------------------------------------------------------------------------

    @property
    def delivered_events(self) -> int:
        """Detections acknowledged by the broker (QoS 0: written to the socket)."""
        return self._queue.delivered

    @property
    def pending_events(self) -> int:
        """Detections held or handed to paho and not yet acknowledged."""
        return self._queue.pending

    @property
    def dropped_events(self) -> int:
        """Detections refused because ``queue_max`` were pending (or paho refused them)."""
        return self._queue.dropped

    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        return self._queue.reconnects

    @property
    def connected(self) -> bool:
        """Whether the broker has accepted the current connection."""
        return self._queue.connected

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
        return {
            "connected": self.connected,
            "delivered": self.delivered_events,
            "pending": self.pending_events,
            "dropped": self.dropped_events,
            "reconnects": self.reconnects,
        }

    # --- Publisher ------------------------------------------------------------------------

    def publish(self, event: DetectionEvent) -> None:
        """Queue one detection; never blocks on the network. Listener thread.

        With a spool, the detection is journaled (fsynced) before it is queued.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("MqttPublisher.publish() after close()")
        self._queue.offer(event)
        if event.state is not None:
            # The state itself, retained: a subscriber (Home Assistant's binary sensor) that
            # comes later sees at once whether the sound is going on.
            topic = integrations.state_topic(self.state_topic_prefix, event.label)
            self._publish_other(topic, "on" if event.state.on else "off", qos=1, retain=True)
        elif self._hermes.enabled:
            self._send_hermes(event)

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Send one stats message (QoS 0, retained) if connected; else it is skipped."""
        if self._publish_other(self.stats_topic, json.dumps(stats), qos=0, retain=True) is None:
            log.debug("MQTT: stats not sent: not connected")

    def score_sink(self) -> ScoreSink | None:
        """With ``mqtt.scores_interval_ms``: each label's highest smoothed score over each
        interval of audio to the ``scores`` topic (QoS 0, not retained; skipped while the broker
        is away)."""
        return self._window_scores if self._score_peaks is not None else None

    def _window_scores(self, time_ms: int, scores: npt.NDArray[np.float64]) -> None:
        assert self._score_peaks is not None
        message = self._score_peaks.window(time_ms, scores)
        if message is not None:
            self._publish_other(self.scores_topic, json.dumps(message), qos=0, retain=False)

    def undelivered(self) -> list[dict[str, Any]]:
        """The payloads of the detections not acknowledged, oldest first (after :meth:`close`)."""
        return [dict(outgoing.payload) for outgoing in self._queue.undelivered()]

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
        offline_mid = None
        if announce_offline:
            offline_mid = self._publish_other(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        # Detections first (paho sends in order), then offline, within the bound.
        pending = self._queue.wait_delivered(deadline)
        offline_sent = offline_mid is not None and self._queue.wait_acknowledged(
            offline_mid, min(deadline, self._clock() + OFFLINE_TIMEOUT_S)
        )
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

    # --- to paho --------------------------------------------------------------------------

    def _hand_to_paho(self, outgoing: Outgoing) -> Handed:
        """The queue's transport: one detection to paho, at ``mqtt.qos``, never retained."""
        info = self._client.publish(
            self.detection_topic, json.dumps(outgoing.payload), qos=int(self._qos), retain=False
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            self._qos is not QoS.AT_MOST_ONCE and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            return Handed(info.mid)
        return Handed(None, f"paho refused it: {mqtt.error_string(info.rc)}")

    def _publish_other(self, topic: str, payload: str, *, qos: int, retain: bool) -> int | None:
        """Publish a message that is not a detection: its mid, or None if paho neither sent
        nor queued it. The mid is tracked by the queue (see :mod:`kwsd.delivery`: every
        acknowledgement must be claimed, QoS 0 included)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        queued_for_later = qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not queued_for_later:
            return None
        self._queue.track(info.mid)
        return info.mid

    def _send_hermes(self, event: DetectionEvent) -> None:
        model = self._model
        if model is None or event.label not in integrations.keyword_labels(model.labels):
            return
        with self._lock:
            paused = not self._hermes_on
        if paused or not self._queue.connected:
            log.debug("MQTT: Hermes hotword %s not sent (paused or not connected)", event.label)
            return
        topic, payload = integrations.hermes_hotword(
            label=event.label,
            site_id=self._hermes.site_id,
            model_sha256=event.model_sha256,  # the model that heard it, of several
            sensitivity=float(model.thresholds.get(event.label, 0.0)),
        )
        # QoS 0, never queued: a wake word is only meaningful at once.
        self._publish_other(topic, payload, qos=0, retain=False)

    def _first_time(self, reason: str) -> bool:
        """Whether ``reason`` (a connection failure) is new since the last successful connection."""
        with self._lock:
            if reason in self._warned_reasons:
                return False
            if len(self._warned_reasons) >= MAX_WARNED_REASONS:
                self._warned_reasons.clear()
            self._warned_reasons.add(reason)
            return True

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
            if self._first_time(f"refused: {reason}"):
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
            self._connect_failures = 0
            self._warned_reasons.clear()
            closing = self._closed
        # What paho resends after this callback must reach the broker before anything held.
        pending = self._queue.connection_made()
        if self._queue.reconnects:
            log.warning("MQTT: connection to the broker regained (%d pending detections)", pending)
        else:
            log.info("MQTT: connected to the broker")
        if not closing:  # else offline is on its way; do not follow it with online
            self._publish_other(self.status_topic, STATUS_ONLINE, qos=1, retain=True)
            self._subscribe_and_announce(client)
        self._queue.flush()

    def _subscribe_and_announce(self, client: mqtt.Client) -> None:
        if self._ha.enabled:
            client.subscribe(self._ha_status_topic, qos=1)
            self._announce_to_home_assistant()
        if self._hermes.enabled:
            client.subscribe([(integrations.HERMES_TOGGLE_OFF, 0), (integrations.HERMES_TOGGLE_ON, 0)])

    def _announce_to_home_assistant(self) -> None:
        model = self._model
        assert model is not None  # checked in __init__
        messages = integrations.ha_discovery_messages(
            discovery_prefix=self._ha.discovery_prefix,
            device_id=self.device_id,
            labels=model.labels,
            detection_topic=self.detection_topic,
            status_topic=self.status_topic,
            model_name=model.name,
            state_labels=model.state_labels,
            state_topic_prefix=self.state_topic_prefix,
        )
        for topic, payload in messages:
            self._publish_other(topic, payload, qos=1, retain=False)
        log.info("MQTT: announced %d labels to Home Assistant", len(messages))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._ha.enabled and message.topic == self._ha_status_topic:
            if message.payload == b"online":
                log.info("MQTT: Home Assistant came online; announcing the labels again")
                self._announce_to_home_assistant()
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
        if self._first_time(reason):
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
        was_connected = self._queue.connected
        pending = self._queue.connection_lost()
        with self._lock:
            closing = self._closed
            refused, self._attempt_refused = self._attempt_refused, False
        # Closed before any CONNACK (e.g. a TLS 1.3 broker rejecting the client certificate
        # only after the handshake): warn once, like any other failed attempt.
        if not (was_connected or closing or refused) and self._first_time(f"closed: {reason_code}"):
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
        # Under paho's _out_message_mutex: the spool's ack and any flush of held detections
        # happen in here, and a listener publish() waits, keeping order.
        self._queue.acknowledged(mid)
