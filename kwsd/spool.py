"""Detections kept on disk until the broker acknowledges them (``mqtt.spool_dir``).

The spool is one append-only journal, ``<directory>/journal.jsonl``, of JSON lines:

* ``{"add": <event>}``: a detection (:meth:`DetectionEvent.to_dict`), journaled before it is
  handed to the MQTT client;
* ``{"ack": [<boot_id>, <sequence>]}``: the broker acknowledged that detection.

Pending = added and not acknowledged, in the order added. Each line is written with one
``write()``, then ``flush()`` and ``os.fsync()``: detections are rare (a few a minute at most),
so durability costs little, and a power cut can tear at most the last line.

Opening reads the journal (a line that does not parse, such as a torn last line, is skipped,
counted in :attr:`DetectionSpool.skipped_lines` and logged as a WARNING with the file and line
number), then compacts it: the pending entries are written to a temporary file, fsynced, and
moved over the journal with ``os.replace`` (atomic), and the folder is fsynced. The journal is
compacted the same way whenever it grows past ``COMPACT_FACTOR`` times the pending entries
(and at least ``COMPACT_MIN_LINES`` lines), so it stays small.

Bound: at most ``max_events`` entries are pending; adding one more drops the *oldest* pending
entry, counted in :attr:`DetectionSpool.dropped` (the same rule applies when the journal is
replayed, so a restart yields the same pending entries).

Errors: a folder that cannot be created or written raises :class:`SpoolError` when the spool
is opened, except for a full disk (or quota, or an I/O error), which starts the spool in memory
as a failed write later would. A write that fails later is logged as an ERROR and never
raised: the caller keeps working from memory, and the next write first tries to rewrite the
journal from memory (a compaction), so the spool heals once the disk does.

Thread safety: every method may be called from any thread; one lock, held only around the
spool's own state and file I/O (it never calls out while holding it), serialises them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from kwsd.errors import read_limited

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
#: Compact when the journal has more than this many lines per pending entry ...
COMPACT_FACTOR = 4
#: ... and more than this many lines in all.
COMPACT_MIN_LINES = 64
#: Write errors that space or time may cure: at start they leave the spool in memory, not refused.
_TRANSIENT_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
#: Largest journal read at start: far beyond any max_events kwsd accepts (a line is ~300 bytes).
MAX_JOURNAL_BYTES = 256 << 20

#: A spooled detection's identity: (boot_id, sequence).
SpoolKey = tuple[str, int]


class SpoolError(Exception):
    """The spool folder cannot be used (created, read or written) when the spool is opened."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def event_key(event: dict[str, Any]) -> SpoolKey:
    """The (boot_id, sequence) of an event dict; ValueError when it has none."""
    boot_id = event.get("boot_id")
    sequence = event.get("sequence")
    if (
        not isinstance(boot_id, str)
        or isinstance(sequence, bool)
        or not isinstance(sequence, int)
        or not 0 <= sequence < 1 << 63
    ):
        raise ValueError("an event needs a string boot_id and an integer sequence (0 to 2**63-1)")
    return boot_id, sequence


