"""Helpers more than one test file uses: test files import from here, never from each other.

(The real parts they start, mosquitto and the ALSA capture devices, are in
:mod:`kwsd_tools.harness`, which the soak uses too; audio generators are in ``wavgen.py``,
the demo's words in ``demo_words.py``, the training tools' availability in
``training_tools.py``.)
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kwsd.publisher import DetectionEvent, EventStamper
from kwsd_tools.training.dataset import which_set

#: The MQTT tests' device and its topics under the default prefix.
DEVICE = "pi"
DETECTION_TOPIC = f"kwsd/{DEVICE}/detection"
STATUS_TOPIC = f"kwsd/{DEVICE}/status"
#: The wall clock of the MQTT tests' first event.
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def make_events(count: int, first: int = 1) -> list[DetectionEvent]:
    """Detection events ``first`` .. ``first + count - 1`` of one run, as the listener stamps them."""
    stamper = EventStamper("demo", "ab" * 32, boot_id="boot-1")
    events = [
        stamper.stamp("yes" if n % 2 else "no", 0.5 + n / 100, 1000 * n, T0 + dt.timedelta(seconds=n))
        for n in range(1, first + count)
    ]
    return events[first - 1 :]


def detections(messages: Any) -> list[dict[str, Any]]:
    """Detection payloads in arrival order, each first arrival only (QoS 1 may redeliver)."""
    seen, unique = set(), []
    for message in messages:
        if message.topic == DETECTION_TOPIC:
            payload = json.loads(message.payload)
            if payload["sequence"] not in seen:
                seen.add(payload["sequence"])
                unique.append(payload)
    return unique


def speakers(partition: str, count: int, prefix: str = "spk") -> list[str]:
    """The first ``count`` names ``<prefix>NNN`` that the hash split puts in ``partition`` (10/10)."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        name = f"{prefix}{i:03d}"
        if which_set(f"{name}_nohash_0.wav", 10, 10) == partition:
            found.append(name)
        i += 1
    return found


class Daemon:
    """``kwsd -v run -c CONFIG`` in a subprocess, its log lines collected as they come."""

    def __init__(self, config: Path, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kwsd", "-v", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(env),
        )
        self.lines: list[str] = []
        stderr = self.process.stderr
        assert stderr is not None
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(line.decode() for line in stderr), daemon=True
        )
        self._reader.start()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout_s: float) -> None:
        """Until a log line contains ``text``; fails (with the log) if the daemon ends first."""
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None and time.monotonic() < deadline, self.log
            time.sleep(0.05)

    def finish(self) -> str:
        """Kill it if it still runs; the whole log once its stderr has closed."""
        if self.process.poll() is None:
            self.process.kill()
        self._reader.join(5)
        return self.log
