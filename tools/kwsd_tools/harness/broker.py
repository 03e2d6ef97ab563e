"""A real mosquitto on a loopback port, and a real subscriber, for the MQTT tests.

:class:`MosquittoBroker` runs Debian's ``/usr/sbin/mosquitto`` with a config written into a
temporary folder: one listener on 127.0.0.1, anonymous clients, persistence in that folder
(so a persistent subscriber session and the QoS 1 messages queued for it survive
``stop()`` + ``start()`` on the same port). Optionally (``tls``) that one listener is a TLS
listener (there is then no plain-text listener at all), and (``passwords``) clients must log in
with a user name and password from a ``mosquitto_passwd`` file (``allow_anonymous false``).

The port is chosen below the kernel's ephemeral range (``ip_local_port_range``), not by
binding port 0: a client that keeps reconnecting to a stopped broker on an ephemeral port
can, once in tens of thousands of attempts, be given that same port as its own source port
and connect to itself (TCP simultaneous open), which would look like a broker that accepts
and then says nothing.

:class:`Subscriber` is a paho client with a fixed client id and (by default) a persistent
session (``clean_session=False``), subscribed at QoS 1, collecting ``(topic, payload,
retain)`` tuples. Remember MQTT 3.1.1 sets ``retain`` only on messages sent from the
broker's retained store (on subscribing), never on live forwards.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
HOST = "127.0.0.1"
#: The least any wait below allows. A wait returns as soon as its condition holds, so this only
#: decides how long a failing test takes; generous, because CI and users' machines are busy.
PATIENCE_S = 60.0


def mosquitto_available() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


def mosquitto_passwd_available() -> bool:
    return os.access(MOSQUITTO_PASSWD, os.X_OK)


class BrokerTls(NamedTuple):
    """PEM files for a mosquitto TLS listener."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    #: Clients must present a certificate signed by ``ca_file``.
    require_certificate: bool = False


class ClientAuth(NamedTuple):
    """How a test :class:`Subscriber` logs in: TLS files and/or a user name and password."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None


def free_port() -> int:
    """A loopback port that can be bound now, below the ephemeral range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(10000, max(low, 10001)))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    timeout_s = max(timeout_s, PATIENCE_S)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class MosquittoBroker:
    """mosquitto on ``HOST:port``, stopped and started at will on the same port."""

    def __init__(
        self, workdir: Path, *, tls: BrokerTls | None = None, passwords: dict[str, str] | None = None
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} {HOST}"]
        if tls is not None:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                f"require_certificate {'true' if tls.require_certificate else 'false'}",
            ]
        if passwords:
            password_file = self.workdir / "passwords"
            for n, (user, password) in enumerate(passwords.items()):
                create = ["-c"] if n == 0 else []
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", *create, str(password_file), user, password],
                    check=True,
                    capture_output=True,
                )
            password_file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        lines += ["persistence true", f"persistence_location {self.workdir}/"]
        if os.geteuid() == 0:
            # Otherwise mosquitto drops to the mosquitto user, which cannot write workdir.
            lines.append("user root")
        self.conf_path.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 5.0) -> None:
        assert self._proc is None, "already running"
        with self.log_path.open("ab") as log_file:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)], stdout=log_file, stderr=subprocess.STDOUT
            )
        timeout_s = max(timeout_s, PATIENCE_S)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"mosquitto exited with {code}:\n{self.log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto not listening after {timeout_s} s:\n{self.log()}"
                    ) from None
                time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then wait; SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Message(NamedTuple):
    topic: str
    payload: str
    retain: bool


class Subscriber:
    """A QoS 1 subscriber to ``topic`` that keeps every message it receives, in order."""

    def __init__(
        self,
        port: int,
        topic: str,
        client_id: str = "test-subscriber",
        *,
        clean: bool = False,
        auth: ClientAuth | None = None,
    ) -> None:
        self.topic = topic
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._subscribed = False
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        if auth is not None:
            if auth.username is not None:
                self._client.username_pw_set(auth.username, auth.password)
            if auth.ca_file is not None:
                self._client.tls_set(
                    ca_certs=str(auth.ca_file),
                    certfile=None if auth.cert_file is None else str(auth.cert_file),
                    keyfile=None if auth.key_file is None else str(auth.key_file),
                )
        self._client.reconnect_delay_set(min_delay=1, max_delay=1)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect_async(HOST, port, keepalive=10)
        self._client.loop_start()

    def wait_subscribed(self, timeout_s: float = 5.0) -> Subscriber:
        timeout_s = max(timeout_s, PATIENCE_S)
        with self._cond:
            if not self._cond.wait_for(lambda: self._subscribed, timeout_s):
                raise AssertionError(f"subscriber not subscribed to {self.topic} after {timeout_s} s")
        return self

    @property
    def messages(self) -> list[Message]:
        with self._cond:
            return list(self._messages)

    def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout_s: float = 10.0, what: str = "messages"
    ) -> list[Message]:
        """Wait until ``predicate(messages so far)`` holds; returns the messages then."""
        timeout_s = max(timeout_s, PATIENCE_S)
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self._messages), timeout_s):
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}; got {self._messages}"
                )
            return list(self._messages)

    def wait_for_count(self, count: int, topic: str | None = None, timeout_s: float = 10.0) -> list[Message]:
        """Wait for ``count`` messages (on ``topic`` if given); returns those messages."""
        found = self.wait_for(
            lambda messages: len(_on_topic(messages, topic)) >= count,
            timeout_s,
            f"{count} messages on {topic}",
        )
        return _on_topic(found, topic)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        with self._cond:
            self._messages.append(Message(message.topic, message.payload.decode(), bool(message.retain)))
            self._cond.notify_all()


def _on_topic(messages: list[Message], topic: str | None) -> list[Message]:
    return [m for m in messages if topic is None or m.topic == topic]
