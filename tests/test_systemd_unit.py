"""The systemd unit agrees with the daemon and stays hardened."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kwsd import cli

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "kwsd.service"
WYOMING_UNIT = UNIT.with_name("kwsd-wyoming.service")
#: Keys of kwsd.service that kwsd-wyoming.service has not: it opens no sound device.
SOUND_ONLY = {"DeviceAllow", "SupplementaryGroups"}


def settings(unit=UNIT):
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
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
    (reload,) = unit["ExecReload"]  # kwsd reloads on SIGHUP (kwsd/daemon.py)
    assert reload.startswith("/opt/kwsd/venv/bin/python3 ")  # nothing outside kwsd's venv
    assert unit["WatchdogSignal"] == ["SIGTERM"]  # a graceful stop: offline published


def test_wyoming_unit_matches_what_kwsd_wyoming_does():
    unit, daemon = settings(WYOMING_UNIT), settings()
    assert unit["Type"] == ["notify"]  # READY=1 once the port listens (kwsd/wyoming_server.py)
    assert unit["ExecStart"] == ["/opt/kwsd/venv/bin/kwsd wyoming -c /etc/kwsd/config.yaml"]
    for key in ("RestartPreventExitStatus", "Restart", "User", "Group", "StateDirectory"):
        assert unit[key] == daemon[key], key
    assert "WatchdogSec" not in unit  # nothing flows to ping it while no client streams
    assert "ExecReload" not in unit  # kwsd wyoming does not reload on SIGHUP


def test_wyoming_unit_is_hardened_as_kwsd_service_is():
    unit, daemon = settings(WYOMING_UNIT), settings()
    lines = UNIT.read_text().splitlines()
    hardening = lines[
        lines.index(
            "# Hardening: kwsd needs the sound devices, the network (MQTT) and its state directory."
        ) :
    ]
    keys = {line.partition("=")[0] for line in hardening if "=" in line and not line.startswith("#")}
    keys -= {"WantedBy"}
    assert {key: unit.get(key) for key in keys - SOUND_ONLY} == {
        key: daemon[key] for key in keys - SOUND_ONLY
    }
    assert not SOUND_ONLY & unit.keys()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", [UNIT, WYOMING_UNIT], ids=lambda unit: unit.name)
def test_exposure_is_ok(unit):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.5  # measured 1.4 for each


def test_exec_reload_sends_sighup_to_the_main_process():
    import shlex
    import sys

    (reload,) = settings()["ExecReload"]
    # A stand-in for kwsd's main process that says when SIGHUP arrives.
    main = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: (print('reload', flush=True), sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert main.stdout is not None and main.stdout.readline().strip() == "ready"
        words = [w.replace("$MAINPID", str(main.pid)) for w in shlex.split(reload)]
        assert words[0] == "/opt/kwsd/venv/bin/python3"
        subprocess.run([sys.executable, *words[1:]], check=True, timeout=60)
        assert main.stdout.readline().strip() == "reload"
        assert main.wait(timeout=60) == 0
    finally:
        main.kill()
