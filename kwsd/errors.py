"""Typed errors. Library code raises these; only ``kwsd.cli`` maps them to exit codes."""

from __future__ import annotations

import errno
import os
import stat


class KwsdError(Exception):
    """A problem with the user's input, told in one line that names the thing and what was expected."""


class InputNotFoundError(KwsdError):
    """A named input file does not exist, is a directory, or cannot be opened."""


class AudioFormatError(KwsdError):
    """Audio that is not valid, or in an encoding kwsd does not convert."""


class StreamError(KwsdError):
    """An audio stream that broke off (for example stdin closing mid-sample)."""


class ModelError(KwsdError):
    """A model bundle or .tflite that is unusable or disagrees with its own front end or labels."""


class RuntimeDependencyError(KwsdError):
    """A runtime library that is missing or cannot work in this environment."""


class OutputError(KwsdError):
    """An output file that cannot be written (missing folder, a directory in the way, no space)."""


class SettingError(KwsdError):
    """A flag or setting whose value the command cannot use (names it and what was expected)."""


class EvaluationError(KwsdError):
    """A ground-truth file or a calibration request that cannot be used (names the thing).

    Here rather than in :mod:`kwsd.evaluate` so that the command line can catch it without
    importing the evaluation code (and numpy) at start-up.
    """


class UnreadableFileError(OSError):
    """A file kwsd will not read: not a regular file (``/dev/zero`` or a FIFO never ends) or
    larger than the bound for its kind. An ``OSError`` whose ``strerror`` says which, so the
    callers' ``cannot read (...)`` messages need nothing new."""


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """A regular file's bytes, refused (:class:`UnreadableFileError`) when it is not a regular
    file or holds more than ``limit`` bytes, however its size is reported. Never blocks on a
    FIFO: it is opened non-blocking and refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as f:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise UnreadableFileError(errno.EINVAL, "not a regular file", str(path))
        if found.st_size > limit:
            raise UnreadableFileError(
                errno.EFBIG, f"{found.st_size} bytes, more than the {limit} accepted", str(path)
            )
        data = f.read(found.st_size + 1)
        if len(data) > found.st_size:  # it grew after fstat
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise UnreadableFileError(errno.EFBIG, f"more than the {limit} bytes accepted", str(path))
    return data
