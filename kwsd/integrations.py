"""Messages for other MQTT ecosystems: Home Assistant discovery and Rhasspy Hermes hotwords.

Pure functions: topics and payloads only. :class:`kwsd.mqtt.MqttPublisher` decides when to send.

**Home Assistant** (``mqtt.home_assistant``): one MQTT *event* entity per keyword label
(``_silence_`` and ``_unknown_`` get none), all under one device named after the device id.
Each entity listens on kwsd's own detection topic; its ``value_template`` turns a detection of
its label into ``{"event_type": LABEL, "score": ..., ...}`` and renders other labels empty,
which Home Assistant ignores. So Home Assistant needs no second copy of each detection, and an
automation triggers on ``event.<device>_<label>``. Availability follows kwsd's status topic.
Configs are published (QoS 1, not retained) on every connection and again whenever Home
Assistant announces itself ``online`` on ``<discovery_prefix>/status``; not retaining them means
entities of a model no longer in use are not resurrected by the broker.

**Hermes** (``mqtt.hermes``): Rhasspy's wake-word protocol. A detection of a keyword label also
goes to ``hermes/hotword/<label>/detected`` with the camelCase ``HotwordDetected`` payload
(``modelId``, ``modelVersion``, ``modelType``, ``currentSensitivity``, ``siteId``, ...). A
hotword is only meaningful at once, so these go at QoS 0 and are never queued or spooled: one
made while the broker is away is dropped. ``hermes/hotword/toggleOff`` / ``toggleOn`` for this
site id pause and resume them (Rhasspy sends these while it records a command or speaks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from kwsd import __version__
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL

#: Detection fields copied into a Home Assistant event's attributes.
HA_EVENT_FIELDS = ("score", "time", "audio_time_ms", "sequence", "boot_id")

HERMES_TOGGLE_OFF = "hermes/hotword/toggleOff"
HERMES_TOGGLE_ON = "hermes/hotword/toggleOn"


def keyword_labels(labels: Sequence[str]) -> list[str]:
    """The labels a detection can be announced for: all but ``_silence_`` and ``_unknown_``."""
    return [label for label in labels if label not in (SILENCE_LABEL, UNKNOWN_LABEL)]


def topic_id(text: str) -> str:
    """``text`` as a Home Assistant discovery node/object id: ``[a-zA-Z0-9_-]`` only."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text) or "_"


def ha_discovery_messages(
    *,
    discovery_prefix: str,
    device_id: str,
    labels: Sequence[str],
    detection_topic: str,
    status_topic: str,
    model_name: str,
    state_labels: Sequence[str] = (),
    state_topic_prefix: str = "",
) -> list[tuple[str, str]]:
    """(topic, JSON payload) of one entity config per keyword label: an event entity, or for a
    label in ``state_labels`` (``detection.states``) a ``binary_sensor`` of device class
    ``sound`` that follows ``<state_topic_prefix>/<label>`` (``on``/``off``, retained)."""

    node = topic_id(f"kwsd_{device_id}")
    device = {
        "identifiers": [node],
        "name": f"kwsd {device_id}",
        "manufacturer": "kwsd",
        "model": model_name,
        "sw_version": __version__,
    }
    messages = []
    used: set[str] = set()
    for label in keyword_labels(labels):
        object_id = topic_id(label)
        while object_id in used:  # two labels that differ only in characters ids cannot hold
            object_id += "_"
        used.add(object_id)
        attributes = ", ".join(f"{json.dumps(key)}: value_json.{key}" for key in HA_EVENT_FIELDS)
        template = (
            f"{{% if value_json.label == {json.dumps(label)} %}}"
            f"{{{{ {{'event_type': value_json.label, {attributes}}} | tojson }}}}"
            "{% endif %}"
        )
        if label in state_labels:
            sensor = {
                "name": label,
                "unique_id": f"{node}_{object_id}_state",
                "object_id": f"{node}_{object_id}",
                "state_topic": state_topic(state_topic_prefix, label),
                "payload_on": "on",
                "payload_off": "off",
                "device_class": "sound",
                "availability_topic": status_topic,
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
                "origin": {"name": "kwsd", "sw_version": __version__},
            }
            topic = f"{discovery_prefix}/binary_sensor/{node}/{object_id}/config"
            messages.append((topic, json.dumps(sensor)))
            continue
        config = {
            "name": label,
            "unique_id": f"{node}_{object_id}",
            "object_id": f"{node}_{object_id}",
            "state_topic": detection_topic,
            "value_template": template,
            "event_types": [label],
            "availability_topic": status_topic,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": {"name": "kwsd", "sw_version": __version__},
        }
        messages.append((f"{discovery_prefix}/event/{node}/{object_id}/config", json.dumps(config)))
    return messages


def state_topic(prefix: str, label: str) -> str:
    """Where a state label's ``on``/``off`` goes: ``<prefix>/<label as a topic level>``."""
    return f"{prefix}/{topic_id(label)}"


def hermes_hotword(*, label: str, site_id: str, model_sha256: str, sensitivity: float) -> tuple[str, str]:
    """(topic, JSON payload) of one Hermes ``HotwordDetected`` message for ``label``."""
    payload = {
        "modelId": label,
        "modelVersion": model_sha256[:12],
        "modelType": "personal",
        "currentSensitivity": sensitivity,
        "siteId": site_id,
        "sessionId": None,
        "sendAudioCaptured": None,
        "lang": None,
        "customEntities": None,
    }
    # The topic level cannot hold / + #; Rhasspy matches ``hermes/hotword/([^/]+)/detected``.
    return f"hermes/hotword/{topic_id(label)}/detected", json.dumps(payload)


def hermes_toggle(topic: str, payload: bytes | bytearray, site_id: str) -> bool | None:
    """True/False for a toggleOn/toggleOff addressed to ``site_id``; None for anything else."""
    if topic not in (HERMES_TOGGLE_ON, HERMES_TOGGLE_OFF):
        return None
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, Mapping) or data.get("siteId", "default") != site_id:
        return None
    return topic == HERMES_TOGGLE_ON
