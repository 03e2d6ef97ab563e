"""TLS for the MQTT connection (``mqtt.tls``): the files checked one by one, then handed to paho.

The broker's certificate must chain to ``tls.ca_file`` (None = the system's CA certificates)
and, unless ``tls.insecure``, name the host connected to (with ``insecure`` the host name is
not checked; the connection is still encrypted and the CA still checked).
``tls.cert_file``/``tls.key_file`` give a client certificate. A CA, certificate or key file
that cannot be used raises :class:`MqttSetupError` naming the file, from
:func:`configure_tls` (the publisher's constructor) or :func:`check_tls` (``check-config``).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from kwsd.config import TlsConfig
from kwsd.errors import KwsdError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


class MqttSetupError(KwsdError):
    """An MQTT setting that cannot be used: a TLS CA, certificate or key file.

    The message reads ``MQTT TLS: cannot use <what> <path>: <reason>``.
    """


def check_tls(tls: TlsConfig) -> None:
    """Raise :class:`MqttSetupError` naming the TLS file that cannot be used; else nothing."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    configure_tls(mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2), tls)


def configure_tls(client: mqtt.Client, tls: TlsConfig) -> None:
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