class DetectionSpool:
    """A small bounded journal of detections not yet acknowledged by the broker."""

    def __init__(self, directory: Path, max_events: int) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL_NAME
        self.max_events = max_events
        self._lock = threading.Lock()
        self._pending: OrderedDict[SpoolKey, dict[str, Any]] = OrderedDict()
        self._file: TextIO | None = None
        self._lines = 0
        self._broken = False
        self._closed = False
        #: Pending entries dropped past ``max_events`` by this instance (replay included).
        self.dropped = 0
        #: Journal lines that did not parse when the spool was opened (a torn last line).
        self.skipped_lines = 0
        try:
            # Private outside systemd too (its StateDirectory= is 0700): what was heard, and when.
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._replay()
            self._compact_locked()
        except OSError as exc:
            self._close_file_locked()
            if exc.errno not in _TRANSIENT_WRITE_ERRORS:
                where = Path(exc.filename) if isinstance(exc.filename, str) else self.directory
                raise SpoolError(where, exc.strerror or str(exc)) from exc
            # A full disk is no reason to stay down (systemd would not restart a config error):
            # run from memory; the next write rewrites the journal once there is room.
            self._broken = True
            log.error(
                "spool: cannot write %s (%s); detections are kept in memory only until it works again",
                self.path,
                exc.strerror or exc,
            )
        log.info("spool: %s holds %d pending detections", self.path, len(self._pending))

    # --- queries --------------------------------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        """Events added and not acknowledged, oldest first."""
        with self._lock:
            return list(self._pending.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    @property
    def healthy(self) -> bool:
        """False after a write failed, until a later write succeeds."""
        with self._lock:
            return not self._broken

    # --- changes --------------------------------------------------------------------------

    def add(self, event: dict[str, Any]) -> None:
        """Journal ``event`` (needs ``boot_id`` and ``sequence``); never raises ``OSError``."""
        key = event_key(event)
        with self._lock:
            self._add_locked(key, event)
            self._write_locked({"add": event})

    def ack(self, key: SpoolKey) -> None:
        """The broker has ``key``; unknown keys are ignored. Never raises ``OSError``."""
        with self._lock:
            if self._pending.pop(key, None) is None:
                return
            self._write_locked({"ack": [key[0], key[1]]})

    def close(self) -> None:
        """Close the journal; later adds and acks change memory only. Idempotent."""
        with self._lock:
            self._closed = True
            self._close_file_locked()

    # --- internals (self._lock held, or during __init__) ------------------------------------

    def _add_locked(self, key: SpoolKey, event: dict[str, Any]) -> None:
        self._pending.pop(key, None)
        self._pending[key] = event
        while len(self._pending) > self.max_events:
            old_key, _ = self._pending.popitem(last=False)
            self.dropped += 1
            log.warning(
                "spool: more than %d detections pending; dropped the oldest (boot %s, sequence %d)",
                self.max_events,
                old_key[0],
                old_key[1],
            )

    def _replay(self) -> None:
        try:
            data = read_limited(self.path, MAX_JOURNAL_BYTES)  # a FIFO or /dev/zero is refused
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        damaged = False
        for number, raw in enumerate(lines, start=1):
            try:
                record = json.loads(raw)
                if not isinstance(record, dict) or len(record) != 1:
                    raise ValueError("not a one-key object")
                if "add" in record:
                    event = record["add"]
                    if not isinstance(event, dict):
                        raise ValueError("add: not an object")
                    label = event.get("label")
                    if not isinstance(label, str) or not label:
                        raise ValueError("add: an event needs a label")
                    self._add_locked(event_key(event), event)
                elif "ack" in record:
                    ack = record["ack"]
                    if not (isinstance(ack, list) and len(ack) == 2):
                        raise ValueError("ack: not a [boot_id, sequence] pair")
                    self._pending.pop(event_key({"boot_id": ack[0], "sequence": ack[1]}), None)
                else:
                    raise ValueError("neither add nor ack")
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
                self.skipped_lines += 1
                torn = number == len(lines) and not data.endswith(b"\n")
                if not torn:
                    damaged = True
                log.warning(
                    "spool: %s line %d skipped (%s): %s",
                    self.path,
                    number,
                    "torn last line" if torn else "does not parse",
                    exc,
                )
        if damaged:  # kept for a person to read: compaction is about to drop those lines
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
            try:
                with _private_file(aside) as out:
                    out.write(data)
                log.warning("spool: %s had lines that do not parse; a copy is in %s", self.path, aside)
            except OSError as exc:
                log.warning("spool: could not keep a copy of %s in %s (%s)", self.path, aside, exc)

    def _write_locked(self, record: dict[str, Any]) -> None:
        if self._closed:
            return
        try:
            if self._broken or self._file is None:
                # Rewrite everything from memory (this includes the record just applied).
                self._compact_locked()
                if self._broken:
                    self._broken = False
                    log.warning("spool: %s is written again", self.path)
                return
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._lines += 1
            if self._lines > max(COMPACT_MIN_LINES, COMPACT_FACTOR * len(self._pending)):
                self._compact_locked()
        except OSError as exc:
            self._close_file_locked()
            if not self._broken:
                self._broken = True
                log.error(
                    "spool: cannot write %s (%s); detections are kept in memory only until it works again",
                    self.path,
                    exc,
                )

    def _compact_locked(self) -> None:
        """Replace the journal with the pending entries only (atomic). Raises OSError."""
        self._close_file_locked()
        temp = self.path.with_name(self.path.name + ".tmp")
        text = "".join(
            json.dumps({"add": event}, separators=(",", ":")) + "\n" for event in self._pending.values()
        )
        with _private_file(temp) as out:
            out.write(text.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)
        _fsync_dir(self.directory)
        self._file = self.path.open("a", encoding="utf-8")
        self._lines = len(self._pending)

    def _close_file_locked(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()


def _private_file(path: Path) -> BinaryIO:
    """``path`` created afresh for writing, readable by its owner only (the journal is renamed
    from it, so it keeps that mode whatever the umask)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return open(fd, "wb")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
