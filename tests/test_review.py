"""kwsd review: filing captures, by script and one key at a time on a real terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from kwsd.bundle import demo_bundle_path, read_bundle
from kwsd.capture import CaptureSettings, CaptureWriter

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
DEMO_SHA = read_bundle(demo_bundle_path()).sha256


def captures(tmp_path: Path, *items: tuple[str, str]) -> Path:
    """A capture folder as kwsd run leaves it: (label, model sha256) per capture."""
    directory = tmp_path / "captures"
    writer = CaptureWriter(CaptureSettings(directory, 1000, 500, None, 100, 100), "pi", RATE).start()
    for n, (label, sha) in enumerate(items):
        sidecar = {
            "kind": "detection",
            "label": label,
            "score": 0.9 + n / 100,
            "threshold": 0.9,
            "model": {"name": "demo", "sha256": sha},
            "time": "2026-12-07T09:30:00.000Z",
            "labels": ["_silence_", "_unknown_", "yes", "no"],
            "scores": [{"audio_time_ms": t, "scores": [0.1, 0.0, t / 3000, 0.0]} for t in range(0, 1500, 20)],
        }
        writer.submit(label, (np.sin(np.arange(RATE) / 5) * 8000).astype(np.int16), sidecar)
    writer.close()
    return directory


def kwsd(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )


def test_list_and_accept_all_file_captures_and_skip_bad_sidecars_and_other_models(tmp_path):
    directory = captures(tmp_path, ("yes", DEMO_SHA), ("yes", DEMO_SHA), ("no", DEMO_SHA), ("yes", "cd" * 32))
    (directory / "pending/yes/pi_nohash_1.json").write_text("{torn")
    listed = kwsd("review", directory, "--list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == (
        "no/pi_nohash_0.wav: detection no score 0.92 (threshold 0.9) at 2026-12-07T09:30:00.000Z"
    )
    assert lines[2].startswith(
        f"{directory}/pending/yes/pi_nohash_1.wav: skipped: its sidecar pi_nohash_1.json"
    )
    accepted = kwsd("review", directory, "--accept-all", "yes", "-m", demo_bundle_path())
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.splitlines() == ["yes/pi_nohash_0.wav -> reviewed/yes/pi_nohash_0.wav"]
    assert "captured with another model" in accepted.stderr and "cannot be read" in accepted.stderr
    filed = json.loads((directory / "reviewed/yes/pi_nohash_0.json").read_text())
    assert filed["review"]["verdict"] == "correct" and filed["label"] == "yes" and filed["score"] == 0.9
    left = sorted(p.relative_to(directory / "pending").as_posix() for p in directory.glob("pending/*/*.wav"))
    assert left == ["no/pi_nohash_0.wav", "yes/pi_nohash_1.wav", "yes/pi_nohash_2.wav"]


def test_one_key_at_a_time_on_a_terminal(tmp_path):
    directory = captures(tmp_path, *[("yes", DEMO_SHA)] * 5)
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PYTHONPATH"] = str(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "kwsd", "review", str(directory), "--no-play"])
    out = bytearray()
    keys = iter(["c", "w", "o", "maybe\r", "d", "s"])

    deadline = time.monotonic() + 60

    def read():
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:  # a prompt never came: fail rather than hang
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"kwsd review stopped answering: {out.decode()[-500:]}")
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        out.extend(data)
        return bool(data)

    while read():
        if out.rstrip().endswith(b"[q]uit?") or out.rstrip().endswith(b"was it?"):
            os.write(fd, next(keys).encode())
    _, status = os.waitpid(pid, 0)
    text = out.decode()
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "score [" in text and "level [" in text
    assert "1 correct, 1 wrong, 1 other, 1 skipped, 1 deleted" in text
    reviewed = sorted(
        p.relative_to(directory / "reviewed").as_posix() for p in directory.glob("reviewed/*/*.wav")
    )
    assert reviewed == ["_unknown_/pi_nohash_0.wav", "maybe/pi_nohash_0.wav", "yes/pi_nohash_0.wav"]
    assert [p.name for p in directory.glob("pending/yes/*.wav")] == ["pi_nohash_4.wav"]  # skipped
    verdict = json.loads((directory / "reviewed/maybe/pi_nohash_0.json").read_text())["review"]
    assert (verdict["verdict"], verdict["label"]) == ("other", "maybe")


def test_no_terminal_no_flags_is_a_usage_error_and_a_missing_folder_exit_66(tmp_path):
    directory = captures(tmp_path, ("yes", DEMO_SHA))
    result = kwsd("review", directory)
    assert result.returncode == 64 and "run it on a terminal, or use --list or --accept-all" in result.stderr
    missing = kwsd("review", tmp_path / "nowhere", "--list")
    assert (
        missing.returncode == 66
        and "no pending/ folder" in missing.stderr
        and "Traceback" not in missing.stderr
    )
