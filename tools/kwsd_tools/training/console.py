"""What the training tools show on the console, and where TensorFlow's own noise goes.

TensorFlow's C++ runtime and the TFLite converter write straight to file descriptors 1 and 2
("All log messages before absl::InitializeLog() ...", "oneDNN custom operations are on",
"fully_quantize: 0, inference_type: 6, ..."), past Python's ``sys.stderr`` and past
``TF_CPP_MIN_LOG_LEVEL``. :func:`native_output_to` points those descriptors at a log file
while a tool runs and gives Python's ``sys.stdout`` / ``sys.stderr`` copies of the original
ones, so the tool's own lines reach the console and TensorFlow's reach the log, where they
are kept for debugging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)


@contextlib.contextmanager
def native_output_to(path: Path) -> Iterator[Path | None]:
    """Within the block, native writes to fds 1 and 2 go to ``path`` (appended) while Python's
    ``sys.stdout`` / ``sys.stderr`` go on to where they went. Yields ``path``, or None (nothing
    changed) when it cannot be opened. Everything is put back on leaving."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as err:
        log.debug("TensorFlow's output stays on the console: %s: %s", path, err.strerror or err)
        yield None
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    # Python streams on the real fds 1 and 2 get copies of them (a stream that is not on them,
    # such as a test's capture, is left alone).
    replaced: list[tuple[str, TextIO, TextIO]] = []
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        if _fileno(stream) == fd:
            copy = os.fdopen(
                os.dup(saved[fd]),
                "w",
                encoding=getattr(stream, "encoding", None) or "utf-8",
                errors=getattr(stream, "errors", None) or "strict",
                buffering=1,
            )
            setattr(sys, name, copy)
            replaced.append((name, stream, copy))
    handlers = _repoint_handlers({id(old): new for _, old, new in replaced})
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    try:
        yield path
    finally:
        for _, _, ours in replaced:
            with contextlib.suppress(ValueError, OSError):
                ours.flush()
        for fd, original in saved.items():
            os.dup2(original, fd)
            os.close(original)
        for handler, old_stream in handlers:
            handler.setStream(old_stream)
        for name, old, ours in replaced:
            setattr(sys, name, old)
            ours.close()


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return None


def _repoint_handlers(new_for: dict[int, TextIO]) -> list[tuple[logging.StreamHandler[TextIO], TextIO]]:
    """Logging handlers writing to a replaced stream write to its copy; returns what to undo."""
    changed: list[tuple[logging.StreamHandler[TextIO], TextIO]] = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and id(handler.stream) in new_for:
            old = handler.setStream(new_for[id(handler.stream)])
            if old is not None:
                changed.append((handler, old))
    return changed
