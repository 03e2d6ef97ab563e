"""DetectionSpool with real files in a temporary folder."""

import contextlib
import json
import logging

import pytest

from kwsd.config import MqttConfig
from kwsd.mqtt import MqttPublisher
from kwsd.spool import JOURNAL_NAME, DetectionSpool, SpoolError


def event(sequence, boot_id="boot-1", label="yes"):
    return {"label": label, "score": 0.9, "sequence": sequence, "boot_id": boot_id}


def journal_lines(folder):
    return [json.loads(line) for line in (folder / JOURNAL_NAME).read_text().splitlines()]


def test_round_trip_keeps_order_and_acked_entries_disappear(tmp_path):
    spool = DetectionSpool(tmp_path, 10)
    for n in (1, 2, 3, 4):
        spool.add(event(n))
    spool.ack(("boot-1", 2))
    spool.ack(("boot-1", 99))  # unknown: ignored
    assert spool.pending() == [event(1), event(3), event(4)]
    # Appended, one line per change.
    assert journal_lines(tmp_path) == [{"add": event(n)} for n in (1, 2, 3, 4)] + [{"ack": ["boot-1", 2]}]
    spool.close()

    reopened = DetectionSpool(tmp_path, 10)
    assert reopened.pending() == [event(1), event(3), event(4)]
    assert (reopened.dropped, reopened.skipped_lines) == (0, 0)
    reopened.close()


def test_opening_compacts_the_journal_to_the_pending_entries(tmp_path):
    spool = DetectionSpool(tmp_path, 10)
    spool.add(event(1, "a"))
    spool.add(event(1, "b"))
    spool.add(event(2, "b"))
    spool.ack(("a", 1))
    spool.ack(("b", 2))
    spool.close()
    assert len(journal_lines(tmp_path)) == 5

    reopened = DetectionSpool(tmp_path, 10)
    assert journal_lines(tmp_path) == [{"add": event(1, "b")}]
    assert not (tmp_path / (JOURNAL_NAME + ".tmp")).exists()
    reopened.ack(("b", 1))
    reopened.close()
    assert DetectionSpool(tmp_path, 10).pending() == []


def test_the_journal_is_compacted_as_it_grows(tmp_path):
    spool = DetectionSpool(tmp_path, 10)
    spool.add(event(0))
    for n in range(1, 200):
        spool.add(event(n))
        spool.ack(("boot-1", n))
    assert spool.pending() == [event(0)]
    assert len(journal_lines(tmp_path)) <= 65
    spool.close()
    assert DetectionSpool(tmp_path, 10).pending() == [event(0)]


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    spool = DetectionSpool(tmp_path, 10)
    spool.add(event(1))
    spool.add(event(2))
    spool.close()
    path = tmp_path / JOURNAL_NAME
    with path.open("a") as journal:
        journal.write('{"add": {"label": "yes", "sco')  # power cut mid-write

    with caplog.at_level(logging.WARNING, logger="kwsd.spool"):
        reopened = DetectionSpool(tmp_path, 10)
    assert reopened.pending() == [event(1), event(2)]
    assert reopened.skipped_lines == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in w and "line 3" in w and "torn" in w for w in warnings), warnings
    # Compaction removed the torn line: appending after it is safe.
    reopened.add(event(3))
    reopened.close()
    assert journal_lines(tmp_path) == [{"add": event(n)} for n in (1, 2, 3)]


def test_past_the_bound_the_oldest_is_dropped_and_counted(tmp_path):
    spool = DetectionSpool(tmp_path, 3)
    for n in range(1, 6):
        spool.add(event(n))
    assert spool.pending() == [event(3), event(4), event(5)]
    assert spool.dropped == 2
    spool.close()
    # Replaying the journal applies the same bound.
    assert DetectionSpool(tmp_path, 3).pending() == [event(3), event(4), event(5)]
    # A smaller bound at the next start keeps the newest.
    smaller = DetectionSpool(tmp_path, 2)
    assert (smaller.pending(), smaller.dropped) == ([event(4), event(5)], 1)
    smaller.close()


def test_an_unusable_folder_is_a_typed_error_naming_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(SpoolError) as caught:
        DetectionSpool(blocker / "spool", 10)
    assert caught.value.path == blocker / "spool"
    assert str(blocker / "spool") in str(caught.value)


