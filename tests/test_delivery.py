"""DeliveryQueue's rules with no broker: order across reconnects, bounds, acknowledgements, spool.

``ScriptedTransport`` behaves as paho does for the queue: it numbers what it takes, writes it
to the wire at once while connected, keeps it until acknowledged (a connection that drops
loses what it had written and not had acknowledged: the worst case) and, on connecting, first
calls the connection callback (``connection_made`` then ``flush``, as
:class:`kwsd.mqtt.MqttPublisher` does) and only then resends what it kept from before. The
real-broker behaviour is in ``test_mqtt.py``; these tests reach the interleavings a broker
cannot be made to produce on demand. The spool is the real one, in ``tmp_path``.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from kwsd.delivery import DeliveryQueue, Handed, Outgoing
from kwsd.spool import DetectionSpool
from tests.helpers import make_events


class ScriptedTransport:
    """paho as the queue sees it: ids from 1, a wire, resends after the connection callback."""

    def __init__(self) -> None:
        self.queue: DeliveryQueue | None = None
        self.connected = False
        #: Sequence numbers in the order they reached the broker (resends included).
        self.wire: list[int] = []
        #: id -> where on the wire the current connection wrote it, until acknowledged.
        self.written: dict[int, int] = {}
        #: id -> detection taken and not acknowledged, in the order taken.
        self.unacked: dict[int, Outgoing] = {}
        self.next_mid = 1
        self.refuse_with = ""
        #: Called inside send(), before it returns (a reconnect on paho's thread meanwhile).
        self.during_send = None

    def attach(self, queue: DeliveryQueue) -> DeliveryQueue:
        self.queue = queue
        return queue

    def send(self, outgoing: Outgoing) -> Handed:
        if self.refuse_with:
            return Handed(None, self.refuse_with)
        mid = self.take_mid()
        self.unacked[mid] = outgoing
        if self.connected:
            self.write(mid, outgoing)
        if self.during_send is not None:
            hook, self.during_send = self.during_send, None
            hook()
        return Handed(mid)

    def write(self, mid: int, outgoing: Outgoing) -> None:
        self.written[mid] = len(self.wire)
        self.wire.append(outgoing.sequence)

    def take_mid(self) -> int:
        mid = self.next_mid
        self.next_mid = mid % 65535 + 1
        return mid

    def connect(self) -> None:
        assert self.queue is not None
        kept = list(self.unacked.items())
        self.connected = True
        self.queue.connection_made()
        self.queue.flush()
        for mid, outgoing in kept:
            self.write(mid, outgoing)

    def disconnect(self) -> None:
        assert self.queue is not None
        self.connected = False
        for index in sorted(self.written.values(), reverse=True):
            del self.wire[index]  # lost with the connection
        self.written.clear()
        self.queue.connection_lost()

    def ack_oldest(self, count: int = 1) -> None:
        assert self.queue is not None
        for _ in range(count):
            mid = next(iter(self.unacked))
            del self.unacked[mid]
            self.written.pop(mid, None)
            self.queue.acknowledged(mid)


@pytest.fixture
def transport():
    return ScriptedTransport()


def first_arrivals(wire):
    seen: list[int] = []
    for sequence in wire:
        if sequence not in seen:
            seen.append(sequence)
    return seen


def test_connected_detections_go_out_at_once_and_count_when_acknowledged(transport):
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10))
    transport.connect()
    for event in make_events(3):
        assert queue.offer(event)
    assert transport.wire == [1, 2, 3]
    assert (queue.pending, queue.delivered) == (3, 0)
    transport.ack_oldest(3)
    assert (queue.pending, queue.delivered, queue.dropped) == (0, 3, 0)


def test_detections_made_while_disconnected_wait_and_go_out_in_order_on_connecting(transport):
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10))
    for event in make_events(3):
        queue.offer(event)
    assert transport.wire == [] and queue.pending == 3
    transport.connect()
    assert transport.wire == [1, 2, 3]
    transport.ack_oldest(3)
    assert (queue.pending, queue.delivered) == (0, 3)


def test_a_detection_made_during_the_reconnect_handshake_waits_for_the_resent_ones(transport):
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10))
    events = make_events(4)
    transport.connect()
    queue.offer(events[0])
    queue.offer(events[1])
    transport.disconnect()  # 1 and 2 written, lost, not acknowledged
    assert transport.wire == []
    queue.offer(events[2])
    transport.connect()  # the callback first (3 must not go yet), then paho resends 1 and 2
    assert transport.wire == [1, 2]
    queue.offer(events[3])  # made while the resent ones are still unacknowledged
    assert transport.wire == [1, 2]
    transport.ack_oldest()
    assert transport.wire == [1, 2]
    transport.ack_oldest()  # the last resent one: the held ones go, in order
    assert transport.wire == [1, 2, 3, 4]
    transport.ack_oldest(2)
    assert (queue.pending, queue.delivered, queue.reconnects) == (0, 4, 1)


def test_a_send_that_spans_a_reconnect_counts_as_a_resend_and_later_ones_wait_for_it(transport):
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10))
    events = make_events(3)
    transport.connect()
    queue.offer(events[0])
    transport.ack_oldest()

    def reconnect_while_sending():  # paho's thread, while the listener is inside publish()
        transport.disconnect()
        transport.connect()

    transport.during_send = reconnect_while_sending
    queue.offer(events[1])  # taken before the reconnect: paho resends it after its callback
    assert transport.wire == [1, 2]
    queue.offer(events[2])
    assert transport.wire == [1, 2], "3 overtook the resend of 2"
    transport.ack_oldest()
    assert transport.wire == [1, 2, 3]
    transport.ack_oldest()
    assert (queue.pending, queue.delivered) == (0, 3)


def test_past_the_bound_the_newest_are_dropped_once_warned_and_counted(transport, caplog):
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=3))
    events = make_events(6)
    with caplog.at_level(logging.WARNING, logger="kwsd.delivery"):
        accepted = [queue.offer(event) for event in events[:5]]
    assert accepted == [True, True, True, False, False]
    assert (queue.pending, queue.dropped) == (3, 2)
    dropping = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert dropping == ["MQTT: dropping detections (sequence 4 onwards): 3 detections are already waiting"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kwsd.delivery"):
        transport.connect()  # the first detection handed over after the drops says so
    assert caplog.messages == ["MQTT: queueing detections again (2 dropped so far)"]
    transport.ack_oldest(3)
    assert queue.offer(events[5])
    assert transport.wire == [1, 2, 3, 6]


def test_a_detection_the_transport_refuses_is_dropped_and_not_kept_in_the_spool(transport, tmp_path):
    spool = DetectionSpool(tmp_path, 10)
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10, spool=spool))
    transport.connect()
    transport.refuse_with = "paho refused it: out of memory"
    assert queue.offer(make_events(1)[0])
    assert (queue.pending, queue.dropped, len(spool)) == (0, 1, 0)


def test_an_acknowledgement_before_the_id_is_recorded_still_counts_once(transport, tmp_path):
    spool = DetectionSpool(tmp_path, 10)
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10, spool=spool))
    transport.connect()

    def ack_at_once():  # paho's thread acknowledges before send() has returned the id
        transport.ack_oldest()

    transport.during_send = ack_at_once
    queue.offer(make_events(1)[0])
    assert (queue.pending, queue.delivered, len(spool)) == (0, 1, 0)
    # The early acknowledgement was claimed: the id, reused later, is a new message.
    transport.next_mid = 1
    queue.offer(make_events(1, first=2)[0])
    assert (queue.pending, queue.delivered) == (1, 1)


def test_other_messages_ids_are_claimed_so_a_reused_id_is_not_taken_for_delivered(transport):
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10))
    transport.connect()
    stats_mid = transport.take_mid()
    assert not queue.track(stats_mid)
    queue.acknowledged(stats_mid)
    early_mid = transport.take_mid()
    queue.acknowledged(early_mid)  # a QoS 0 message written before track() was called
    assert queue.track(early_mid)
    assert queue.delivered == 0
    transport.next_mid = stats_mid  # paho's ids wrapped: a detection gets an old id
    queue.offer(make_events(1)[0])
    assert (queue.pending, queue.delivered) == (1, 0)
    transport.ack_oldest()
    assert (queue.pending, queue.delivered) == (0, 1)


def test_spooled_then_carried_over_then_new_detections_go_out_in_that_order(transport, tmp_path):
    old_run = make_events(2)
    earlier = DetectionSpool(tmp_path, 10)
    for event in old_run:
        earlier.add(event.to_dict())
    earlier.close()
    handed_over = [Outgoing.from_event(e) for e in make_events(2, first=3)]
    spool = DetectionSpool(tmp_path, 10)
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10, spool=spool, carry_over=handed_over))
    assert [o.sequence for o in queue.undelivered()] == [1, 2, 3, 4]
    queue.offer(make_events(1, first=5)[0])
    transport.connect()
    assert transport.wire == [1, 2, 3, 4, 5]
    transport.ack_oldest(2)
    # Taken and unacknowledged first, then held, each with its original payload.
    assert [o.payload for o in queue.undelivered()] == [e.to_dict() for e in make_events(3, first=3)]
    spool.close()
    assert [d["sequence"] for d in DetectionSpool(tmp_path, 10).pending()] == [3, 4, 5]


def test_the_bounded_waits_return_at_the_deadline_with_what_is_left(transport):
    now = [0.0]
    queue = transport.attach(DeliveryQueue(transport.send, queue_max=10, clock=lambda: now[0]))
    queue.offer(make_events(1)[0])
    status_mid = transport.take_mid()
    queue.track(status_mid)

    def later():
        now[0] = 10.0

    timer = threading.Timer(0.05, later)
    timer.start()
    try:
        assert queue.wait_delivered(deadline=5.0) == 1
        assert not queue.wait_acknowledged(status_mid, deadline=5.0)
    finally:
        timer.cancel()
    queue.acknowledged(status_mid)
    assert queue.wait_acknowledged(status_mid, deadline=5.0)


def test_order_holds_when_detections_race_disconnects_and_acknowledgements(transport):
    # The listener offers from its own thread while "paho's" thread drops and remakes the
    # connection and acknowledges; whatever the interleaving, first arrivals stay in order.
    lock = threading.RLock()  # paho's _out_message_mutex: its publish and callbacks exclude each other

    def locked_send(outgoing):
        with lock:
            return transport.send(outgoing)

    queue = transport.attach(DeliveryQueue(locked_send, queue_max=1000))
    events = make_events(300)
    transport.connect()
    stop = threading.Event()

    def network():
        n = 0
        while not stop.is_set():
            n += 1
            with lock:
                if n % 7 == 0:
                    transport.disconnect()
                elif n % 7 == 3:
                    transport.connect()
                elif transport.unacked and transport.connected:
                    transport.ack_oldest()
            time.sleep(0.0002)  # lets the listener in, connected or not

    thread = threading.Thread(target=network)
    thread.start()
    try:
        for event in events:
            queue.offer(event)
            time.sleep(0.0002)  # lets the network in between detections
    finally:
        stop.set()
        thread.join()
    with lock:
        if not transport.connected:
            transport.connect()
        while transport.unacked:
            transport.ack_oldest()
    assert first_arrivals(transport.wire) == list(range(1, 301))
    assert (queue.pending, queue.delivered) == (0, 300)
