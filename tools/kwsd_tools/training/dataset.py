"""Speech Commands-style data sets: find the files, split them, check every one, read them once.

Layout (TensorFlow's speech_commands, which :func:`load_dataset` reads unchanged)::

    data_dir/<word>/<name>.wav          one folder level; the folder name lower-cased is the word
    data_dir/_background_noise_/*.wav   long noise recordings (optional), never a label
    data_dir/validation_list.txt        optional (Speech Commands v0.02): paths relative to
    data_dir/testing_list.txt           data_dir, one a line; they decide those files' partitions

Labels are ``["_silence_", "_unknown_", *wanted_words]`` (wanted word k has index k + 2); the
files of every other folder are ``_unknown_``. A user folder literally named ``silence`` is an
ordinary word, not ``_silence_``. Without the two lists, files are split by :func:`which_set`
(train.py's hash of the name before ``_nohash_``). Per partition there are
``ceil(n_wanted * silence_percentage / 100)`` silence items and as many unknown items for
``unknown_percentage``, chosen with a seeded numpy generator from that partition's unknown files,
then the items are shuffled with it: the same seed and files give the same items.

Every file is checked before training, each opened once (:func:`kwsd.audio.open_audio`, the
daemon's reader): the files training uses (wanted words, the chosen unknown files, background
noise) are decoded, converted to mono int16 at ``sample_rate_hz`` and kept in memory (2 bytes a
sample); the unknown files not chosen are checked through their header (that is what decides
whether kwsd's reader can use a WAV) and read only if asked for (:meth:`Dataset.clip`). The
outcome is in :class:`CheckReport`. Decisions:

* **Another sample rate** is resampled with soxr (kwsd's reader), and the file is listed as
  converted; so are stereo files (channels averaged) and 8/24/32-bit or float files. With
  ``resample=False`` a file at another rate is refused instead.
* **A file kwsd's reader cannot use** (not a WAV, empty, header only, compressed, unreadable) or
  refused for its rate stops the load: one :class:`DatasetError` names it (and every other such
  file, all found in the same pass) with the reason. A corrupt file among thousands is most
  often a sign of a broken download or copy, which the user should hear about rather than train
  on a quietly smaller set. ``skip_bad_files=True`` leaves such files out instead and lists
  them, with the reason, in the report.
* **A clip longer than the clip duration** is used, cut to its first ``clip_duration_ms`` (as
  train.py does), and listed in the report with its length. Skipping it would throw away data
  over what is usually a few milliseconds (a 5.01 s recording for a 5 s clip); cutting it
  without a word could train on the wrong part of a long recording. Listed, the user can see
  which and how long. **Shorter clips** are padded with zeros at the end (train.py's rule;
  about a tenth of Speech Commands is shorter than 1 s) and counted in the report.
* **No** ``_background_noise_`` **folder** is allowed: no noise augmentation, silence items are
  digital zeros; the report says so. A folder that exists with no WAV in it, or a noise file
  shorter than one clip, is a :class:`DatasetError` (someone meant to give noise and it is not
  usable).

**A folder of reviewed kwsd captures** (``kwsd review``'s ``reviewed/``: every WAV saved by
``kwsd run`` with a JSON sidecar of the same stem beside it, :mod:`kwsd.capture`) is loaded as
a *capture set*, by other rules. It is recognised by its sidecars: when any ``.wav`` in a word
folder has a ``<stem>.json`` beside it, every one must (a folder where only some do is a
:class:`DatasetError` naming one without: a sidecar lost or a stray file, either way the user
should look). Then:

* every clip is used with its folder's label: a wanted word's folder gives that word, any other
  folder (``_unknown_``, where ``kwsd review`` files false alarms, or another word) gives
  ``_unknown_``. No ``--unknown_percentage`` sampling, no silence items, no wanted-word folder
  required (a set of false alarms alone is fine), ``_background_noise_`` optional;
* each clip is cut to the model window the sidecar says was scored, in the WAV's own time:
  ``end = audio_time_ms - first_sample_audio_time_ms``, the window ``[end - clip_duration_ms,
  end]`` (the word is at the end of the window that fired, not at the start of the capture),
  zero-padded where the capture holds less (it began late);
* every clip is training data (a capture set is the room to learn from; held-out evaluation is
  another source's), unless the folder has ``validation_list.txt`` and ``testing_list.txt``,
  which then split it as they split any folder;
* a sidecar that cannot be read, is not a kwsd capture's (no ``audio_time_ms``,
  ``first_sample_audio_time_ms`` or ``sample_rate_hz``), gives another rate than its WAV's, or
  puts the window outside the recording makes the WAV a file that cannot be used: an error
  naming it, or skipped and listed with ``skip_bad_files``, as any unreadable file.

Hidden files and folders (``.*``, ``__MACOSX``) are ignored, and so are non-WAV files in the
word folders (a capture set's sidecars are read, not ignored); the report counts them. kwsd's
reader's per-file INFO lines ("resampling from ...") are held back while loading (the report
lists those files); its warnings pass through and are kept in the report too.

:func:`download_and_extract` fetches and unpacks an archive given as ``--data_url``.

Importable without TensorFlow.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import posixpath
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from kwsd import __version__
from kwsd.audio import AudioInfo, Encoding, open_audio
from kwsd.dataset_layout import BACKGROUND_NOISE_DIR, speaker_of
from kwsd.errors import KwsdError, UnreadableFileError
from kwsd.frontend import INT16_FULL_SCALE
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

PARTITIONS = ("training", "validation", "testing")
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
#: In data_dir: the URLs :func:`download_and_extract` has extracted there, one a line.
EXTRACTED_MARKER = ".kwsd_extracted"
#: train.py's MAX_NUM_WAVS_PER_CLASS: the hash is taken modulo this + 1.
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1
#: Folders that are never words: macOS archive debris.
_IGNORED_DIRS = frozenset({"__MACOSX"})
#: Samples per read: a whole clip (and most noise files) in one block.
_READ_BLOCK_SAMPLES = 1 << 20
#: How many files a report line or an error message names before "and N more".
_NAMED_FILES = 10
#: Beside a capture's WAV, same stem: its sidecar (kwsd.capture), which makes a capture set.
SIDECAR_SUFFIX = ".json"
#: The sidecar's times a capture set needs (and sample_rate_hz): the decision's, the WAV's first sample's.
_SIDECAR_TIMES = ("audio_time_ms", "first_sample_audio_time_ms")


class DatasetError(KwsdError):
    """A data set that cannot be used: one line naming the file, folder or flag and what was expected."""


# --------------------------------------------------------------------------------------
# The split (Speech Commands' rule, exactly).


def which_set(filename: str, validation_percentage: float, testing_percentage: float) -> str:
    """Partition of ``filename``: "training", "validation" or "testing" (train.py's rule).

    The folder is ignored; everything from ``_nohash_`` on is dropped (a name without it
    is hashed whole, extension included); SHA-1 of the rest, as an integer ``h``, gives
    ``p = (h % 2**27) * (100 / (2**27 - 1))``; validation if ``p < V``, testing if
    ``p < V + T``, else training.

    >>> which_set("pete_nohash_0.wav", 10, 10)
    'training'
    >>> which_set("speakers/spk015_nohash_0.wav", 10, 10)
    'validation'
    >>> which_set("heidi_nohash_0.wav", 10, 10)
    'testing'
    >>> which_set("a5d485dc_nohash_0.wav", 10, 10)
    'training'
    """
    percentage = hash_percentage(filename)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def hash_percentage(filename: str) -> float:
    """The ``p`` of :func:`which_set`, in [0, 100]. A name that is not UTF-8 on disk (Python
    holds its bad bytes as surrogates) is hashed as its bytes on disk."""
    digest = int(hashlib.sha1(speaker_of(filename).encode("utf-8", "surrogateescape")).hexdigest(), 16)
    return (digest % (MAX_NUM_WAVS_PER_CLASS + 1)) * (100.0 / MAX_NUM_WAVS_PER_CLASS)


# --------------------------------------------------------------------------------------
# Settings and items.


@dataclass(frozen=True)
class DatasetSettings:
    """train.py's data flags (named in messages as train.py names them: ``--sample_rate``, ...)."""

    sample_rate_hz: int = 16000
    clip_duration_ms: int = 1000
    wanted_words: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
    silence_percentage: float = 10.0
    unknown_percentage: float = 10.0
    validation_percentage: float = 10.0
    testing_percentage: float = 10.0
    #: False: a file at another sample rate is refused (an error, or listed when skipping) instead.
    resample: bool = True
    #: True: a file that cannot be used is left out and listed in the report instead of an error.
    skip_bad_files: bool = False
    #: True: a clip shorter than the window is padded at its start, so it ends where the window
    #: ends (the embedding front end's rule, kwsd.frontend.fit_to_clip), and a longer one keeps
    #: its end; False: train.py's rule, padded or cut at the end.
    align_end: bool = False

    def __post_init__(self) -> None:
        for flag, value in (
            ("--sample_rate", self.sample_rate_hz),
            ("--clip_duration_ms", self.clip_duration_ms),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DatasetError(f"{flag}: expected a positive whole number, got {value!r}")
        if self.sample_rate_hz * self.clip_duration_ms % 1000:
            raise DatasetError(
                f"--clip_duration_ms: {self.clip_duration_ms} ms is not a whole number of samples at "
                f"--sample_rate {self.sample_rate_hz} Hz"
            )
        if isinstance(self.wanted_words, str) or not isinstance(self.wanted_words, Sequence):
            raise DatasetError(f"--wanted_words: expected a list of words, got {self.wanted_words!r}")
        object.__setattr__(self, "wanted_words", tuple(self.wanted_words))
        _check_words(self.wanted_words)
        percentages: tuple[tuple[str, float], ...] = (
            ("--silence_percentage", self.silence_percentage),
            ("--unknown_percentage", self.unknown_percentage),
            ("--validation_percentage", self.validation_percentage),
            ("--testing_percentage", self.testing_percentage),
        )
        for flag, percentage in percentages:
            if (
                isinstance(percentage, bool)
                or not isinstance(percentage, int | float)
                or not 0 <= percentage <= 100
            ):
                raise DatasetError(f"{flag}: expected a percentage from 0 to 100, got {percentage!r}")
        if self.validation_percentage + self.testing_percentage >= 100:
            raise DatasetError(
                f"--validation_percentage {_number(self.validation_percentage)} + --testing_percentage "
                f"{_number(self.testing_percentage)}: expected less than 100 together "
                f"(the rest is for training)"
            )

    @property
    def clip_samples(self) -> int:
        """Samples in one clip: ``sample_rate_hz * clip_duration_ms / 1000`` (whole by construction)."""
        return self.sample_rate_hz * self.clip_duration_ms // 1000

    def flags(self) -> str:
        """The split flags as train.py spells them, for messages."""
        return (
            f"--validation_percentage {_number(self.validation_percentage)} "
            f"--testing_percentage {_number(self.testing_percentage)}"
        )


def _check_words(words: tuple[str, ...]) -> None:
    if not words:
        raise DatasetError("--wanted_words: expected at least one word, got none")
    seen: set[str] = set()
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise DatasetError(f"--wanted_words: expected non-empty words, got {word!r}")
        if word in (SILENCE_LABEL, UNKNOWN_LABEL, BACKGROUND_NOISE_DIR):
            raise DatasetError(
                f"--wanted_words: {word!r} is not a word (it is added or ignored by the tool; "
                f"a word is the name of a folder in the data folder)"
            )
        if word != word.lower():
            raise DatasetError(
                f"--wanted_words: {word!r} has upper-case letters; folder names are lower-cased into "
                f"labels, so use {word.lower()!r}"
            )
        if "/" in word or "\\" in word or word != word.strip():
            raise DatasetError(f"--wanted_words: {word!r} is not a folder name (no slashes or spaces around)")
        if word in seen:
            raise DatasetError(f"--wanted_words: {word!r} is given twice")
        seen.add(word)


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Item:
    """One example: a clip (``path`` relative to the data folder, posix) or silence (``path=None``)."""

    label: str
    path: str | None


# --------------------------------------------------------------------------------------
# The report.


@dataclass
class CheckReport:
    """What the check of every file found. File names are relative to the data folder (posix)."""

    sample_rate_hz: int
    clip_duration_ms: int
    #: DatasetSettings.align_end: short clips are padded at the start, long ones keep their end.
    align_end: bool = False
    checked: int = 0  # files opened and usable
    #: file -> what it held ("44100 Hz, 2 channels, pcm24")
    converted: dict[str, str] = field(default_factory=dict)
    resampled: int = 0  # of the converted files, those at another rate (soxr, kwsd's reader)
    downmixed: int = 0  # of the converted files, those with several channels (averaged to mono)
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why (only with skip_bad_files)
    cropped: dict[str, float] = field(default_factory=dict)  # file -> its length in ms (> the clip)
    padded: dict[str, float] = field(default_factory=dict)  # file -> its length in ms (< the clip)
    #: Capture sets: file -> ms of the model's window the capture holds (< the clip: it began late).
    capture_padded: dict[str, float] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # not read: hidden, not .wav, nested folders
    notes: list[str] = field(default_factory=list)  # facts about the set (split, noise, empty pools)
    reader_warnings: list[str] = field(default_factory=list)  # kwsd's reader's warnings, in full

    def lines(self, max_files: int | None = _NAMED_FILES) -> list[str]:
        """Human lines, most important first; at most ``max_files`` file names per line (None: all)."""
        out = [f"checked {self.checked} file(s) with kwsd's reader"]
        out.extend(self.notes)
        if self.skipped:
            out.append(
                f"{len(self.skipped)} file(s) skipped (skip_bad_files): "
                + _listed([f"{rel}: {why}" for rel, why in self.skipped.items()], max_files, "; ")
            )
        if self.converted:
            out.append(converted_text(self.converted, self.sample_rate_hz))
            how = [
                f"{count} {what}"
                for count, what in (
                    (self.resampled, f"resampled to {self.sample_rate_hz} Hz with soxr"),
                    (self.downmixed, "mixed down to mono (channels averaged)"),
                )
                if count
            ]
            if how:
                out.append("of these, " + ", ".join(how))
        if self.cropped:
            out.append(
                f"{len(self.cropped)} clip(s) longer than {self.clip_duration_ms} ms: only their "
                + (
                    f"last {self.clip_duration_ms} ms are used (the embedding front end's rule): "
                    if self.align_end
                    else f"first {self.clip_duration_ms} ms are used (train.py's rule; cut them or raise "
                    f"--clip_duration_ms): "
                )
                + _listed(
                    [
                        f"{rel} ({ms:.0f} ms)"
                        for rel, ms in sorted(self.cropped.items(), key=lambda kv: (-kv[1], kv[0]))
                    ],
                    max_files,
                )
            )
        if self.padded:
            shortest = min(self.padded.items(), key=lambda kv: (kv[1], kv[0]))
            out.append(
                f"{len(self.padded)} clip(s) shorter than {self.clip_duration_ms} ms are padded with "
                + (
                    "zeros at the start, to end where the window ends (the embedding front end's rule)"
                    if self.align_end
                    else "zeros at the end (train.py's rule)"
                )
                + f"; the shortest: {shortest[0]} ({shortest[1]:.0f} ms)"
            )
        if self.capture_padded:
            least = min(self.capture_padded.items(), key=lambda kv: (kv[1], kv[0]))
            out.append(
                f"{len(self.capture_padded)} capture(s) hold less than the {self.clip_duration_ms} ms "
                f"the model heard (the capture began late): the rest of the window is zeros; the least: "
                f"{least[0]} ({least[1]:.0f} ms)"
            )
        if self.reader_warnings:
            out.append(
                f"{len(self.reader_warnings)} warning(s) from kwsd's reader: "
                + _listed(self.reader_warnings, max_files, "; ")
            )
        if self.ignored:
            out.append(
                f"{len(self.ignored)} entr(y/ies) ignored (hidden, not .wav, or below a word folder): "
                + _listed(self.ignored, max_files)
            )
        return out

    def text(self, max_files: int | None = _NAMED_FILES) -> str:
        """:meth:`lines`, one a line."""
        return "\n".join(self.lines(max_files))


def _listed(texts: Sequence[str], max_files: int | None, separator: str = ", ") -> str:
    """``texts`` joined, at most ``max_files`` of them (None: all), then "and N more"."""
    shown = texts if max_files is None else texts[:max_files]
    out = separator.join(shown)
    if len(texts) > len(shown):
        out += f"{separator}and {len(texts) - len(shown)} more"
    return out


def converted_text(converted: dict[str, str], sample_rate_hz: int) -> str:
    """One line for the files that were not 16-bit mono at the model's rate: how many of each
    source format, with a few of their names."""
    by_format: dict[str, list[str]] = {}
    for rel, held in sorted(converted.items()):
        by_format.setdefault(held, []).append(rel)
    parts = [
        f"{len(files)} x {held} (e.g. {', '.join(files[:3])})" for held, files in sorted(by_format.items())
    ]
    return (
        f"{len(converted)} file(s) were converted to {sample_rate_hz} Hz mono int16 by kwsd's "
        f"reader: {'; '.join(parts)}"
    )


# --------------------------------------------------------------------------------------
# Reading one file.


def read_clip(path: Path, sample_rate_hz: int) -> tuple[Int16Array, str | None]:
    """Mono int16 samples at ``sample_rate_hz``, read by kwsd's own WAV reader.

    Second value: what the file held when it had to be converted (``"44100 Hz, 2 channels,
    pcm24"``), else None. Every PCM and float encoding is converted (resampled with soxr,
    channels averaged); what cannot be read raises :class:`kwsd.errors.InputNotFoundError` or
    :class:`~kwsd.errors.AudioFormatError` naming the file.
    """
    samples, info = read_samples(path, sample_rate_hz)
    return samples, None if is_native(info, sample_rate_hz) else info.describe()


def read_samples(path: Path, sample_rate_hz: int) -> tuple[Int16Array, AudioInfo]:
    """Mono int16 samples at ``sample_rate_hz`` and what the file's header said, the file opened
    once by kwsd's reader (converted as in :func:`read_clip`, which raises the same errors).
    A data set's files are regular files: anything else (a FIFO named ``*.wav`` would block
    the read forever) raises :class:`~kwsd.errors.UnreadableFileError`."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = stat.S_IFREG  # missing or unreachable: the reader says which
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UnreadableFileError(errno.EINVAL, "not a regular file", str(path))
    with open_audio(path, sample_rate_hz) as reader:
        info = reader.info
        samples = _samples_of(reader.blocks(_READ_BLOCK_SAMPLES))
    return samples, info


def _samples_of(blocks: Iterator[Int16Array]) -> Int16Array:
    parts = list(blocks)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([np.zeros(0, np.int16), *parts])


def is_native(info: AudioInfo, sample_rate_hz: int) -> bool:
    """True for 16-bit PCM mono at ``sample_rate_hz``: what kwsd's reader passes through bit-exact."""
    return (info.sample_rate_hz, info.channels, info.encoding) == (sample_rate_hz, 1, Encoding.PCM16)


def _fit(samples: Int16Array, clip_samples: int, *, align_end: bool = False) -> Int16Array:
    """Pad with zeros or cut at the end, or with ``align_end`` at the start (kwsd.frontend.fit_to_clip's
    rules, without a FrontendSpec)."""
    if len(samples) > clip_samples:
        # A copy, not a view that would keep the whole recording alive.
        return (samples[len(samples) - clip_samples :] if align_end else samples[:clip_samples]).copy()
    if len(samples) == clip_samples:
        return samples
    pad = np.zeros(clip_samples - len(samples), np.int16)
    return np.concatenate((pad, samples) if align_end else (samples, pad))


class _FileChecker:
    """Opens files of one data folder, each once, and records what it found."""

    def __init__(
        self, data_dir: Path, settings: DatasetSettings, report: CheckReport, *, count: bool = True
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.report = report
        self.count = count  # False: files checked before (a later read), not counted again
        self.problems: dict[str, str] = {}  # file -> why it cannot be used

    @property
    def doomed(self) -> bool:
        """A file has been refused and the load will fail: check the rest, decode nothing more."""
        return bool(self.problems) and not self.settings.skip_bad_files

    def check(self, rel: str) -> bool:
        """Open ``rel`` and check its header; False when it cannot be used (see :attr:`problems`)."""
        return self._open(rel, decode=False) is not None

    def decode(self, rel: str, *, fit: bool = True) -> Int16Array | None:
        """Check ``rel`` and read it: mono int16 at the target rate, fitted to the clip when
        ``fit`` (a crop or pad is recorded). None when it cannot be used (see :attr:`problems`).
        Once the load is doomed, a usable file is only checked and an empty array returned."""
        return self._open(rel, decode=True, fit=fit)

    def decode_capture(self, rel: str, window: CaptureWindow) -> Int16Array | None:
        """Check and read the capture ``rel`` and cut it to the model's ``window`` (from its
        sidecar): ``clip_samples`` at the target rate, zero-padded where the capture holds less
        (recorded). None when it cannot be used (see :attr:`problems`); an empty array once
        the load is doomed."""
        return self._open(rel, decode=True, capture=window)

    def _open(
        self, rel: str, *, decode: bool, fit: bool = True, capture: CaptureWindow | None = None
    ) -> Int16Array | None:
        settings = self.settings
        rate = settings.sample_rate_hz
        path = self.data_dir / rel
        samples = np.zeros(0, np.int16)
        try:
            with open_audio(path, rate) as reader:
                info = reader.info
                if info.sample_rate_hz != rate and not settings.resample:
                    self.problems[rel] = (
                        f"{info.sample_rate_hz} Hz, expected {rate} Hz (--sample_rate; resampling is off)"
                    )
                    return None
                if capture is not None and capture.sample_rate_hz != info.sample_rate_hz:
                    self.problems[rel] = (
                        f"its capture sidecar {capture.sidecar_name} says sample_rate_hz "
                        f"{capture.sample_rate_hz}, the WAV is {info.sample_rate_hz} Hz (not the "
                        f"recording the sidecar describes)"
                    )
                    return None
                if decode and not self.doomed:
                    samples = _samples_of(reader.blocks(_READ_BLOCK_SAMPLES))
        except (KwsdError, OSError) as err:
            self.problems[rel] = read_error_reason(err, path)
            return None
        self.report.checked += self.count
        if not is_native(info, rate) and rel not in self.report.converted:
            self.report.converted[rel] = info.describe()
            self.report.resampled += info.sample_rate_hz != rate
            self.report.downmixed += info.channels > 1
        if capture is not None:
            return samples if self.doomed else self._cut(rel, samples, info, capture)
        if not samples.size or not fit:
            return samples
        clip_ms = settings.clip_duration_ms
        frames = info.frames if info.frames is not None else len(samples)
        # Compared at the source's rate: a resampler's rounding by one sample is not a crop.
        if frames * 1000 > clip_ms * info.sample_rate_hz:
            self.report.cropped[rel] = frames * 1000 / info.sample_rate_hz
        elif frames * 1000 < clip_ms * info.sample_rate_hz:
            self.report.padded[rel] = frames * 1000 / info.sample_rate_hz
        return _fit(samples, settings.clip_samples, align_end=settings.align_end)

    def _cut(
        self, rel: str, samples: Int16Array, info: AudioInfo, window: CaptureWindow
    ) -> Int16Array | None:
        settings = self.settings
        end_sample = window.end_sample(settings.sample_rate_hz)
        clip = cut_window(samples, end_sample, settings.clip_samples)
        held = min(end_sample, len(samples)) - max(end_sample - settings.clip_samples, 0)
        if held <= 0:
            frames = info.frames if info.frames is not None else len(samples)
            self.problems[rel] = (
                f"its capture sidecar {window.sidecar_name} puts the model's window at "
                f"{window.end_ms - settings.clip_duration_ms:g}..{window.end_ms:g} ms, outside the "
                f"recording (0..{frames * 1000 / info.sample_rate_hz:.0f} ms)"
            )
            return None
        if held < settings.clip_samples:
            self.report.capture_padded[rel] = held * 1000 / settings.sample_rate_hz
        return clip


def read_error_reason(err: KwsdError | OSError, path: Path) -> str:
    """Why ``path`` could not be read, without the path: kwsd's reader's message without its
    leading ``<path>: ``, or the OS's for a read error past the header."""
    if isinstance(err, OSError):
        return f"cannot read it ({err.strerror or err})"
    message = str(err)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _reader_log_held(report: CheckReport) -> AbstractContextManager[None]:
    """Hold back kwsd.audio's per-file INFO lines; keep its warnings in the report as well."""
    return hold_reader_log(report.reader_warnings)


@contextmanager
def hold_reader_log(warnings: list[str], *, pass_warnings: bool = True) -> Iterator[None]:
    """While inside: kwsd.audio's INFO lines are dropped and its warnings appended to
    ``warnings`` (and still logged unless ``pass_warnings`` is False)."""
    audio_log = logging.getLogger("kwsd.audio")

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())
            return pass_warnings
        return False

    audio_log.addFilter(keep)
    try:
        yield
    finally:
        audio_log.removeFilter(keep)


# --------------------------------------------------------------------------------------
# Captures (kwsd run's, filed by kwsd review).


def capture_sidecar(wav: Path) -> Path:
    """The sidecar beside a capture's WAV: the same stem, ``.json``."""
    return wav.with_suffix(SIDECAR_SUFFIX)


@dataclass(frozen=True)
class CaptureWindow:
    """Where the model's window lies in one capture, from its sidecar.

    ``end_ms``: the end of the window that fired (a near-miss: that peaked), in the WAV's own
    time: ``audio_time_ms - first_sample_audio_time_ms``. ``sample_rate_hz``: the rate the
    sidecar says the WAV was written at (it must be the WAV's). ``reviewed``: the sidecar has
    the ``review`` that ``kwsd review`` adds when it files a capture.
    """

    end_ms: float
    sample_rate_hz: int
    sidecar_name: str
    reviewed: bool = True

    def end_sample(self, sample_rate_hz: int) -> int:
        """The window's end at ``sample_rate_hz``, in samples from the WAV's first (rounded)."""
        return round(self.end_ms * sample_rate_hz / 1000)


class _BadSidecar(Exception):
    """Why a sidecar cannot be used (the reason only: the caller names the WAV)."""


def _read_capture_window(wav: Path) -> CaptureWindow:
    """The model window of the capture ``wav``, from its sidecar; :class:`_BadSidecar` saying
    why when the sidecar is missing, unreadable or not a kwsd capture's."""
    side = capture_sidecar(wav)
    name = side.name
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _BadSidecar(f"no capture sidecar {name} beside it") from None
    except OSError as err:
        raise _BadSidecar(f"its capture sidecar {name} cannot be read ({err.strerror or err})") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise _BadSidecar(f"its capture sidecar {name} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise _BadSidecar(f"its capture sidecar {name} is not a JSON object")
    times: list[float] = []
    for key in _SIDECAR_TIMES:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            got = "has none" if value is None else f"has {value!r}"
            raise _BadSidecar(
                f"its capture sidecar {name} {got} for {key} (expected a number of ms, as kwsd run writes it)"
            )
        times.append(float(value))
    rate = data.get("sample_rate_hz")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        got = "has none" if rate is None else f"has {rate!r}"
        raise _BadSidecar(
            f"its capture sidecar {name} {got} for sample_rate_hz (expected a positive whole number)"
        )
    decision_ms, first_ms = times
    return CaptureWindow(decision_ms - first_ms, rate, name, reviewed=isinstance(data.get("review"), dict))


def cut_window(samples: Int16Array, end_sample: int, clip_samples: int) -> Int16Array:
    """``samples[end_sample - clip_samples : end_sample]``, exactly ``clip_samples`` long: where
    the window reaches before the first sample or past the last, zeros."""
    start = end_sample - clip_samples
    out = np.zeros(clip_samples, np.int16)
    low, high = max(start, 0), min(end_sample, len(samples))
    if high > low:
        out[low - start : high - start] = samples[low:high]
    return out


def _capture_set(data_dir: Path, scan: DataScan) -> bool:
    """True when the word folders' WAVs carry capture sidecars (see the module docstring).
    Decided from the listing (the sidecars are among the scan's non-WAV files): no file opened."""
    listed = set(scan.ignored)
    without = [rel for _, rel in scan.files if capture_sidecar(Path(rel)).as_posix() not in listed]
    if len(without) == len(scan.files):
        return False
    if without:
        having = len(scan.files) - len(without)
        raise DatasetError(
            f"{data_dir / without[0]}: no capture sidecar {capture_sidecar(Path(without[0])).name} beside "
            f"it, while {having} of the {len(scan.files)} .wav files in {data_dir} have one "
            f"({len(without)} have none): in a folder of kwsd captures every WAV needs its sidecar "
            f"(kwsd review keeps them), in a folder of ordinary clips none has one; restore it or move "
            f"the WAV out"
        )
    return True


def _load_captures(
    data_dir: Path, settings: DatasetSettings, scan: DataScan, report: CheckReport, started: float
) -> Dataset:
    """A capture set (see the module docstring): every clip, cut to its fired window."""
    wanted = settings.wanted_words
    labels = [SILENCE_LABEL, UNKNOWN_LABEL, *wanted]
    sidecars = {capture_sidecar(Path(rel)).as_posix() for _, rel in scan.files}
    report.ignored[:] = [entry for entry in report.ignored if entry not in sidecars]
    rels = {rel for _, rel in scan.files}
    by_lists = any((data_dir / name).is_file() for name in (VALIDATION_LIST, TESTING_LIST))
    if by_lists:
        partition_of, _ = _partition_rule(data_dir, settings, rels, report)
    else:
        partition_of = dict.fromkeys(rels, "training")
    checker = _FileChecker(data_dir, settings, report)
    clips: dict[str, Int16Array] = {}
    ends: dict[str, int] = {}
    items: dict[str, list[Item]] = {p: [] for p in PARTITIONS}
    words: dict[str, dict[str, list[str]]] = {p: {} for p in PARTITIONS}
    unreviewed: list[str] = []
    with _reader_log_held(report):
        noise = _load_noise(data_dir, settings, scan.noise, checker, report)
        for folder_label, rel in scan.files:
            _progress(report.checked + len(checker.problems), len(scan.files), started)
            try:
                window = _read_capture_window(data_dir / rel)
            except _BadSidecar as err:
                checker.problems[rel] = str(err)
                continue
            samples = checker.decode_capture(rel, window)
            if samples is None:
                continue
            clips[rel] = samples
            ends[rel] = window.end_sample(settings.sample_rate_hz)
            partition = partition_of[rel]
            label = folder_label if folder_label in wanted else UNKNOWN_LABEL
            items[partition].append(Item(label, rel))
            words[partition].setdefault(folder_label, []).append(rel)
            if not window.reviewed:
                unreviewed.append(rel)
    _raise_problems(data_dir, checker, report)
    report.notes.insert(0, _captures_note(settings, labels, items, words, by_lists=by_lists))
    if unreviewed:
        report.notes.insert(
            1,
            f"{len(unreviewed)} capture(s) have no review in their sidecar (not filed by kwsd review): "
            f"their folder is taken as their label, e.g. {unreviewed[0]}",
        )
    if not noise and scan.noise is None:
        report.notes.append(
            f"no background noise ({data_dir / BACKGROUND_NOISE_DIR} does not exist): its clips get no "
            f"background mix (they are room audio already)"
        )
    dataset = Dataset(
        data_dir, settings, labels, items, noise, report, words, clips, capture_ends=ends, capture_set=True
    )
    log.info(
        "%s: reviewed kwsd captures, %d files checked, %d clips in memory (%.0f MB) in %.1f s",
        data_dir,
        report.checked,
        len(clips),
        dataset.memory_bytes / 1e6,
        time.monotonic() - started,
    )
    return dataset


def _captures_note(
    settings: DatasetSettings,
    labels: list[str],
    items: dict[str, list[Item]],
    words: dict[str, dict[str, list[str]]],
    *,
    by_lists: bool,
) -> str:
    """``reviewed kwsd captures: 37 clips (_unknown_ 30, yes 7), each cut to ...; all training``."""
    every = [item for p in PARTITIONS for item in items[p]]
    counts = [(label, sum(1 for it in every if it.label == label)) for label in labels]
    shown = ", ".join(f"{label} {n}" for label, n in counts if n)
    note = (
        f"reviewed kwsd captures: {len(every)} clip(s)"
        + (f" ({shown})" if shown else "")
        + f", each cut to the {settings.clip_duration_ms} ms the model heard when it fired (a near-miss: "
        f"at its peak)"
    )
    if by_lists:
        note += "; " + ", ".join(f"{p} {len(items[p])}" for p in PARTITIONS) + " (by the list files)"
    else:
        note += "; all training (held-out figures come from the other sources)"
    folders: dict[str, int] = {}
    for partition in PARTITIONS:
        for folder, rels in words[partition].items():
            folders[folder] = folders.get(folder, 0) + len(rels)
    wanted = settings.wanted_words
    others = [f"{folder}/ {n}" for folder, n in sorted(folders.items()) if folder not in wanted]
    if any(not other.startswith(f"{UNKNOWN_LABEL}/ ") for other in others):
        note += f"; {UNKNOWN_LABEL} from the folders " + ", ".join(others)
    return note


# --------------------------------------------------------------------------------------
# The data set.


@dataclass
class Dataset:
    """A checked, split data set with its clips in memory.

    ``items``: partition -> wanted, silence and chosen unknown items, shuffled by the seed
    (a capture set: every usable clip, in folder and name order, no silence).
    ``words``: partition -> word folder (lower-cased) -> every usable file of it there, unknown
    words included (for building streams). ``noise``: background file name -> float64 samples in
    [-1, 1) at ``sample_rate_hz``, each at least one clip long. ``capture_ends``: a capture
    set's usable files -> the end of the model's window in the WAV, in samples at ``sample_rate_hz``
    (its clip is the ``clip_samples`` before it); empty for any other set.
    """

    data_dir: Path
    settings: DatasetSettings
    labels: list[str]
    items: dict[str, list[Item]]
    noise: dict[str, FloatArray]
    report: CheckReport
    words: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _clips: dict[str, Int16Array] = field(default_factory=dict, repr=False)
    capture_ends: dict[str, int] = field(default_factory=dict)
    #: A folder of reviewed kwsd captures, loaded by their rules (see the module docstring).
    capture_set: bool = False

    def label_index(self, label: str) -> int:
        """Index of ``label`` in :attr:`labels` (ValueError for a label that is not there)."""
        return self.labels.index(label)

    @property
    def clip_samples(self) -> int:
        return self.settings.clip_samples

    def clip(self, rel: str) -> FloatArray:
        """The clip ``rel`` (relative to data_dir) as float64 in [-1, 1), exactly ``clip_samples``
        long: padded with zeros or cut at the end. A new array each call (the int16 samples are
        cached; a file not read at load, an unchosen unknown one, is read now and cached; a
        capture set's clips, cut to their windows, are all read at load)."""
        samples = self._clips.get(rel)
        if samples is None:
            checker = _FileChecker(self.data_dir, self.settings, self.report, count=False)
            with _reader_log_held(self.report):
                read = checker.decode(rel)
            if read is None:
                raise DatasetError(f"{self.data_dir / rel}: {checker.problems[rel]}")
            samples = self._clips[rel] = read
        return samples / INT16_FULL_SCALE

    def counts(self) -> dict[str, dict[str, int]]:
        """Partition -> label -> items, in label order."""
        return {
            p: {label: sum(1 for it in self.items[p] if it.label == label) for label in self.labels}
            for p in PARTITIONS
        }

    @property
    def memory_bytes(self) -> int:
        """Bytes the cached clips and the noise take."""
        return sum(a.nbytes for a in self._clips.values()) + sum(a.nbytes for a in self.noise.values())


@dataclass
class DataScan:
    """What is in the data folder, before any file is opened (all lists sorted)."""

    files: list[tuple[str, str]]  # (label, rel) for every .wav in a word folder, in (folder, name) order
    folders: dict[str, int]  # folder name -> its .wav count
    noise: list[str] | None  # file names in _background_noise_, None when there is no such folder
    ignored: list[str]


def scan_data_dir(data_dir: Path | str) -> DataScan:
    """The word folders, .wav files, noise files and ignored entries of ``data_dir``, found as
    :func:`load_dataset` finds them (nothing opened; :class:`DatasetError` if it cannot be listed)."""
    return _scan(Path(data_dir))


def split_files(
    data_dir: Path | str, settings: DatasetSettings, rels: Sequence[str]
) -> tuple[dict[str, str], str]:
    """file -> partition for ``rels`` (relative to ``data_dir``, posix), as :func:`load_dataset`
    splits them: by validation_list.txt and testing_list.txt when there, else by :func:`which_set`.
    Second value: one line saying which rule decided. :class:`DatasetError` when only one list is
    there or a list cannot be read."""
    report = CheckReport(settings.sample_rate_hz, settings.clip_duration_ms)
    split, _ = _partition_rule(Path(data_dir), settings, set(rels), report)
    return split, report.notes[-1]


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_DIRS


def _scan(data_dir: Path) -> DataScan:
    files: list[tuple[str, str]] = []
    folders: dict[str, int] = {}
    ignored: list[str] = []
    noise: list[str] | None = None
    try:
        entries = sorted(os.scandir(data_dir), key=lambda e: e.name)
    except OSError as err:
        raise DatasetError(f"{data_dir}: cannot list the data folder ({err.strerror or err})") from None
    for entry in entries:
        if not entry.is_dir():
            continue
        if _is_hidden(entry.name):
            ignored.append(entry.name + "/")
            continue
        wavs: list[str] = []
        try:
            children = sorted(os.scandir(entry.path), key=lambda e: e.name)
        except OSError as err:
            raise DatasetError(f"{entry.path}: cannot list this folder ({err.strerror or err})") from None
        for child in children:
            rel = f"{entry.name}/{child.name}"
            if _is_hidden(child.name) or not child.name.lower().endswith(".wav"):
                ignored.append(rel + ("/" if child.is_dir() else ""))
            elif child.is_dir():
                ignored.append(rel + "/")
            else:
                wavs.append(child.name)
        if entry.name == BACKGROUND_NOISE_DIR:
            noise = wavs
            continue
        folders[entry.name] = len(wavs)
        label = entry.name.lower()
        files.extend((label, f"{entry.name}/{name}") for name in wavs)
    return DataScan(files, folders, noise, ignored)


def _layout_hint(data_dir: Path) -> str:
    """Where WAVs are, when none are at data_dir/<word>/*.wav (searched only on that error)."""
    marker = data_dir / EXTRACTED_MARKER
    if marker.is_file():
        return (
            f"; {marker.name} says an archive was extracted here before "
            f"({', '.join(marker.read_text(encoding='utf-8').split())}): delete that file to extract it again"
        )
    top = sorted(p.name for p in data_dir.glob("*.wav"))
    if top:
        return (
            f"; {len(top)} .wav file(s) lie directly in it (e.g. {top[0]}): put each word's files "
            f"in its own folder"
        )
    for path in sorted(data_dir.glob("*/*/**/*.wav")):
        rel = path.relative_to(data_dir)
        if not any(_is_hidden(part) for part in rel.parts):
            return (
                f"; found .wav files deeper, e.g. {rel.as_posix()}: point --data_dir at "
                f"{data_dir / rel.parent.parent}"
            )
    return ""


def _read_list(path: Path, data_dir: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read the list ({err})") from None
    entries = []
    for line in text.splitlines():
        entry = line.strip().replace("\\", "/")
        while entry.startswith("./"):
            entry = entry[2:]
        if entry:
            entries.append(entry)
    return entries


def _partition_rule(
    data_dir: Path, settings: DatasetSettings, rels: set[str], report: CheckReport
) -> tuple[dict[str, str], bool]:
    """file -> partition: from validation_list.txt / testing_list.txt when there (second value
    True), else the hash."""
    validation_list, testing_list = data_dir / VALIDATION_LIST, data_dir / TESTING_LIST
    present = [p for p in (validation_list, testing_list) if p.is_file()]
    if not present:
        report.notes.append(f"split by the hash of each file name before _nohash_ ({settings.flags()})")
        split = {
            rel: which_set(rel, settings.validation_percentage, settings.testing_percentage) for rel in rels
        }
        return split, False
    if len(present) == 1:
        missing = testing_list if present[0] == validation_list else validation_list
        raise DatasetError(
            f"{missing}: missing while {present[0].name} is there (expected both lists, or neither "
            f"to split by the hash of the file names)"
        )
    partition = dict.fromkeys(rels, "training")
    listed = {"validation": 0, "testing": 0}
    absent = 0
    for name, path in (("testing", testing_list), ("validation", validation_list)):  # validation wins
        for entry in _read_list(path, data_dir):
            if entry in partition:
                partition[entry] = name
            else:
                absent += 1
    for name in partition.values():
        if name in listed:
            listed[name] += 1
    note = (
        f"split by {VALIDATION_LIST} ({listed['validation']} files) and {TESTING_LIST} "
        f"({listed['testing']} files); every other file is training (the --validation_percentage and "
        f"--testing_percentage hash split is not used)"
    )
    if absent:
        note += f"; {absent} listed entr(y/ies) name no .wav file here"
    report.notes.append(note)
    return partition, True


def load_dataset(
    data_dir: Path | str, settings: DatasetSettings, *, seed: int | np.random.Generator
) -> Dataset:
    """Find, split and check the data set in ``data_dir``; read what training uses.

    ``seed``: an int seeds a fresh ``numpy.random.Generator``; a Generator is used as it is
    (and advanced: one shuffle of the unknown files and one permutation of the items per
    partition, in PARTITIONS order; a capture set uses none of it). Raises
    :class:`DatasetError` (see the module docstring).
    """
    started = time.monotonic()
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DatasetError(f"{data_dir}: no such data folder (--data_dir; expected {data_dir}/<word>/*.wav)")
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a folder (--data_dir; expected {data_dir}/<word>/*.wav)")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    wanted = list(settings.wanted_words)
    labels = [SILENCE_LABEL, UNKNOWN_LABEL, *wanted]
    report = CheckReport(settings.sample_rate_hz, settings.clip_duration_ms, align_end=settings.align_end)

    scan = _scan(data_dir)
    report.ignored.extend(scan.ignored)
    if not scan.files:
        raise DatasetError(
            f"{data_dir}: no .wav files found (expected one folder per word: {data_dir}/<word>/*.wav"
            f"{_layout_hint(data_dir)})"
        )
    if _capture_set(data_dir, scan):
        return _load_captures(data_dir, settings, scan, report, started)
    _check_wanted_folders(data_dir, wanted, scan)
    for folder in scan.folders:
        if folder.lower() in (SILENCE_LABEL, UNKNOWN_LABEL):
            report.notes.append(
                f"folder {folder}/ is not the {folder.lower()} label (silence items are made from "
                f"background noise); its files count as {UNKNOWN_LABEL}"
            )
    partition_of, by_lists = _partition_rule(data_dir, settings, {rel for _, rel in scan.files}, report)

    checker = _FileChecker(data_dir, settings, report)
    clips: dict[str, Int16Array] = {}
    with _reader_log_held(report):
        noise = _load_noise(data_dir, settings, scan.noise, checker, report)
        wanted_files: dict[str, list[Item]] = {p: [] for p in PARTITIONS}
        unknown_files: dict[str, list[Item]] = {p: [] for p in PARTITIONS}
        for label, rel in scan.files:
            partition = partition_of[rel]
            if label in wanted:
                samples = checker.decode(rel)
                if samples is not None:
                    clips[rel] = samples
                    wanted_files[partition].append(Item(label, rel))
            else:
                unknown_files[partition].append(Item(UNKNOWN_LABEL, rel))
            _progress(report.checked + len(checker.problems), len(scan.files), started)
        items: dict[str, list[Item]] = {}
        usable_unknown: set[str] = set()
        for partition in PARTITIONS:
            if not wanted_files[partition] and not checker.doomed:
                raise _empty_partition(data_dir, settings, partition, by_lists=by_lists)
            wanted_count = len(wanted_files[partition])
            silence_count = math.ceil(wanted_count * settings.silence_percentage / 100)
            unknown_count = math.ceil(wanted_count * settings.unknown_percentage / 100)
            pool = list(unknown_files[partition])
            rng.shuffle(pool)
            chosen: list[Item] = []
            for item in pool:  # the first unknown_count usable files of the shuffled pool, read
                assert item.path is not None
                if len(chosen) < unknown_count:
                    samples = checker.decode(item.path)
                    if samples is not None:
                        clips[item.path] = samples
                        chosen.append(item)
                        usable_unknown.add(item.path)
                elif checker.check(item.path):  # the rest: checked through the header
                    usable_unknown.add(item.path)
                _progress(report.checked + len(checker.problems), len(scan.files), started)
            if unknown_count and len(chosen) < unknown_count:
                report.notes.append(
                    f"{partition}: {len(chosen)} {UNKNOWN_LABEL} item(s) instead of {unknown_count} "
                    f"(--unknown_percentage {_number(settings.unknown_percentage)}): "
                    + (
                        f"only {len(chosen)} usable file(s) of other words in this partition"
                        if any(label not in wanted for label, _ in scan.files)
                        else "no folder other than the wanted words"
                    )
                )
            selected = wanted_files[partition] + [Item(SILENCE_LABEL, None)] * silence_count + chosen
            order = rng.permutation(len(selected))
            items[partition] = [selected[i] for i in order]
    _raise_problems(data_dir, checker, report)

    words: dict[str, dict[str, list[str]]] = {p: {} for p in PARTITIONS}
    for label, rel in scan.files:
        if rel in clips or rel in usable_unknown:
            words[partition_of[rel]].setdefault(label, []).append(rel)
    if not noise:
        report.notes.append(
            f"no background noise ({data_dir / BACKGROUND_NOISE_DIR} "
            f"{'has no usable file' if scan.noise else 'does not exist'}): no noise augmentation, "
            f"silence items are digital zeros"
        )
    dataset = Dataset(data_dir, settings, labels, items, noise, report, words, clips)
    log.info(
        "%s: %d files checked, %d clips and %d noise file(s) in memory (%.0f MB) in %.1f s",
        data_dir,
        report.checked,
        len(clips),
        len(noise),
        dataset.memory_bytes / 1e6,
        time.monotonic() - started,
    )
    return dataset


_PROGRESS_EVERY = 10000


def _progress(done: int, total: int, started: float) -> None:
    if done and done % _PROGRESS_EVERY == 0:
        log.info("checked %d of about %d files (%.0f s)", done, total, time.monotonic() - started)


def _check_wanted_folders(data_dir: Path, wanted: list[str], scan: DataScan) -> None:
    have: dict[str, int] = {}
    for folder, count in scan.folders.items():
        have[folder.lower()] = have.get(folder.lower(), 0) + count
    missing = [w for w in wanted if w not in have]
    if missing:
        folders = ", ".join(sorted(scan.folders)) or "none"
        raise DatasetError(
            f"--wanted_words: no folder for {', '.join(repr(w) for w in missing)} in {data_dir} "
            f"(its word folders: {folders})"
        )
    empty = [w for w in wanted if have[w] == 0]
    if empty:
        raise DatasetError(
            f"--wanted_words: the folder for {', '.join(repr(w) for w in empty)} in {data_dir} has no "
            f".wav files (expected {data_dir}/{empty[0]}/*.wav)"
        )


def _empty_partition(
    data_dir: Path, settings: DatasetSettings, partition: str, *, by_lists: bool
) -> DatasetError:
    if by_lists:
        lists = {"validation": VALIDATION_LIST, "testing": TESTING_LIST}
        why = f"{lists[partition]} lists none of them" if partition in lists else "the lists name every one"
    else:
        why = (
            "the split keeps every file of a speaker (the name before _nohash_) in one partition, "
            f"and too few speakers or files fall in this one at {settings.flags()}: add files from "
            "more speakers or raise the percentage"
        )
    return DatasetError(f"{data_dir}: the {partition} partition has no clips of the wanted words ({why})")


def _raise_problems(data_dir: Path, checker: _FileChecker, report: CheckReport) -> None:
    problems = checker.problems
    if not problems:
        return
    if checker.settings.skip_bad_files:
        report.skipped.update(sorted(problems.items()))
        log.warning("%d file(s) skipped: %s", len(problems), _listed(_colons(problems), 3, "; "))
        return
    advice = "fix or remove it, or leave bad files out with skip_bad_files"
    if len(problems) == 1:
        ((rel, why),) = problems.items()
        raise DatasetError(f"{data_dir / rel}: {why} ({advice})")
    raise DatasetError(
        f"{data_dir}: {len(problems)} files cannot be used: "
        f"{_listed(_colons(problems), _NAMED_FILES, '; ')} ({advice.replace('it', 'them', 1)})"
    )


def _colons(problems: dict[str, str]) -> list[str]:
    return [f"{rel}: {why}" for rel, why in sorted(problems.items())]


def _load_noise(
    data_dir: Path,
    settings: DatasetSettings,
    names: list[str] | None,
    checker: _FileChecker,
    report: CheckReport,
) -> dict[str, FloatArray]:
    if names is None:
        return {}
    folder = data_dir / BACKGROUND_NOISE_DIR
    if not names:
        raise DatasetError(
            f"{folder}: empty _background_noise_ folder (expected long noise recordings as .wav files; "
            f"remove the folder to train without background noise)"
        )
    noise: dict[str, FloatArray] = {}
    for name in names:
        rel = f"{BACKGROUND_NOISE_DIR}/{name}"
        samples = checker.decode(rel, fit=False)
        if samples is None or checker.doomed:
            continue
        if len(samples) < settings.clip_samples:
            length_ms = len(samples) * 1000 / settings.sample_rate_hz
            raise DatasetError(
                f"{folder / name}: background noise of {length_ms:.0f} ms "
                f"is shorter than one clip ({settings.clip_duration_ms} ms, --clip_duration_ms); "
                f"use a longer recording or remove it"
            )
        noise[name] = samples / INT16_FULL_SCALE
    if noise:
        report.notes.append(
            f"background noise: {len(noise)} file(s), "
            f"{sum(len(a) for a in noise.values()) / settings.sample_rate_hz:.0f} s"
        )
    return noise


# --------------------------------------------------------------------------------------
# --data_url.


def download_and_extract(
    data_url: str,
    data_dir: Path | str,
    *,
    progress: bool = True,
    progress_stream: TextIO | None = None,
) -> None:
    """Fetch ``data_url`` (http, https or file://) and unpack it into ``data_dir``, once.

    ``""`` does nothing (local data only). An archive (.tar.gz, .tgz, .tar, .tar.bz2, .tar.xz or
    .zip, recognised by its content) is unpacked into ``data_dir``; the URL is then recorded in
    ``data_dir/.kwsd_extracted`` and a later call with the same URL does nothing. A download goes
    to ``data_dir/<name>.part`` and is renamed to ``data_dir/<name>`` when complete (kept, as
    train.py keeps it: a later extraction reuses it); a file:// archive is read in place.

    ``progress``: a progress bar (bytes, %, rate, ETA) on stderr when stderr is a terminal,
    else a log line at the start and end; ``progress_stream``: draw the bar there, whatever it
    is. Every failure is a :class:`DatasetError` naming the URL.
    """
    if not data_url:
        return
    data_dir = Path(data_dir)
    parsed = urllib.parse.urlsplit(data_url)
    scheme = parsed.scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DatasetError(
            f"--data_url {data_url}: expected an http://, https:// or file:// URL "
            f"(or an empty value for local data only)"
        )
    if data_dir.exists() and not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: not a folder (--data_dir, where --data_url {data_url} is extracted)")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"{data_dir}: cannot create the data folder ({err.strerror or err})") from None
    marker = data_dir / EXTRACTED_MARKER
    done = marker.read_text(encoding="utf-8").splitlines() if marker.is_file() else []
    if data_url in done:
        log.info("%s: already extracted into %s (%s)", data_url, data_dir, marker.name)
        return
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise DatasetError(f"--data_url {data_url}: a file:// URL must name a local path (file:///path)")
        archive = Path(urllib.request.url2pathname(parsed.path))
        if not archive.is_file():
            raise DatasetError(f"--data_url {data_url}: no such file {archive}")
    else:
        name = posixpath.basename(urllib.parse.unquote(parsed.path)) or "download"
        archive = data_dir / name
        if archive.is_file():
            log.info("%s: using the archive downloaded before, %s", data_url, archive)
        else:
            _download(data_url, archive, progress=progress, stream=progress_stream)
    _extract(data_url, archive, data_dir)
    with marker.open("a", encoding="utf-8") as out:
        out.write(data_url + "\n")


def _download(url: str, archive: Path, *, progress: bool, stream: TextIO | None) -> None:
    part = archive.with_name(archive.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": f"kwsd/{__version__}"})
    started = time.monotonic()
    got = 0
    try:
        with urllib.request.urlopen(request, timeout=60) as response, part.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            target = stream if stream is not None else sys.stderr
            bar = (
                _ProgressBar(archive.name, total, target)
                if progress and (stream is not None or target.isatty())
                else None
            )
            if bar is None and progress:
                size = f" ({total / 1e6:.1f} MB)" if total is not None else ""
                log.info("downloading %s%s to %s", url, size, archive)
            while chunk := response.read(1 << 20):
                out.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(got)
            if bar is not None:
                bar.finish(got)
        if total is not None and got != total:
            raise DatasetError(f"--data_url {url}: download cut off after {got} of {total} bytes")
    except urllib.error.HTTPError as err:
        part.unlink(missing_ok=True)
        raise DatasetError(f"--data_url {url}: download failed (HTTP {err.code} {err.reason})") from None
    except urllib.error.URLError as err:
        part.unlink(missing_ok=True)
        raise DatasetError(f"--data_url {url}: download failed ({err.reason})") from None
    except (OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        raise DatasetError(f"--data_url {url}: download failed ({err})") from None
    except DatasetError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, archive)
    seconds = max(time.monotonic() - started, 1e-9)
    log.info(
        "downloaded %s: %.1f MB in %.0f s (%.1f MB/s)", archive.name, got / 1e6, seconds, got / 1e6 / seconds
    )


class _ProgressBar:
    """``name  12.3/2428.9 MB  1%  5.2 MB/s  ETA 7:43`` on one line, redrawn at most 5 times a second."""

    def __init__(self, name: str, total: int | None, stream: TextIO) -> None:
        self.name = name
        self.total = total
        self.stream = stream
        self.started = time.monotonic()
        self.drawn = 0.0

    def update(self, got: int) -> None:
        now = time.monotonic()
        if now - self.drawn >= 0.2:
            self.drawn = now
            self._draw(got, now)

    def finish(self, got: int) -> None:
        self._draw(got, time.monotonic())
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self, got: int, now: float) -> None:
        seconds = max(now - self.started, 1e-9)
        rate = got / seconds
        text = f"{self.name}  {got / 1e6:.1f}"
        if self.total:
            left = (self.total - got) / rate if rate > 0 else 0.0
            text += (
                f"/{self.total / 1e6:.1f} MB  {100 * got / self.total:3.0f}%  {rate / 1e6:.1f} MB/s  "
                f"ETA {int(left) // 60}:{int(left) % 60:02d}"
            )
        else:
            text += f" MB  {rate / 1e6:.1f} MB/s"
        self.stream.write("\r" + text)
        self.stream.flush()


def _extract(url: str, archive: Path, data_dir: Path) -> None:
    started = time.monotonic()
    log.info("extracting %s into %s", archive.name, data_dir)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                count = len(zipped.namelist())
                zipped.extractall(data_dir)  # drops absolute paths and ".." itself
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                count = len(members)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(data_dir, filter="data")  # refuses paths outside data_dir, devices, ...
                else:  # pragma: no cover (Python < 3.11.4)
                    for member in members:
                        if member.name.startswith("/") or ".." in Path(member.name).parts:
                            raise tarfile.TarError(f"member {member.name!r} points outside the folder")
                    tar.extractall(data_dir)
        else:
            raise DatasetError(
                f"--data_url {url}: {archive} is not an archive (expected .tar.gz, .tgz, .tar or .zip)"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DatasetError(f"--data_url {url}: cannot extract {archive} ({err})") from None
    log.info("extracted %d entries from %s in %.1f s", count, archive.name, time.monotonic() - started)