def test_the_publisher_refuses_an_unusable_spool_before_connecting(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    # Port 9 (discard) is never contacted: the spool fails first.
    with pytest.raises(SpoolError):
        MqttPublisher(MqttConfig(host="127.0.0.1", port=9, spool_dir=blocker / "spool"), "pi")


def test_a_failed_write_is_logged_and_heals_once_the_disk_works(tmp_path, monkeypatch, caplog):
    spool = DetectionSpool(tmp_path, 10)
    spool.add(event(1))

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, logger="kwsd.spool"):
        patch.setattr("kwsd.spool.os.fsync", broken_fsync)
        spool.add(event(2))  # does not raise
        spool.add(event(3))
        spool.ack(("boot-1", 1))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(tmp_path / JOURNAL_NAME) in errors[0]
    assert not spool.healthy
    assert spool.pending() == [event(2), event(3)]  # memory goes on

    spool.add(event(4))  # the disk works again: the journal is rewritten from memory
    assert spool.healthy
    spool.close()
    assert DetectionSpool(tmp_path, 10).pending() == [event(2), event(3), event(4)]


@pytest.mark.parametrize(
    "line",
    [
        '{"add": {"boot_id": "b", "sequence": 1}}',  # no label: nothing could publish it
        '{"add": {"boot_id": "b", "sequence": 99999999999999999999999999, "label": "yes"}}',
        "[" * 100_000 + "]" * 100_000,  # deeper than json can parse
        '{"ack": [["b"], 1]}',
    ],
)
def test_a_damaged_journal_is_kept_aside_and_the_spool_opens(tmp_path, line, caplog):
    good = json.dumps({"add": event(2)})
    (tmp_path / JOURNAL_NAME).write_text(f"{line}\n{good}\n")
    with caplog.at_level(logging.WARNING, logger="kwsd.spool"):
        spool = DetectionSpool(tmp_path, 10)
    assert spool.pending() == [event(2)] and spool.skipped_lines == 1
    spool.close()
    (aside,) = tmp_path.glob(JOURNAL_NAME + ".damaged-*")
    assert aside.read_text() == f"{line}\n{good}\n"
    assert any(str(aside) in r.getMessage() for r in caplog.records)


def test_a_journal_that_is_not_a_regular_file_is_refused(tmp_path):
    import os

    os.mkfifo(tmp_path / JOURNAL_NAME)  # once hung the start
    with pytest.raises(SpoolError, match=f"{tmp_path / JOURNAL_NAME}: not a regular file"):
        DetectionSpool(tmp_path, 10)


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to the last byte (a real ENOSPC; needs root to mount)."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_at_start_runs_from_memory_and_heals(full_disk, caplog):
    spool_dir = full_disk / "spool"
    first = DetectionSpool(spool_dir, 10)
    first.add(event(1))
    first.close()
    filler = full_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
    with caplog.at_level(logging.ERROR, logger="kwsd.spool"):
        spool = DetectionSpool(spool_dir, 10)  # was SpoolError: exit 78, never restarted
    assert spool.pending() == [event(1)] and not spool.healthy
    assert any("kept in memory" in r.getMessage() for r in caplog.records)
    spool.add(event(2))  # still full: memory only
    assert spool.pending() == [event(1), event(2)] and not spool.healthy
    filler.unlink()
    spool.add(event(3))  # room again: the journal is rewritten from memory
    assert spool.healthy
    spool.close()
    assert DetectionSpool(spool_dir, 10).pending() == [event(1), event(2), event(3)]


def test_the_spool_is_private_whatever_the_umask(tmp_path):
    # Outside systemd (no StateDirectory=, a umask of 022) what was heard, and when, is still
    # readable by kwsd's user only: the folder it makes, the journal, a damaged journal's copy.
    import os
    import stat

    folder = tmp_path / "state" / "spool"
    old_umask = os.umask(0o022)
    try:
        spool = DetectionSpool(folder, 10)
        spool.add(event(1))
        spool.close()
        (folder / JOURNAL_NAME).write_text("not json\n" + json.dumps({"add": event(2)}) + "\n")
        (folder / JOURNAL_NAME).chmod(0o644)  # as an earlier kwsd left it
        DetectionSpool(folder, 10).close()
    finally:
        os.umask(old_umask)
    (aside,) = folder.glob(JOURNAL_NAME + ".damaged-*")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / JOURNAL_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(aside.stat().st_mode) == 0o600
    assert DetectionSpool(folder, 10).pending() == [event(2)]
