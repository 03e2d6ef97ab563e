"""The order, bounds and acknowledgements of detections on their way to a broker.

:class:`DeliveryQueue` is the part of :class:`kwsd.mqtt.MqttPublisher` that decides *what* is
sent and *when*; the publisher only tells it what the connection does (made, lost, a message
acknowledged) and hands what it releases to paho. It imports no network library, so its rules
are unit-tested on their own, with a scripted transport (``tests/test_delivery.py``).

Order: a subscriber receives detections in the order they were made, across outages. paho
alone does not promise that: it resends its queued messages only *after* calling
``on_connect``, and sends at once anything published from the socket opening onwards, so a
detection made during a reconnect would overtake the ones queued before it. So the queue keeps
a gate: while it is closed (not connected, or connected but the transport still has detections
from before the outage to resend) new detections wait in ``_held``, in kwsd's own memory; once
the resent detections are acknowledged the held ones are handed over in order and the gate
opens. Detections handed to the transport are tracked by message id until acknowledged.

Drop policy: at most ``queue_max`` detections may be undelivered (held, or handed over and
not acknowledged). Past that bound the *newest* detection is refused and counted in
``dropped``: what is already queued keeps its order and is delivered first, and the gap shows
to a subscriber as missing sequence numbers. A detection the transport refuses is dropped and
counted the same way.

Disk spool (:mod:`kwsd.spool`): each detection the queue accepts is journaled (fsynced)
*before* it is queued, and its acknowledgement is journaled when it is delivered. The queue
starts by holding, in order and with their original payloads, what the spool kept from a
previous run, then the ``carry_over`` of a previous publisher: they go out first once a
connection is made, and count as pending like any other (the ``queue_max`` bound then applies
to new ones on top of them). A detection the queue refuses is not spooled.

Message ids: the transport numbers every message it will acknowledge, detections and others
(status, stats, discovery) alike, from one counter that wraps. So the ids of the others are
:meth:`DeliveryQueue.track`-ed too: an acknowledgement nobody claims could otherwise pass,
once the ids wrap, for that of a later detection. An acknowledgement may arrive before the
id is recorded (paho reports it under its own lock, which is never waited on while holding
the queue's); it is kept until then.

Threads: :meth:`offer` runs on the listener thread, :meth:`connection_made`,
:meth:`connection_lost` and :meth:`acknowledged` on the transport's. One lock guards the state
and is never held while calling ``send`` or the spool (both may block, and paho calls
:meth:`acknowledged` holding its own lock, which its ``publish`` takes too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kwsd.publisher import DetectionEvent
from kwsd.spool import DetectionSpool, SpoolKey, event_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """One detection on its way: its identity, and the JSON object sent (and spooled) for it.

    The payload is encoded once, when the detection is offered; one from a previous run or
    publisher keeps its original payload (original ``boot_id`` and ``sequence``).
    """

    boot_id: str
    sequence: int
    payload: Mapping[str, Any]

    @classmethod
    def from_event(cls, event: DetectionEvent) -> Outgoing:
        return cls(event.boot_id, event.sequence, event.to_dict())

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Outgoing:
        """A payload spooled or handed over earlier; ValueError without boot_id and sequence."""
        boot_id, sequence = event_key(dict(payload))
        return cls(boot_id, sequence, payload)

    @property
    def key(self) -> SpoolKey:
        return self.boot_id, self.sequence


@dataclass(frozen=True)
class Handed:
    """What the transport did with a message: took it, under ``mid``, or refused it (why)."""

    mid: int | None
    refused: str = ""


#: Hands one detection to the transport. Never called with the queue's lock held.
Send = Callable[[Outgoing], Handed]


class DeliveryQueue:
    """Detections from the listener to a transport, in order, bounded, acknowledged.

    ``send`` hands one detection to the transport. ``spool`` (None: nothing touches the disk)
    journals each accepted detection and its acknowledgement. ``clock`` (monotonic seconds)
    times the bounded waits.
    """

    def __init__(
        self,
        send: Send,
        *,
        queue_max: int,
        spool: DetectionSpool | None = None,
        carry_over: Sequence[Outgoing] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send_out = send
        self._queue_max = queue_max
        self._spool = spool
        self._clock = clock
        # Guards everything below; also the condition the waits wait on.
        self._lock = threading.Condition()
        #: id -> detection handed over and not acknowledged, in the order handed over.
        self._inflight: dict[int, Outgoing] = {}
        #: Ids of the other messages (status, stats, ...) handed over and not acknowledged.
        self._inflight_others: set[int] = set()
        #: Acknowledgements that arrived before their id was recorded.
        self._early_acks: set[int] = set()
        #: Detections waiting for the gate, oldest first.
        self._held: deque[Outgoing] = deque()
        self._gate_open = False
        #: Detections the transport holds from before the current connection; the gate waits
        #: for their acknowledgements.
        self._resend_mids: set[int] = set()
        #: offer() calls handing a detection over right now, past an open gate.
        self._direct_sends = 0
        self._flushing = False
        #: Counts connections made: a send that spans one is treated as a resend.
        self._epoch = 0
        self._connected = False
        self._delivered = 0
        self._dropped = 0
        self._dropping = False
        self._hold_earlier(carry_over)

    def _hold_earlier(self, carry_over: Sequence[Outgoing]) -> None:
        """Hold what a previous run spooled, then what a previous publisher handed over."""
        spooled = [] if self._spool is None else [Outgoing.from_payload(d) for d in self._spool.pending()]
        if spooled and self._spool is not None:
            log.warning(
                "MQTT: republishing %d spooled detections from %s before any new one",
                len(spooled),
                self._spool.path,
            )
        for outgoing in carry_over:
            if self._spool is not None:
                self._spool.add(dict(outgoing.payload))
        self._held.extend(spooled)
        self._held.extend(carry_over)

    # --- counters -------------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """Detections acknowledged."""
        with self._lock:
            return self._delivered

    @property
    def pending(self) -> int:
        """Detections held or handed over and not yet acknowledged."""
        with self._lock:
            return self._pending_locked()

    @property
    def dropped(self) -> int:
        """Detections refused: ``queue_max`` were pending, or the transport refused them."""
        with self._lock:
            return self._dropped

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def reconnects(self) -> int:
        """Connections made after the first one."""
        with self._lock:
            return max(self._epoch - 1, 0)

    def undelivered(self) -> list[Outgoing]:
        """The detections not acknowledged, oldest first."""
        with self._lock:
            return [*self._inflight.values(), *self._held]

    # --- the listener's side --------------------------------------------------------------

    def offer(self, event: DetectionEvent) -> bool:
        """Queue one detection (spooled first); False when it is dropped at the bound."""
        with self._lock:
            if self._pending_locked() >= self._queue_max:
                self._drop_locked(event.sequence, f"{self._queue_max} detections are already waiting")
                return False
        outgoing = Outgoing.from_event(event)
        if self._spool is not None:
            self._spool.add(dict(outgoing.payload))
        with self._lock:
            direct = self._gate_open
            if direct:
                self._direct_sends += 1
            else:
                self._held.append(outgoing)
        if direct:
            try:
                self._send(outgoing)
            finally:
                with self._lock:
                    self._direct_sends -= 1
            self.flush()  # the gate may have closed and reopened meanwhile
        return True

    # --- the transport's side -------------------------------------------------------------

    def connection_made(self) -> int:
        """The broker accepted a connection; returns how many detections are pending.

        What the transport still holds is resent after this, and must be acknowledged before
        anything held goes out: call :meth:`flush` once the connection's own messages are out.
        """
        with self._lock:
            self._connected = True
            self._epoch += 1
            self._resend_mids = set(self._inflight)
            return self._pending_locked()

    def connection_lost(self) -> int:
        """The connection dropped: the gate closes. Returns how many detections are pending."""
        with self._lock:
            self._connected = False
            self._gate_open = False
            self._lock.notify_all()
            return self._pending_locked()

    def track(self, mid: int) -> bool:
        """Record a message that is not a detection; True when it was acknowledged already."""
        with self._lock:
            return self._track_locked(mid, None)

    def acknowledged(self, mid: int) -> None:
        """The transport reports message ``mid`` delivered."""
        with self._lock:
            outgoing = self._inflight.pop(mid, None)
            if outgoing is not None:
                self._delivered += 1
            elif mid in self._inflight_others:
                self._inflight_others.discard(mid)
            else:
                self._early_acks.add(mid)
            was_resend = mid in self._resend_mids
            self._resend_mids.discard(mid)
            self._lock.notify_all()
        if outgoing is not None and self._spool is not None:
            self._spool.ack(outgoing.key)
        if was_resend:
            self.flush()

    def flush(self) -> None:
        """Hand the held detections over, in order, and open the gate, when nothing is ahead.

        Runs on whichever thread made it possible (the transport's after a connection or an
        acknowledgement, the listener's after a direct send); one at a time.
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
                    outgoing = self._held.popleft()
                self._send(outgoing)
        finally:
            with self._lock:
                self._flushing = False

    # --- bounded waits (close) ------------------------------------------------------------

    def wait_delivered(self, deadline: float) -> int:
        """Wait until nothing is pending or ``clock()`` passes ``deadline``; returns the pending."""
        with self._lock:
            self._wait_locked(lambda: self._pending_locked() == 0, deadline)
            return self._pending_locked()

    def wait_acknowledged(self, mid: int, deadline: float) -> bool:
        """Wait for a :meth:`track`-ed message's acknowledgement (bounded); True once it came."""
        with self._lock:
            self._wait_locked(lambda: mid not in self._inflight_others, deadline)
            return mid not in self._inflight_others

    # --- inside ---------------------------------------------------------------------------

    def _send(self, outgoing: Outgoing) -> None:
        """Hand one detection (already spooled, if there is a spool) to the transport."""
        with self._lock:
            epoch = self._epoch
        handed = self._send_out(outgoing)
        acked = False
        with self._lock:
            if handed.mid is None:
                self._drop_locked(outgoing.sequence, handed.refused)
            else:
                acked = self._track_locked(handed.mid, outgoing)
                if not acked and (epoch != self._epoch or not self._connected):
                    # Handed over around a reconnect: the transport resends it after the
                    # connection is made, so whatever is held must wait for it.
                    self._resend_mids.add(handed.mid)
                if self._dropping:
                    self._dropping = False
                    log.warning("MQTT: queueing detections again (%d dropped so far)", self._dropped)
        if self._spool is not None and (acked or handed.mid is None):
            # Delivered already, or dropped like any refused detection: not kept for a restart.
            self._spool.ack(outgoing.key)

    def _pending_locked(self) -> int:
        return len(self._inflight) + len(self._held)

    def _ready_locked(self) -> bool:
        """Whether held detections may go out: connected, with nothing of ours ahead."""
        return self._connected and not self._resend_mids and not self._direct_sends

    def _track_locked(self, mid: int, outgoing: Outgoing | None) -> bool:
        if mid in self._early_acks:
            self._early_acks.discard(mid)
            if outgoing is not None:
                self._delivered += 1
            self._lock.notify_all()
            return True
        if outgoing is None:
            self._inflight_others.add(mid)
        else:
            self._inflight[mid] = outgoing
        return False

    def _drop_locked(self, sequence: int, why: str) -> None:
        self._dropped += 1
        if not self._dropping:
            self._dropping = True
            log.warning("MQTT: dropping detections (sequence %d onwards): %s", sequence, why)

    def _wait_locked(self, done: Callable[[], bool], deadline: float) -> None:
        while not done():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            # Short slices: the deadline is on self._clock, which need not be the wait's clock.
            self._lock.wait(min(remaining, 0.1))
