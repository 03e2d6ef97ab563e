"""MqttPublisher against a real mosquitto on a loopback port, seen by a real subscriber.

Each test gets its own broker (own port, own persistence folder). Events published while the
broker is away reach the subscriber through its persistent session: the subscriber registers
it before the broker goes away, and mosquitto keeps it (and the messages queued for it)
across a restart.

``MqttConfig``'s default ``spool_dir`` is ``/var/lib/kwsd/spool``: every publisher here passes
``spool_dir`` explicitly (None, or a folder under ``tmp_path``).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kwsd.config import MqttConfig, QoS
from kwsd.mqtt import MqttPublisher
from kwsd.publisher import EventStamper
from kwsd.spool import DetectionSpool
from kwsd_tools.harness.broker import HOST, MosquittoBroker, Subscriber, mosquitto_available, wait_until
from tests.helpers import DETECTION_TOPIC, DEVICE, STATUS_TOPIC, T0, detections, make_events

pytestmark = pytest.mark.skipif(
    not mosquitto_available(), reason="mosquitto is not installed (Debian: mosquitto)"
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def subscribers():
    made = []

    def make(port, topic="kwsd/#", client_id="test-subscriber", clean=False):
        sub = Subscriber(port, topic, client_id, clean=clean)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


@pytest.fixture
def publishers():
    made = []

    def make(port, **overrides):
        overrides.setdefault("spool_dir", None)
        config = MqttConfig(host=HOST, port=port, **overrides)
        pub = MqttPublisher(config, DEVICE)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close(timeout_s=0.5)


def wait_for_detections(sub, count, timeout_s=15.0):
    found = sub.wait_for(lambda ms: len(detections(ms)) >= count, timeout_s, f"{count} detections")
    return detections(found)


def retained_status(port, subscribers, client_id):
    """The retained status, as a new clean subscriber sees it on subscribing."""
    late = subscribers(port, STATUS_TOPIC, client_id, clean=True)
    return late.wait_for_count(1, STATUS_TOPIC, timeout_s=5.0)[0]


def test_events_arrive_in_order_as_json_not_retained_and_status_is_retained_online(
    broker, subscribers, publishers
):
    sub = subscribers(broker.port).wait_subscribed()
    pub = publishers(broker.port)
    # Once the live subscriber has it, the broker has stored the retained copy.
    sub.wait_for_count(1, STATUS_TOPIC)
    assert retained_status(broker.port, subscribers, "late") == (STATUS_TOPIC, "online", True)

    events = make_events(3)
    for event in events:
        pub.publish(event)

    received = sub.wait_for_count(3, DETECTION_TOPIC)
    assert [json.loads(m.payload) for m in received] == [e.to_dict() for e in events]
    assert [m.retain for m in received] == [False, False, False]
    assert json.loads(received[0].payload) == {
        "label": "yes",
        "score": 0.51,
        "time": "2026-01-02T03:04:06.000Z",
        "audio_time_ms": 1000,
        "model": {"name": "demo", "sha256": "ab" * 32},
        "sequence": 1,
        "boot_id": "boot-1",
    }
    wait_until(lambda: pub.delivered_events == 3, 5.0, "3 acknowledged detections")
    assert (pub.pending_events, pub.dropped_events, pub.reconnects) == (0, 0, 0)


def test_clean_close_publishes_retained_offline(broker, subscribers, publishers):
    sub = subscribers(broker.port, STATUS_TOPIC).wait_subscribed()
    pub = publishers(broker.port)
    sub.wait_for_count(1, STATUS_TOPIC)
    pub.publish(make_events(1)[0])

    pub.close()
    pub.close()  # idempotent

    assert pub.delivered_events == 1
    assert pub.pending_events == 0
    assert [m.payload for m in sub.wait_for_count(2, STATUS_TOPIC)] == ["online", "offline"]
    assert retained_status(broker.port, subscribers, "late") == (STATUS_TOPIC, "offline", True)


CHILD = textwrap.dedent(
    """
    import sys, time
    from kwsd.config import MqttConfig
    from kwsd.mqtt import MqttPublisher
    pub = MqttPublisher(MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), spool_dir=None), sys.argv[3])
    deadline = time.monotonic() + 60
    while not pub.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    print("connected" if pub.connected else "not connected", flush=True)
    time.sleep(60)
    """
)


def test_last_will_offline_when_the_process_dies(broker, subscribers):
    sub = subscribers(broker.port, STATUS_TOPIC).wait_subscribed()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, HOST, str(broker.port), DEVICE],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "connected"
        sub.wait_for_count(1, STATUS_TOPIC)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        statuses = sub.wait_for_count(2, STATUS_TOPIC)
    finally:
        child.kill()
        child.wait(5)
        child.stdout.close()
    assert [m.payload for m in statuses] == ["online", "offline"]
    assert retained_status(broker.port, subscribers, "late") == (STATUS_TOPIC, "offline", True)


def test_broker_down_at_start_delivers_events_when_it_comes(broker, subscribers, publishers):
    sub = subscribers(broker.port).wait_subscribed()
    broker.stop()  # the subscriber's session persists

    pub = publishers(broker.port)
    events = make_events(3)
    for event in events:
        pub.publish(event)
    assert (pub.connected, pub.pending_events, pub.delivered_events) == (False, 3, 0)

    broker.start()
    assert wait_for_detections(sub, 3) == [e.to_dict() for e in events]
    wait_until(lambda: pub.delivered_events == 3, 10.0, "3 acknowledged detections")
    assert (pub.pending_events, pub.dropped_events, pub.reconnects) == (0, 0, 0)


def test_close_with_the_broker_down_returns_within_its_timeout(tmp_path):
    port = MosquittoBroker(tmp_path / "never-started").port
    pub = MqttPublisher(MqttConfig(host=HOST, port=port, spool_dir=None), DEVICE)
    pub.publish(make_events(1)[0])
    started = time.monotonic()
    pub.close(timeout_s=0.5)
    # The bound plus paho's network thread noticing the stop (it sleeps in 1 s slices): about
    # 1.5 s; far less than this on a machine however busy, where a close that waited for the
    # broker would never return.
    assert time.monotonic() - started < 30.0
    assert (pub.connected, pub.pending_events, pub.delivered_events) == (False, 1, 0)


def outage(broker, sub, pub, before, during):
    """Publish ``before`` with the broker up, then stop it and publish ``during``."""
    for event in before:
        pub.publish(event)
    assert wait_for_detections(sub, len(before)) == [e.to_dict() for e in before]
    wait_until(lambda: pub.delivered_events == len(before), 5.0, "detections acknowledged")

    broker.stop()
    wait_until(lambda: not pub.connected, 5.0, "the publisher to notice the broker is gone")
    for event in during:
        pub.publish(event)


def test_broker_restart_mid_stream_loses_nothing_within_the_bound(broker, subscribers, publishers):
    sub = subscribers(broker.port).wait_subscribed()
    pub = publishers(broker.port, qos=QoS.AT_LEAST_ONCE)
    events = make_events(8)

    outage(broker, sub, pub, events[:3], events[3:])
    assert (pub.pending_events, pub.dropped_events) == (5, 0)
    broker.start()

    assert wait_for_detections(sub, 8) == [e.to_dict() for e in events]
    wait_until(lambda: pub.delivered_events == 8, 10.0, "8 acknowledged detections")
    assert (pub.pending_events, pub.dropped_events, pub.reconnects) == (0, 0, 1)


def test_past_the_queue_bound_the_newest_are_dropped_and_counted(broker, subscribers, publishers):
    sub = subscribers(broker.port).wait_subscribed()
    pub = publishers(broker.port, queue_max=2)
    events = make_events(8)

    outage(broker, sub, pub, events[:2], events[2:7])
    assert (pub.pending_events, pub.dropped_events) == (2, 3)
    broker.start()

    # Events 3 and 4 were queued; 5, 6 and 7 were refused. Queueing resumes with 8.
    assert wait_for_detections(sub, 4) == [e.to_dict() for e in events[:4]]
    wait_until(lambda: pub.connected and pub.pending_events == 0, 10.0, "the queue to drain")
    pub.publish(events[7])
    kept = events[:4] + events[7:]
    assert wait_for_detections(sub, 5) == [e.to_dict() for e in kept]
    wait_until(lambda: pub.delivered_events == 5, 5.0, "5 acknowledged detections")
    assert (pub.pending_events, pub.dropped_events, pub.reconnects) == (0, 3, 1)


SPOOL_CHILD = textwrap.dedent(
    """
    import datetime as dt, sys, time
    from pathlib import Path
    from kwsd.config import MqttConfig
    from kwsd.mqtt import MqttPublisher
    from kwsd.publisher import EventStamper
    config = MqttConfig(host=sys.argv[1], port=int(sys.argv[2]), spool_dir=Path(sys.argv[4]))
    pub = MqttPublisher(config, sys.argv[3])
    stamper = EventStamper("demo", "ab" * 32, boot_id="boot-before")
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    for n in range(3):
        pub.publish(stamper.stamp("yes", 0.9, 1000 * n, t0 + dt.timedelta(seconds=n)))
    print("published", pub.connected, pub.pending_events, flush=True)
    time.sleep(60)
    """
)


def unique_detections(messages):
    """Detection payloads in arrival order, first arrival of each (boot_id, sequence) only."""
    seen, unique = set(), []
    for message in messages:
        if message.topic == DETECTION_TOPIC:
            payload = json.loads(message.payload)
            key = (payload["boot_id"], payload["sequence"])
            if key not in seen:
                seen.add(key)
                unique.append(payload)
    return unique


def test_detections_spooled_while_the_broker_is_down_survive_a_daemon_kill(
    broker, subscribers, publishers, tmp_path
):
    spool_dir = tmp_path / "spool"
    sub = subscribers(broker.port, DETECTION_TOPIC).wait_subscribed()
    broker.stop()  # the subscriber's session persists

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", SPOOL_CHILD, HOST, str(broker.port), DEVICE, str(spool_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().split() == ["published", "False", "3"]
        child.send_signal(signal.SIGKILL)
        assert child.wait(5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait(5)
        child.stdout.close()
    assert [e["sequence"] for e in DetectionSpool(spool_dir, 10).pending()] == [1, 2, 3]

    broker.start()
    pub = publishers(broker.port, spool_dir=spool_dir)
    new = EventStamper("demo", "ab" * 32, boot_id="boot-after").stamp("no", 0.8, 5000, T0)
    pub.publish(new)

    received = sub.wait_for(lambda ms: len(unique_detections(ms)) >= 4, 15.0, "4 detections")
    got = unique_detections(received)
    assert [(d["boot_id"], d["sequence"]) for d in got] == [
        ("boot-before", 1),
        ("boot-before", 2),
        ("boot-before", 3),
        ("boot-after", 1),
    ]
    assert [d["audio_time_ms"] for d in got[:3]] == [0, 1000, 2000]  # original payloads
    assert got[3] == new.to_dict()
    wait_until(lambda: pub.delivered_events == 4, 10.0, "4 acknowledged detections")
    assert (pub.pending_events, pub.dropped_events) == (0, 0)
    pub.close(timeout_s=2.0)
    assert DetectionSpool(spool_dir, 10).pending() == []


def test_detections_made_during_the_reconnect_never_overtake_the_queued_ones(broker, subscribers, publishers):
    # paho sends a message published between the socket opening and the CONNACK at once, and
    # resends its queue only after the CONNACK; kwsd holds new detections until its queue is
    # through. Detections are published every few ms across the whole reconnect, so some are
    # made in that window.
    sub = subscribers(broker.port).wait_subscribed()
    pub = publishers(broker.port, queue_max=5000)
    events = make_events(4000)
    outage(broker, sub, pub, events[:5], events[5:50])

    stop_at = []
    broker.start()
    n = 50
    while n < len(events):
        pub.publish(events[n])
        n += 1
        if pub.connected and not stop_at:
            stop_at.append(n + 100)  # go on a little past the reconnect
        if stop_at and n >= stop_at[0]:
            break
        time.sleep(0.001)
    assert stop_at, "the publisher never reconnected"
    sequences = [d["sequence"] for d in wait_for_detections(sub, n, timeout_s=20.0)]
    assert sequences == list(range(1, n + 1))
    wait_until(lambda: pub.pending_events == 0, 10.0, "the queue to drain")
    assert (pub.dropped_events, pub.reconnects) == (0, 1)


def test_an_unreachable_broker_host_is_warned_about_once_and_retried(caplog):
    # A name that cannot resolve (.invalid is reserved for that): listening goes on, detections
    # wait in the queue, the reason is logged once, and the retries (1 s, 2 s, ...) only at debug.
    caplog.set_level(logging.DEBUG, logger="kwsd.mqtt")
    pub = MqttPublisher(MqttConfig(host="broker.invalid", port=1883, spool_dir=None), DEVICE)
    try:
        pub.publish(make_events(1)[0])
        wait_until(
            lambda: any("connection attempt" in r.getMessage() for r in caplog.records),
            10.0,
            "a second connection attempt",
        )
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("MQTT: cannot connect to the broker broker.invalid:1883 (")
        assert (pub.connected, pub.pending_events) == (False, 1)
    finally:
        pub.close(timeout_s=0.2)


def test_after_message_ids_wrap_a_detection_is_pending_until_the_broker_acknowledges_it(
    broker, subscribers, publishers
):
    # paho numbers messages 1..65535 and starts again. Every acknowledgement kwsd is given
    # must be claimed by the message it belongs to, stats (QoS 0) included, or after the wrap a
    # detection reusing an old number would count as delivered before the broker has it.
    pub = publishers(broker.port)
    wait_until(lambda: pub.connected, 5.0, "the publisher to connect")
    for n in range(65536):
        pub.publish_stats({"n": n})
    wait_until(lambda: pub.counters()["pending"] == 0, 5.0, "")
    time.sleep(0.5)  # the stats written out
    broker._proc.send_signal(signal.SIGSTOP)  # frozen: no PUBACK can come
    try:
        pub.publish(make_events(1)[0])
        time.sleep(0.2)
        assert (pub.pending_events, pub.delivered_events) == (1, 0)
    finally:
        broker._proc.send_signal(signal.SIGCONT)
    wait_until(lambda: pub.delivered_events == 1, 5.0, "the detection acknowledged")
    assert pub.pending_events == 0
