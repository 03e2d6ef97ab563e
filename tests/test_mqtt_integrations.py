"""Home Assistant discovery, Hermes hotwords, stats and hand-over, against a real mosquitto.

Home Assistant itself is not run here: its side is the discovery topic and payload it reads
and the Jinja template it renders, which is rendered with real Jinja2 the way Home Assistant's
MQTT event entity does (``value_json`` = the parsed payload; an empty result is ignored).
"""

import dataclasses
import json

import jinja2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from kwsd.config import HermesConfig, HomeAssistantConfig, MqttConfig
from kwsd.mqtt import ModelFacts, MqttPublisher
from kwsd_tools.harness.broker import HOST, Subscriber, mosquitto_available, wait_until
from tests.helpers import DETECTION_TOPIC, DEVICE, STATUS_TOPIC, detections, make_events

pytestmark = pytest.mark.skipif(
    not mosquitto_available(), reason="mosquitto is not installed (Debian: mosquitto)"
)

MODEL = ModelFacts(
    name="demo",
    sha256="ab" * 32,
    labels=("_silence_", "_unknown_", "yes", "no"),
    thresholds={"_silence_": 0.5, "_unknown_": 0.5, "yes": 0.8, "no": 0.6},
)


@pytest.fixture
def clients():
    made = []

    def subscriber(port, topic, client_id):
        sub = Subscriber(port, topic, client_id, clean=True)
        made.append(sub)
        return sub.wait_subscribed()

    yield subscriber
    for client in made:
        client.close()


@pytest.fixture
def publishers():
    made = []

    def make(port, **kwargs):
        overrides = kwargs.pop("config", {})
        config = MqttConfig(host=HOST, port=port, spool_dir=None, **overrides)
        pub = MqttPublisher(config, DEVICE, model=MODEL, **kwargs)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close(timeout_s=0.5)


def send(port, topic, payload):
    """Publish one message as another MQTT client would (QoS 1, waits for the broker's ack)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="test-sender")
    client.connect(HOST, port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5.0)
    client.disconnect()
    client.loop_stop()


def render_like_home_assistant(template, payload):
    """Home Assistant's MQTT value template: ``value`` and ``value_json`` of the payload."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(value=payload, value_json=json.loads(payload)).strip()


def test_home_assistant_discovery_announces_one_event_entity_per_keyword_label(broker, clients, publishers):
    ha = clients(broker.port, "homeassistant/#", "ha")
    pub = publishers(broker.port, config={"home_assistant": HomeAssistantConfig(enabled=True)})

    configs = ha.wait_for_count(2, timeout_s=10.0)
    topics = sorted(m.topic for m in configs)
    assert topics == [
        f"homeassistant/event/kwsd_{DEVICE}/no/config",
        f"homeassistant/event/kwsd_{DEVICE}/yes/config",
    ]
    assert not any(m.retain for m in configs)  # a model no longer in use leaves nothing behind
    by_label = {json.loads(m.payload)["name"]: json.loads(m.payload) for m in configs}
    yes = by_label["yes"]
    assert yes["event_types"] == ["yes"]
    assert yes["state_topic"] == pub.detection_topic == DETECTION_TOPIC
    assert (yes["availability_topic"], yes["payload_available"], yes["payload_not_available"]) == (
        STATUS_TOPIC,
        "online",
        "offline",
    )
    assert yes["unique_id"] != by_label["no"]["unique_id"]
    assert yes["device"]["identifiers"] == [f"kwsd_{DEVICE}"] == by_label["no"]["device"]["identifiers"]

    # What each entity makes of a real detection payload of "yes".
    event = make_events(1)[0]  # label "yes"
    payload = json.dumps(event.to_dict())
    fired = json.loads(render_like_home_assistant(yes["value_template"], payload))
    assert fired == {
        "event_type": "yes",
        "score": event.to_dict()["score"],
        "time": event.to_dict()["time"],
        "audio_time_ms": event.audio_time_ms,
        "sequence": 1,
        "boot_id": "boot-1",
    }
    assert render_like_home_assistant(by_label["no"]["value_template"], payload) == ""


