"""Fixtures shared by several test files."""

import pytest

from kwsd_tools.harness.broker import MosquittoBroker


@pytest.fixture
def broker(tmp_path):
    """A mosquitto of its own on a free loopback port (persistence under tmp_path), stopped after."""
    mosquitto = MosquittoBroker(tmp_path / "broker")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()
