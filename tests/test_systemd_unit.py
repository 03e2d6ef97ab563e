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
    (reload,) = unit["ExecReload"]  # kwsd reloads on SIGHUP (kwsd/daemon.py)
    assert reload.startswith("/opt/kwsd/venv/bin/python3 ")  # nothing outside kwsd's venv
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
    assert float(match.group(1)) <= 2.5  # measured 1.4


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
