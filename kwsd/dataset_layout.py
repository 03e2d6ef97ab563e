"""The Speech Commands data-set layout: the one place that names, numbers and claims clips.

A data set is ``<data>/<label>/<speaker>_nohash_<n>.wav`` (plus ``_background_noise_/``).
TensorFlow's train.py splits by a hash of the file name up to ``_nohash_``, so everything
before it (the speaker, or a synthetic voice) stays in one partition. ``kwsd record``, the
slicer, the synthesiser and the data-set tools all name clips here, and the writers never
replace a file: a finished clip is given the next free number with an exclusive link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import wave
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from kwsd.errors import OutputError

#: What separates the speaker from the clip number in a file name.
NOHASH: Final = "_nohash_"
BACKGROUND_NOISE_DIR: Final = "_background_noise_"

_AFTER_NOHASH = re.compile(re.escape(NOHASH) + ".*$")


def clip_name(speaker: str, number: int) -> str:
    """``<speaker>_nohash_<number>.wav``."""
    return f"{speaker}{NOHASH}{number}.wav"


def speaker_of(file_name: str) -> str:
    """The part of a file name that train.py's split hashes: up to ``_nohash_`` (the folder is
    ignored; a name without it is its own speaker, extension and all)."""
    return _AFTER_NOHASH.sub("", os.path.basename(file_name))


def next_number(folder: Path, speaker: str) -> int:
    """One more than the highest ``<n>`` of ``<speaker>_nohash_<n>.wav`` in ``folder`` (0 if
    none or no folder). Names are compared without case, so a case-insensitive file system
    (FAT on an SD card) never sees two numbers that differ only there."""
    pattern = re.compile(re.escape(speaker + NOHASH) + r"(\d+)\.wav", re.IGNORECASE)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    except OSError as err:
        raise OutputError(f"{folder}: cannot list the folder ({why(err)})") from None
    numbers = [int(m.group(1)) for name in names if (m := pattern.fullmatch(name))]
    return max(numbers) + 1 if numbers else 0


def claim_name(finished: Path, folder: Path, speaker: str, start: int) -> tuple[Path, int]:
    """Give the finished file ``finished`` (in ``folder``) the first free clip name from number
    ``start`` on; returns the path and the number after it. An existing name is skipped, never
    replaced (another writer may be numbering the same speaker). ``finished`` is left for the
    caller to remove."""
    number = start
    while True:
        path = folder / clip_name(speaker, number)
        number += 1
        try:
            os.link(finished, path)  # fails if the name exists
            return path, number
        except FileExistsError:
            continue
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise OutputError(f"{path}: cannot create it ({why(err)})") from None
        # No hard links here (FAT, some network mounts): claim the name exclusively, then
        # rename the finished data onto the empty file that is ours.
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        except OSError as err:
            raise OutputError(f"{path}: cannot create it ({why(err)})") from None
        try:
            os.replace(finished, path)
        except OSError as err:
            path.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot create it ({why(err)})") from None
        return path, number


def why(err: OSError) -> str:
    """An OSError in the words a person with a full SD card understands."""
    if err.errno == errno.ENOSPC:
        return "no space left on the device"
    if err.errno == errno.EROFS:
        return "read-only file system"
    return err.strerror or str(err)


def save_new(folder: Path, stem: str, samples: npt.NDArray[np.int16], sample_rate_hz: int) -> Path:
    """Write ``samples`` as a 16-bit mono WAV ``<stem>_nohash_<n>.wav`` with the first free n,
    through a temporary file in ``folder``: never replaces a file, never leaves half a one."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".recording-", suffix=".wav.part", dir=folder)
    except OSError as err:
        raise OutputError(f"{folder}: cannot write there ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "wb") as handle, wave.open(handle, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate_hz)
            wav.writeframes(np.asarray(samples, "<i2").tobytes())
        return link_next(Path(tmp), folder, stem)
    except OSError as err:
        raise OutputError(f"{folder}: cannot write there ({err.strerror or err})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def link_next(finished: Path, folder: Path, stem: str) -> Path:
    """``finished`` under the next free ``<stem>_nohash_<n>`` name of ``folder`` (see
    :func:`claim_name`; the caller removes ``finished``)."""
    path, _ = claim_name(finished, folder, stem, next_number(folder, stem))
    return path
