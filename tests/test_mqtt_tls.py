"""MqttPublisher over TLS and with a user name and password, against a real mosquitto.

The certificates are made once per module with the ``openssl`` command (EC keys, quick): a
test CA, a server certificate for ``127.0.0.1`` (IP SAN) and ``localhost`` signed by it, a
client certificate signed by it, and a second, unrelated CA. Each test gets its own broker with
a single TLS listener (no plain-text listener anywhere) and ``allow_anonymous false``.
"""

import json
import logging
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from kwsd.config import MqttConfig, TlsConfig
from kwsd.mqtt import MqttPublisher, MqttSetupError
from kwsd_tools.harness.broker import (
    HOST,
    BrokerTls,
    ClientAuth,
    MosquittoBroker,
    Subscriber,
    mosquitto_available,
    mosquitto_passwd_available,
    wait_until,
)
from tests.helpers import DETECTION_TOPIC, DEVICE, make_events

OPENSSL = shutil.which("openssl")

pytestmark = [
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed (Debian: mosquitto)"),
    pytest.mark.skipif(
        not mosquitto_passwd_available(), reason="mosquitto_passwd is not installed (Debian: mosquitto)"
    ),
    pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed (Debian: openssl)"),
]

USER = "kwsd"
PASSWORD = "s3cret pass"
LOGGER = "kwsd.mqtt"

OPENSSL_CONF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class Pki(NamedTuple):
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def openssl(*args: str | Path, cwd: Path) -> None:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *map(str, args)], check=False, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {' '.join(map(str, args))} failed:\n{done.stderr}"


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    # fmt: off
    openssl(
        "req", "-x509", "-config", "openssl.cnf", "-extensions", "ca",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        cwd=folder,
    )
    # fmt: on
    return cert, key


def make_leaf(folder: Path, name: str, cn: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr = folder / f"{name}.crt", folder / f"{name}.key", folder / f"{name}.csr"
    # fmt: off
    openssl(
        "req", "-new", "-config", "openssl.cnf",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={cn}",
        cwd=folder,
    )
    openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-set_serial", str(time.time_ns()),
        "-days", "2", "-extfile", "openssl.cnf", "-extensions", extensions, "-out", cert,
        cwd=folder,
    )
    # fmt: on
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    (folder / "openssl.cnf").write_text(OPENSSL_CONF)
    ca = make_ca(folder, "kwsd-test-ca")
    server = make_leaf(folder, "server", "127.0.0.1", ca, "server")
    client = make_leaf(folder, "client", "kwsd-test-client", ca, "client")
    other_ca, _ = make_ca(folder, "other-ca")
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca)


@pytest.fixture
def brokers(tmp_path):
    made = []

    def make(pki: Pki, *, require_certificate: bool = False) -> MosquittoBroker:
        tls = BrokerTls(pki.ca, pki.server_cert, pki.server_key, require_certificate)
        broker = MosquittoBroker(tmp_path / f"broker{len(made)}", tls=tls, passwords={USER: PASSWORD})
        made.append(broker)
        broker.start()
        return broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def clients():
    """make_subscriber(...) and make_publisher(...), all closed at the end."""
    subs: list[Subscriber] = []
    pubs: list[MqttPublisher] = []

    def subscriber(port: int, auth: ClientAuth) -> Subscriber:
        sub = Subscriber(port, "kwsd/#", "tls-subscriber", clean=True, auth=auth)
        subs.append(sub)
        return sub

    def publisher(port: int, tls: TlsConfig, password: str = PASSWORD) -> MqttPublisher:
        config = MqttConfig(host=HOST, port=port, username=USER, password=password, tls=tls, spool_dir=None)
        pub = MqttPublisher(config, DEVICE)
        pubs.append(pub)
        return pub

    yield subscriber, publisher
    for pub in pubs:
        pub.close(timeout_s=0.5)
    for sub in subs:
        sub.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def detection_sequences(sub: Subscriber) -> list[int]:
    return [json.loads(m.payload)["sequence"] for m in sub.messages if m.topic == DETECTION_TOPIC]


def test_tls_with_the_right_ca_and_password_delivers_events(pki, brokers, clients):
    make_subscriber, make_publisher = clients
    broker = brokers(pki)
    sub = make_subscriber(broker.port, ClientAuth(ca_file=pki.ca, username=USER, password=PASSWORD))
    sub.wait_subscribed()
    pub = make_publisher(broker.port, TlsConfig(enabled=True, ca_file=pki.ca))
    events = make_events(2)
    for event in events:
        pub.publish(event)

    received = sub.wait_for_count(2, DETECTION_TOPIC)
    assert [json.loads(m.payload) for m in received] == [e.to_dict() for e in events]
    wait_until(lambda: pub.delivered_events == 2, 5.0, "2 acknowledged detections")
    assert pub.connected