def test_home_assistant_coming_online_gets_the_labels_announced_again(broker, clients, publishers):
    ha = clients(broker.port, "homeassistant/event/#", "ha")
    publishers(broker.port, config={"home_assistant": HomeAssistantConfig(enabled=True)})
    ha.wait_for_count(2, timeout_s=10.0)

    send(broker.port, "homeassistant/status", "offline")
    send(broker.port, "homeassistant/status", "online")  # Home Assistant's birth message
    again = ha.wait_for_count(4, timeout_s=10.0)
    assert sorted(m.topic for m in again[2:]) == sorted(m.topic for m in again[:2])


def test_hermes_hotwords_for_keywords_paused_by_toggle_off_for_this_site(broker, clients, publishers):
    hermes = clients(broker.port, "hermes/hotword/+/detected", "rhasspy")
    kwsd = clients(broker.port, DETECTION_TOPIC, "watcher")
    pub = publishers(broker.port, config={"hermes": HermesConfig(enabled=True, site_id="kitchen")})
    wait_until(lambda: pub.connected, 10.0, "the publisher to connect")
    yes, no, yes_again, unknown = make_events(4)  # labels alternate yes, no

    pub.publish(yes)
    message = hermes.wait_for_count(1, timeout_s=5.0)[0]
    assert message.topic == "hermes/hotword/yes/detected" and not message.retain
    assert json.loads(message.payload) == {
        "modelId": "yes",
        "modelVersion": "abababababab",
        "modelType": "personal",
        "currentSensitivity": 0.8,
        "siteId": "kitchen",
        "sessionId": None,
        "sendAudioCaptured": None,
        "lang": None,
        "customEntities": None,
    }

    send(broker.port, "hermes/hotword/toggleOff", json.dumps({"siteId": "lounge"}))  # another site
    send(broker.port, "hermes/hotword/toggleOff", json.dumps({"siteId": "kitchen", "reason": "ttsSay"}))
    wait_until(lambda: not pub.hermes_active, 5.0, "toggleOff to arrive")
    pub.publish(no)
    send(broker.port, "hermes/hotword/toggleOn", json.dumps({"siteId": "kitchen"}))
    wait_until(lambda: pub.hermes_active, 5.0, "toggleOn to arrive")
    pub.publish(yes_again)
    pub.publish(dataclasses.replace(unknown, label="_unknown_"))

    assert len(detections(kwsd.wait_for_count(4, timeout_s=5.0))) == 4  # kwsd's own topic: all
    topics = [m.topic for m in hermes.wait_for_count(2, timeout_s=5.0)]
    assert topics == ["hermes/hotword/yes/detected", "hermes/hotword/yes/detected"]
    assert len(hermes.messages) == 2  # not "no" (paused), not _unknown_


def test_stats_are_retained_on_their_own_topic(broker, clients, publishers):
    pub = publishers(broker.port)
    live = clients(broker.port, f"kwsd/{DEVICE}/stats", "watcher")
    wait_until(lambda: pub.connected, 10.0, "the publisher to connect")
    pub.publish_stats({"uptime_s": 60, "mqtt": pub.counters()})
    # Once a subscriber has it live, the broker holds it: a dashboard subscribing later gets
    # it at once, marked retained.
    assert not live.wait_for_count(1, timeout_s=5.0)[0].retain
    late = clients(broker.port, f"kwsd/{DEVICE}/stats", "dashboard")
    message = late.wait_for_count(1, timeout_s=5.0)[0]
    assert message.retain
    stats = json.loads(message.payload)
    assert stats["uptime_s"] == 60
    assert stats["mqtt"] == {"connected": True, "delivered": 0, "pending": 0, "dropped": 0, "reconnects": 0}


def test_a_publisher_hands_undelivered_detections_to_its_successor_in_order(broker, clients, publishers):
    sub = clients(broker.port, DETECTION_TOPIC, "watcher")
    broker.stop()
    first = publishers(broker.port)
    events = make_events(5)
    for event in events[:3]:
        first.publish(event)
    first.close(timeout_s=0.2, announce_offline=False)
    carried = first.undelivered()
    assert [d["sequence"] for d in carried] == [1, 2, 3]

    second = publishers(broker.port, carry_over=carried)
    for event in events[3:]:
        second.publish(event)
    broker.start()
    got = sub.wait_for(lambda ms: len(detections(ms)) >= 5, 15.0, "5 detections")
    assert [d["sequence"] for d in detections(got)] == [1, 2, 3, 4, 5]
