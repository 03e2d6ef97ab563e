"""The systemd unit agrees with the daemon and stays hardened."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kwsd import cli

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "kwsd.service"


def settings():
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_matches_what_the_daemon_does():
    unit = settings()
    assert unit["Type"] == ["notify"]  # kwsd sends READY=1 and WATCHDOG=1 (kwsd/notify.py)
    # What a restart cannot fix is not restarted in a loop.
    assert unit["RestartPreventExitStatus"] == [
        " ".join(
            str(code)
            for code in (
                cli.EXIT_BAD_SETTING,
                cli.EXIT_NO_INPUT,
                cli.EXIT_BAD_MODEL,
                cli.EXIT_MISSING_DEPENDENCY,
                cli.EXIT_CONFIG,
            )
        )
    ]
    assert unit["Restart"] == ["on-failure"]
    assert unit["ExecStart"] == ["/opt/kwsd/venv/bin/kwsd run -c /etc/kwsd/config.yaml"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # kwsd reloads on SIGHUP (kwsd/daemon.py)
    assert unit["WatchdogSignal"] == ["SIGTERM"]  # a graceful stop: offline published


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_exposure_is_ok():
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for kwsd.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5  # measured 1.6