def test_wrong_ca_never_connects_warns_and_never_falls_back_to_plain_text(pki, brokers, clients, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    make_subscriber, make_publisher = clients
    broker = brokers(pki)
    sub = make_subscriber(broker.port, ClientAuth(ca_file=pki.ca, username=USER, password=PASSWORD))
    sub.wait_subscribed()
    started = time.monotonic()
    pub = make_publisher(broker.port, TlsConfig(enabled=True, ca_file=pki.other_ca))
    pub.publish(make_events(1)[0])

    # Two attempts (the retry comes after 1 s), both refused by our side of the handshake.
    wait_until(
        lambda: sum("connection attempt" in r.getMessage() for r in caplog.records) >= 1,
        10.0,
        "a second, failed connection attempt",
    )
    time.sleep(max(0.0, 3.0 - (time.monotonic() - started)))

    assert not pub.connected
    assert pub.delivered_events == 0
    assert detection_sequences(sub) == []
    found = warnings(caplog)
    tls_warnings = [w for w in found if "certificate verify failed" in w]
    assert len(tls_warnings) == 1, found
    assert f"{HOST}:{broker.port}" in tls_warnings[0]
    assert "TLS handshake failed" in tls_warnings[0]
    # The broker only ever saw TLS handshakes (a plain CONNECT would fail its TLS parsing with
    # "wrong version number" or similar, and it accepted no client but the subscriber).
    log = broker.log()
    assert "wrong version number" not in log
    assert f"as kwsd-{DEVICE}" not in log


def test_client_certificate_required_works_with_the_client_certificate(pki, brokers, clients):
    make_subscriber, make_publisher = clients
    broker = brokers(pki, require_certificate=True)
    sub_auth = ClientAuth(pki.ca, pki.client_cert, pki.client_key, USER, PASSWORD)
    sub = make_subscriber(broker.port, sub_auth)
    sub.wait_subscribed()
    tls = TlsConfig(enabled=True, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
    pub = make_publisher(broker.port, tls)
    pub.publish(make_events(1)[0])

    assert detection_sequences_eventually(sub, 1) == [1]
    wait_until(lambda: pub.delivered_events == 1, 5.0, "an acknowledged detection")


def detection_sequences_eventually(sub: Subscriber, count: int) -> list[int]:
    sub.wait_for_count(count, DETECTION_TOPIC)
    return detection_sequences(sub)


def test_wrong_password_is_refused_and_warned_about_once(pki, brokers, clients, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _, make_publisher = clients
    broker = brokers(pki)
    pub = make_publisher(broker.port, TlsConfig(enabled=True, ca_file=pki.ca), password="wrong")

    # The retry comes after 1 s and is refused again: logged at debug level only.
    wait_until(
        lambda: any("refused the connection again" in r.getMessage() for r in caplog.records),
        10.0,
        "a second refusal",
    )
    assert not pub.connected
    refusals = [w for w in warnings(caplog) if "refused the connection" in w]
    assert len(refusals) == 1, warnings(caplog)
    assert f"{HOST}:{broker.port}" in refusals[0]
    assert "not authori" in refusals[0].lower() or "bad user name or password" in refusals[0].lower()
    assert not [w for w in warnings(caplog) if "closed the connection before accepting it" in w]


def test_missing_ca_file_is_a_setup_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "ca.crt"
    config = MqttConfig(host=HOST, port=1, tls=TlsConfig(enabled=True, ca_file=missing), spool_dir=None)
    with pytest.raises(MqttSetupError, match="CA file") as raised:
        MqttPublisher(config, DEVICE)
    assert str(missing) in str(raised.value)
    assert "No such file or directory" in str(raised.value)


def test_key_file_that_is_not_a_key_is_a_setup_error_naming_it(pki, tmp_path):
    not_a_key = tmp_path / "client.key"
    not_a_key.write_text("this is not a PEM key\n")
    tls = TlsConfig(enabled=True, ca_file=pki.ca, cert_file=pki.client_cert, key_file=not_a_key)
    config = MqttConfig(host=HOST, port=1, tls=tls, spool_dir=None)
    with pytest.raises(MqttSetupError, match="key file") as raised:
        MqttPublisher(config, DEVICE)
    assert str(not_a_key) in str(raised.value)
    assert str(pki.client_cert) not in str(raised.value).replace(str(not_a_key), "")


def test_ca_file_that_is_not_a_certificate_is_a_setup_error_naming_it(pki, tmp_path):
    bad_ca = tmp_path / "ca.crt"
    bad_ca.write_text("not a certificate\n")
    config = MqttConfig(host=HOST, port=1, tls=TlsConfig(enabled=True, ca_file=bad_ca), spool_dir=None)
    with pytest.raises(MqttSetupError, match="CA file") as raised:
        MqttPublisher(config, DEVICE)
    assert str(bad_ca) in str(raised.value)


def test_client_certificate_required_but_not_given_never_connects_and_warns(pki, brokers, clients, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    _, make_publisher = clients
    broker = brokers(pki, require_certificate=True)
    pub = make_publisher(broker.port, TlsConfig(enabled=True, ca_file=pki.ca))

    # TLS 1.3: the broker rejects the missing certificate after the client's handshake is done,
    # so it shows as the connection closing before any CONNACK (with TLS 1.2, in the handshake).
    wait_until(
        lambda: any(
            "closed the connection before" in w or "TLS handshake failed" in w for w in warnings(caplog)
        ),
        10.0,
        "a warning about the rejected connection",
    )
    assert not pub.connected
    assert f"as kwsd-{DEVICE}" not in broker.log()


@pytest.mark.parametrize("insecure", [False, True])
def test_insecure_skips_only_the_host_name_check(pki, insecure):
    tls = TlsConfig(enabled=True, ca_file=pki.ca, insecure=insecure)
    pub = MqttPublisher(MqttConfig(host=HOST, port=1, tls=tls, spool_dir=None), DEVICE)
    try:
        context = pub._client._ssl_context  # paho's; no public accessor
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is not insecure
    finally:
        pub.close(timeout_s=0.2)
