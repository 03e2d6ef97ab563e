#!/usr/bin/env python3
"""Check a Speech Commands-style data set before training, and optionally fix its formats.

    python tools/check_dataset.py DATA_DIR [--sample_rate 16000] [--clip_duration_ms 1000]
        [--wanted_words yes,no] [--validation_percentage 10 --testing_percentage 10]
        [--min_clips_per_speaker 5] [--silent_dbfs -50] [--no_resample] [--fix] [--json]

The data set is found and split exactly as ``tools/train.py`` finds and splits it
(tools/kwsd_tools/training/dataset.py: the same folder scan, validation_list.txt / testing_list.txt when
present, else the hash of each name before ``_nohash_``), and every file is opened once, by
kwsd's own reader, converted to mono int16 at ``--sample_rate`` as the trainer reads it. From
that one pass the report gives: clips per label and partition (and the background noise in
seconds); a table of formats (rate, channels, encoding) with the files not at the target
format; durations per label, with the clips that will be cut or are very short; clipped and
near-silent clips; identical audio (a hash of the decoded samples) in several files; speakers
with few clips; unreadable files with the reason; and a verdict.

What counts as what (the verdict is ERRORS if any error, else WARNINGS if any warning, else OK):

Errors (exit 1): anything that stops training or silently falsifies its result.

* an unreadable file: not a WAV, empty, header only, compressed, cut off in its header
  (tools/train.py stops on it; train.py would crash or train on garbage);
* identical audio in two partitions: a leak from training into validation or testing that
  inflates the measured accuracy;
* a ``--wanted_words`` word with no folder, or no usable clip in one of the partitions (its
  accuracy cannot be measured there, and train.py stops on an empty partition);
* validation_list.txt without testing_list.txt (or the reverse), or a list that cannot be read;
* no .wav files at all; a ``_background_noise_`` folder with no usable file, or a noise file
  shorter than one clip (tools/train.py refuses both);
* with ``--no_resample`` (tools/train.py's flag), a file at another rate (train.py refuses it);
* a file ``--fix`` could not convert.

Warnings (exit 0): things training survives but a person should look at.

* a file not 16-bit mono at ``--sample_rate``: kwsd's trainer converts it as it reads it
  (soxr, channels averaged), so it is not an error here; TensorFlow's train.py would misread
  it silently, and ``--fix`` converts it in place;
* clips longer than ``--clip_duration_ms`` (only the start is used) or shorter than half of it;
* clipped clips (at least 0.1% of the samples at full scale, or 3 consecutive ones, in the
  int16 samples training sees) and near-silent clips (peak below ``--silent_dbfs``);
* identical audio twice in one partition (weights that clip double; not a leak);
* speakers (the name before ``_nohash_``) with fewer than ``--min_clips_per_speaker`` clips (often
  a misspelt name), and names without ``_nohash_`` (each such file is split on its own, so one
  speaker's recordings can land in several partitions);
* warnings from kwsd's reader (a header that promises more audio than the file holds, ...);
* without ``--wanted_words``: a folder with no clip in some partition.

Without ``--wanted_words`` (unlike train.py, whose default is its ten words) every folder is
reported as a label and none is required. Digital silence (all zeros) is listed as silent, not as
a duplicate, and background noise files are checked for format and length only.

``--fix`` converts every readable file that is not 16-bit mono at ``--sample_rate`` in place, with
kwsd's reader (soxr), in the same pass: the new file is written under a hidden temporary name
and renamed over the old one; before that the original is kept as ``<name>.wav.orig`` next to it
(a hard link, or an exclusive copy where the file system has none), never overwriting an existing
``.orig``. Next to the file, not in a ``_originals/`` folder: train.py reads every folder but
``_background_noise_`` as a word (a ``_originals`` folder would become ``_unknown_`` clips),
while both train.py (``*/*.wav``) and kwsd's loader (``.wav`` only) skip ``*.wav.orig``. At every
moment the original audio exists under one of the two names. Lengths are not changed.

Exit codes: 0 OK or warnings only, 1 errors, 2 a malformed command line or a data folder that
is not there.

Speed, one process: about 8,000 files/s on 1 s clips of 16 kHz mono int16 already in the page
cache (tools/synth.py's set, 1,804 files in 0.2 s), so Speech Commands' 105,000 files take
about 15 s once cached, longer from a cold disk; about 600 files/s for 44.1 kHz stereo 24-bit
clips (kwsd's reader decoding and resampling them).
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import json
import logging
import math
import os
import shutil
import stat
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.audio import AudioInfo, Encoding, write_wav
from kwsd.blas import use_one_blas_thread
from kwsd.dataset_layout import BACKGROUND_NOISE_DIR, NOHASH, speaker_of
from kwsd.errors import KwsdError
from kwsd_tools.training.dataset import (
    PARTITIONS,
    DatasetError,
    DatasetSettings,
    hold_reader_log,
    is_native,
    read_error_reason,
    read_samples,
    scan_data_dir,
    split_files,
    which_set,
)

log = logging.getLogger("check_dataset")

TOOL_NAME = "check_dataset"
EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_USAGE = 2

#: Suffix of the originals ``--fix`` keeps next to the converted files.
ORIGINAL_SUFFIX = ".orig"
#: In the int16 samples training sees: |sample| at or above this is at full scale.
FULL_SCALE_INT16 = 32767
INT16_REFERENCE = 32768.0  # 0 dBFS
#: A clip is clipped with at least this share of its samples at full scale ...
CLIPPED_SHARE = 0.001
#: ... or this many consecutive full-scale samples.
CLIPPED_RUN_SAMPLES = 3
DEFAULT_SILENT_DBFS = -50.0
#: Clips shorter than this share of --clip_duration_ms are listed.
SHORT_SHARE = 0.5
DEFAULT_MIN_CLIPS_PER_SPEAKER = 5
#: Files named per finding in the text report before "and N more" (the JSON names all).
DEFAULT_MAX_LISTED = 10
_PROGRESS_EVERY = 10000

Int16Array = npt.NDArray[np.int16]


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


class Verdict(enum.StrEnum):
    OK = "OK"
    WARNINGS = "WARNINGS"
    ERRORS = "ERRORS"


class Check(enum.StrEnum):
    """What a finding is about (stable names for scripts reading ``--json``)."""

    NO_FILES = "no_files"
    UNREADABLE = "unreadable"
    SPLIT_LISTS = "split_lists"
    MISSING_WORD = "missing_word"
    EMPTY_PARTITION = "empty_partition"
    CROSS_PARTITION_DUPLICATES = "cross_partition_duplicates"
    DUPLICATES = "duplicates"
    NOISE = "noise"
    FORMAT = "format"
    FIXED = "fixed"
    FIX_FAILED = "fix_failed"
    LONG = "long"
    SHORT = "short"
    CLIPPED = "clipped"
    SILENT = "silent"
    FEW_CLIPS_SPEAKERS = "few_clips_speakers"
    NO_NOHASH = "no_nohash"
    READER_WARNINGS = "reader_warnings"
    MAJORITY_FORMAT = "majority_format"
    IGNORED = "ignored"
    ORIGINALS = "originals"


@dataclass(frozen=True)
class CheckSettings:
    """What to check against. ``dataset`` carries train.py's flags (rate, clip, split, resample)."""

    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    #: None: every folder is a label and none is required.
    wanted_words: tuple[str, ...] | None = None
    min_clips_per_speaker: int = DEFAULT_MIN_CLIPS_PER_SPEAKER
    silent_dbfs: float = DEFAULT_SILENT_DBFS
    fix: bool = False


@dataclass(frozen=True)
class Finding:
    """One line of the verdict: ``items`` are what to show (a file with its detail), ``files``
    the paths (relative to the data folder, posix) or speakers concerned."""

    severity: Severity
    check: Check
    summary: str
    items: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": str(self.severity),
            "check": str(self.check),
            "summary": self.summary,
            "items": list(self.items),
            "files": list(self.files),
        }


@dataclass(frozen=True)
class FileStats:
    """One readable file, as its header says and as training will see it (int16 at the target rate)."""

    rel: str
    label: str | None  # None: background noise
    partition: str | None  # None: background noise
    info: AudioInfo
    frames: int  # in the file, at its own rate
    samples: int  # after conversion
    peak: int  # largest |sample|, 0..32768
    rms: float
    full_scale: int  # samples with |x| >= FULL_SCALE_INT16
    longest_full_scale_run: int
    digest: bytes  # of the converted samples

    @property
    def duration_ms(self) -> float:
        return self.frames * 1000 / self.info.sample_rate_hz

    @property
    def format_key(self) -> tuple[int, int, str]:
        return (self.info.sample_rate_hz, self.info.channels, str(self.info.encoding))


@dataclass
class DatasetCheck:
    """The outcome of :func:`check_dataset`: tables, findings and the verdict."""

    data_dir: Path
    settings: CheckSettings
    split_rule: str
    labels: list[str]  # wanted words first (in their order), then the other folders, sorted
    counts: dict[str, dict[str, int]]  # label -> partition -> usable clips
    noise_files: int
    noise_seconds: float
    formats: dict[tuple[int, int, str], int]  # (rate, channels, encoding) -> files, most first
    durations_ms: dict[str, tuple[float, float, float]]  # label -> (min, median, max)
    findings: list[Finding]
    unreadable: dict[str, str]
    fixed: dict[str, str]  # file -> what it held
    files_seen: int
    seconds: float

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.NOTE]

    @property
    def verdict(self) -> Verdict:
        if self.errors:
            return Verdict.ERRORS
        return Verdict.WARNINGS if self.warnings else Verdict.OK

    @property
    def exit_code(self) -> int:
        return EXIT_ERRORS if self.verdict is Verdict.ERRORS else EXIT_OK

    @property
    def verdict_line(self) -> str:
        return f"verdict: {self.verdict} ({len(self.errors)} error(s), {len(self.warnings)} warning(s))"

    def as_json(self) -> dict[str, Any]:
        ds = self.settings.dataset
        return {
            "data_dir": str(self.data_dir),
            "verdict": str(self.verdict),
            "exit_code": self.exit_code,
            "files": self.files_seen,
            "seconds": round(self.seconds, 3),
            "settings": {
                "sample_rate": ds.sample_rate_hz,
                "clip_duration_ms": ds.clip_duration_ms,
                "wanted_words": list(self.settings.wanted_words) if self.settings.wanted_words else None,
                "validation_percentage": ds.validation_percentage,
                "testing_percentage": ds.testing_percentage,
                "min_clips_per_speaker": self.settings.min_clips_per_speaker,
                "silent_dbfs": self.settings.silent_dbfs,
                "no_resample": not ds.resample,
                "fix": self.settings.fix,
            },
            "split": self.split_rule,
            "counts": self.counts,
            "background_noise": {"files": self.noise_files, "seconds": round(self.noise_seconds, 3)},
            "formats": [
                {
                    "sample_rate_hz": rate,
                    "channels": channels,
                    "encoding": encoding,
                    "files": count,
                    "target": (rate, channels, encoding) == _target_key(ds.sample_rate_hz),
                }
                for (rate, channels, encoding), count in self.formats.items()
            ],
            "durations_ms": {
                label: {"min": round(lo, 1), "median": round(mid, 1), "max": round(hi, 1)}
                for label, (lo, mid, hi) in self.durations_ms.items()
            },
            "unreadable": self.unreadable,
            "fixed": self.fixed,
            "errors": [f.as_json() for f in self.errors],
            "warnings": [f.as_json() for f in self.warnings],
            "notes": [f.as_json() for f in self.notes],
        }

    def lines(self, max_listed: int | None = DEFAULT_MAX_LISTED) -> list[str]:
        """The human report; at most ``max_listed`` files per finding (None: all)."""
        ds = self.settings.dataset
        rate = self.files_seen / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"data set check: {self.data_dir} ({self.files_seen} file(s) in {self.seconds:.1f} s, "
            f"{rate:.0f} files/s)",
            f"target: {_target_text(ds.sample_rate_hz)}, clips of {ds.clip_duration_ms} ms",
            f"partitions: {self.split_rule}",
            "",
        ]
        out.extend(self._count_lines())
        out.append("")
        out.extend(self._format_lines())
        if self.durations_ms:
            out.append("")
            out.extend(self._duration_lines())
        for title, findings in (("ERRORS", self.errors), ("WARNINGS", self.warnings), ("notes", self.notes)):
            if not findings:
                continue
            out.append("")
            out.append(f"{title} ({len(findings)}):")
            for finding in findings:
                out.append(f"  {finding.check}: {finding.summary}")
                shown = finding.items if max_listed is None else finding.items[:max_listed]
                out.extend(f"      {item}" for item in shown)
                if len(finding.items) > len(shown):
                    out.append(f"      and {len(finding.items) - len(shown)} more")
        out.append("")
        out.append(self.verdict_line)
        return out

    def text(self, max_listed: int | None = DEFAULT_MAX_LISTED) -> str:
        return "\n".join(self.lines(max_listed))

    def _count_lines(self) -> list[str]:
        wanted = set(self.settings.wanted_words or ())
        names = [f"{label} *" if label in wanted else label for label in self.labels]
        width = max([len(n) for n in names] + [len(BACKGROUND_NOISE_DIR), 5])
        header = f"  {'label':<{width}}" + "".join(f"{p:>12}" for p in PARTITIONS) + f"{'total':>9}"
        out = ["usable clips per label and partition:", header]
        totals = dict.fromkeys(PARTITIONS, 0)
        for label, name in zip(self.labels, names, strict=True):
            row = self.counts[label]
            for partition in PARTITIONS:
                totals[partition] += row[partition]
            out.append(
                f"  {name:<{width}}"
                + "".join(f"{row[p]:>12}" for p in PARTITIONS)
                + f"{sum(row.values()):>9}"
            )
        out.append(
            f"  {'total':<{width}}"
            + "".join(f"{totals[p]:>12}" for p in PARTITIONS)
            + f"{sum(totals.values()):>9}"
        )
        out.append(f"  {BACKGROUND_NOISE_DIR}: {self.noise_files} usable file(s), {self.noise_seconds:.1f} s")
        if wanted:
            out.append("  (* wanted word; the other folders are _unknown_ to train.py)")
        return out

    def _format_lines(self) -> list[str]:
        target = _target_key(self.settings.dataset.sample_rate_hz)
        out = ["formats (sample rate, channels, encoding):"]
        for key, count in self.formats.items():
            mark = "  target" if key == target else ""
            out.append(f"  {_describe_key(key):<32}{count:>8}{mark}")
        if not self.formats:
            out.append("  (no readable file)")
        return out

    def _duration_lines(self) -> list[str]:
        width = max([len(label) for label in self.durations_ms] + [5])
        out = ["clip durations in ms:", f"  {'label':<{width}}{'min':>9}{'median':>9}{'max':>9}"]
        for label, (lo, mid, hi) in self.durations_ms.items():
            out.append(f"  {label:<{width}}{lo:>9.0f}{mid:>9.0f}{hi:>9.0f}")
        return out


def _target_key(sample_rate_hz: int) -> tuple[int, int, str]:
    return (sample_rate_hz, 1, str(Encoding.PCM16))


def _describe_key(key: tuple[int, int, str]) -> str:
    rate, channels, encoding = key
    return AudioInfo("", rate, channels, encoding, None).describe()


def _target_text(sample_rate_hz: int) -> str:
    return _describe_key(_target_key(sample_rate_hz))


def _dbfs(value: float) -> float:
    return 20 * math.log10(value / INT16_REFERENCE) if value > 0 else -math.inf


def _dbfs_text(value: float) -> str:
    return "digital silence" if value == -math.inf else f"{value:.1f} dBFS"


# --------------------------------------------------------------------------------------
# One pass over the files.


def _measure(
    rel: str, label: str | None, partition: str | None, info: AudioInfo, samples: Int16Array
) -> FileStats:
    values = samples.astype(np.float64)
    peak = int(max(values.max(), -values.min())) if values.size else 0
    rms = math.sqrt(float(np.dot(values, values)) / values.size) if values.size else 0.0
    full_scale = 0
    longest = 0
    if peak >= FULL_SCALE_INT16:
        at_full = np.abs(values) >= FULL_SCALE_INT16
        full_scale = int(np.count_nonzero(at_full))
        edges = np.diff(np.concatenate(([0], at_full.view(np.int8), [0])))
        longest = int(np.max(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)))
    frames = info.frames if info.frames is not None else len(samples)
    digest = hashlib.blake2b(samples.tobytes(), digest_size=16).digest()
    return FileStats(
        rel, label, partition, info, frames, len(samples), peak, rms, full_scale, longest, digest
    )


class FixError(Exception):
    """A file ``--fix`` left as it was, with the reason."""


def fix_in_place(path: Path, samples: Int16Array, sample_rate_hz: int) -> Path:
    """Replace ``path`` by ``samples`` as 16-bit mono at ``sample_rate_hz``; returns where the
    original is kept (``<name>.orig`` next to it). Atomic: the new file is written under a hidden
    name, fsynced, the original linked (or copied) to ``.orig``, then the new file renamed over
    ``path``. On any failure ``path`` is untouched and nothing is left behind (:class:`FixError`)."""
    original = path.with_name(path.name + ORIGINAL_SUFFIX)
    if original.exists() or original.is_symlink():
        raise FixError(f"{original.name} already exists (an original kept before?); move it away first")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.fixing")
    kept = replaced = False
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        write_wav(temporary, samples, sample_rate_hz)
        os.chmod(temporary, mode)
        _fsync(temporary)
        _keep_original(path, original)
        kept = True
        os.replace(temporary, path)
        replaced = True
        _fsync_folder(path.parent)
    except OSError as err:
        raise FixError(f"cannot convert it in place ({err.strerror or err})") from None
    finally:
        if not replaced:
            temporary.unlink(missing_ok=True)
            if kept:
                original.unlink(missing_ok=True)  # path still holds the original
    return original


def _keep_original(path: Path, original: Path) -> None:
    try:
        os.link(path, original)  # fails if original exists: never overwrites
        return
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT on a USB stick, some network mounts)
        pass
    with open(path, "rb") as source, open(original, "xb") as copy:
        shutil.copyfileobj(source, copy)
        copy.flush()
        os.fsync(copy.fileno())
    shutil.copystat(path, original)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename is still atomic
    finally:
        os.close(descriptor)


def check_dataset(data_dir: Path | str, settings: CheckSettings) -> DatasetCheck:
    """Check every file of ``data_dir`` (each opened once); with ``settings.fix``, convert the
    files not at the target format in place. Raises :class:`DatasetError` only when the folder
    cannot be listed; everything else is a finding in the result."""
    started = time.monotonic()
    data_dir = Path(data_dir)
    ds = settings.dataset
    rate_hz = ds.sample_rate_hz
    scan = scan_data_dir(data_dir)
    findings: list[Finding] = []
    rels = [rel for _, rel in scan.files]
    try:
        split, split_rule = split_files(data_dir, ds, rels)
    except DatasetError as err:
        findings.append(Finding(Severity.ERROR, Check.SPLIT_LISTS, str(err)))
        split = {rel: which_set(rel, ds.validation_percentage, ds.testing_percentage) for rel in rels}
        split_rule = f"by the hash of each file name (for this report only: {err})"

    queue: list[tuple[str | None, str]] = [(None, f"{BACKGROUND_NOISE_DIR}/{n}") for n in scan.noise or ()]
    queue.extend(scan.files)
    stats: list[FileStats] = []
    unreadable: dict[str, str] = {}
    fixed: dict[str, str] = {}
    fix_failed: dict[str, str] = {}
    reader_warnings: list[str] = []
    held: list[str] = []
    with hold_reader_log(held, pass_warnings=False):
        for done, (label, rel) in enumerate(queue, 1):
            path = data_dir / rel
            held.clear()
            try:
                samples, info = read_samples(path, rate_hz)
            except (KwsdError, OSError) as err:
                unreadable[rel] = read_error_reason(err, path)
                continue
            finally:
                prefix = f"{path}: "
                reader_warnings.extend(
                    f"{rel}: {m[len(prefix) :]}" if m.startswith(prefix) else f"{rel}: {m}" for m in held
                )
            stats.append(_measure(rel, label, None if label is None else split[rel], info, samples))
            if settings.fix and not is_native(info, rate_hz):
                try:
                    fix_in_place(path, samples, rate_hz)
                    fixed[rel] = info.describe()
                except FixError as err:
                    fix_failed[rel] = str(err)
            if done % _PROGRESS_EVERY == 0:
                log.info("checked %d of %d files (%.0f s)", done, len(queue), time.monotonic() - started)

    report = _Assessment(data_dir, settings, scan.folders, stats, findings)
    report.no_files(scan.files)
    report.unreadable(unreadable)
    report.words()
    report.noise(scan.noise)
    report.formats(fixed, fix_failed)
    report.lengths()
    report.levels()
    report.duplicates()
    report.speakers([rel for _, rel in scan.files])
    if reader_warnings:
        findings.append(
            Finding(
                Severity.WARNING,
                Check.READER_WARNINGS,
                f"{len(reader_warnings)} warning(s) from kwsd's reader",
                tuple(reader_warnings),
                tuple(dict.fromkeys(w.split(": ", 1)[0] for w in reader_warnings)),
            )
        )
    report.ignored(scan.ignored)
    if scan.noise is None:
        findings.append(
            Finding(
                Severity.NOTE,
                Check.NOISE,
                f"no {BACKGROUND_NOISE_DIR} folder: training gets no noise augmentation and its "
                f"silence items are digital zeros",
            )
        )
    clips = [s for s in stats if s.label is not None]
    noise = [s for s in stats if s.label is None]
    return DatasetCheck(
        data_dir=data_dir,
        settings=settings,
        split_rule=split_rule,
        labels=report.labels,
        counts=report.counts,
        noise_files=len(noise),
        noise_seconds=sum(s.frames / s.info.sample_rate_hz for s in noise),
        formats=dict(sorted(Counter(s.format_key for s in stats).items(), key=lambda kv: (-kv[1], kv[0]))),
        durations_ms=report.durations(clips),
        findings=sorted(findings, key=lambda f: list(Severity).index(f.severity)),
        unreadable=unreadable,
        fixed=fixed,
        files_seen=len(queue),
        seconds=time.monotonic() - started,
    )


class _Assessment:
    """Turns the per-file facts into findings (each method adds its own)."""

    def __init__(
        self,
        data_dir: Path,
        settings: CheckSettings,
        folders: dict[str, int],
        stats: list[FileStats],
        findings: list[Finding],
    ) -> None:
        self.data_dir = data_dir
        self.settings = settings
        self.clips = [s for s in stats if s.label is not None]
        self.noise_stats = [s for s in stats if s.label is None]
        self.findings = findings
        wanted = list(settings.wanted_words or ())
        folder_labels = sorted({folder.lower() for folder in folders})
        self.labels = wanted + [label for label in folder_labels if label not in wanted]
        self.folder_labels = set(folder_labels)
        self.counts = {label: dict.fromkeys(PARTITIONS, 0) for label in self.labels}
        for clip in self.clips:
            assert clip.label is not None and clip.partition is not None
            self.counts[clip.label][clip.partition] += 1

    def add(
        self,
        severity: Severity,
        check: Check,
        summary: str,
        items: Sequence[str] = (),
        files: Sequence[str] = (),
    ) -> None:
        self.findings.append(Finding(severity, check, summary, tuple(items), tuple(files)))

    def no_files(self, files: list[tuple[str, str]]) -> None:
        if not files:
            self.add(
                Severity.ERROR,
                Check.NO_FILES,
                f"no .wav files in word folders (expected {self.data_dir}/<word>/*.wav)",
            )

    def unreadable(self, unreadable: dict[str, str]) -> None:
        if unreadable:
            self.add(
                Severity.ERROR,
                Check.UNREADABLE,
                f"{len(unreadable)} file(s) kwsd's reader cannot read (training stops on them; fix or "
                f"remove them)",
                [f"{rel}: {why}" for rel, why in sorted(unreadable.items())],
                sorted(unreadable),
            )

    def words(self) -> None:
        wanted = self.settings.wanted_words
        if wanted:
            missing = [w for w in wanted if w not in self.folder_labels]
            if missing:
                self.add(
                    Severity.ERROR,
                    Check.MISSING_WORD,
                    f"--wanted_words: no folder for {', '.join(repr(w) for w in missing)} "
                    f"(the word folders: {', '.join(sorted(self.folder_labels)) or 'none'})",
                )
            checked = [w for w in wanted if w in self.folder_labels]
        else:
            checked = [label for label in self.labels if sum(self.counts[label].values())]
        gaps = [
            f"{label}: no usable clip in {', '.join(p for p in PARTITIONS if not self.counts[label][p])}"
            for label in checked
            if not all(self.counts[label].values())
        ]
        if not gaps:
            return
        why = (
            "the split keeps each speaker (the name before _nohash_) in one partition: add clips from "
            f"more speakers, or change {self.settings.dataset.flags()}"
        )
        if wanted:
            self.add(
                Severity.ERROR,
                Check.EMPTY_PARTITION,
                f"{len(gaps)} wanted word(s) with no usable clip in a partition ({why})",
                gaps,
            )
        else:
            self.add(
                Severity.WARNING,
                Check.EMPTY_PARTITION,
                f"{len(gaps)} folder(s) with no usable clip in a partition ({why})",
                gaps,
            )

    def noise(self, names: list[str] | None) -> None:
        if names is None:
            return
        folder = f"{BACKGROUND_NOISE_DIR}/"
        if not names:
            self.add(
                Severity.ERROR,
                Check.NOISE,
                f"{folder} has no .wav files (tools/train.py refuses it: add long noise recordings or "
                f"remove the folder)",
            )
            return
        ds = self.settings.dataset
        short = [s for s in self.noise_stats if s.frames * 1000 < ds.clip_duration_ms * s.info.sample_rate_hz]
        if short:
            self.add(
                Severity.ERROR,
                Check.NOISE,
                f"{len(short)} background noise file(s) shorter than one clip ({ds.clip_duration_ms} ms; "
                f"tools/train.py refuses them: use longer recordings or remove them)",
                [f"{s.rel} ({s.duration_ms:.0f} ms)" for s in short],
                [s.rel for s in short],
            )

    def formats(self, fixed: dict[str, str], fix_failed: dict[str, str]) -> None:
        ds = self.settings.dataset
        rate_hz = ds.sample_rate_hz
        target = _target_text(rate_hz)
        every = self.noise_stats + self.clips
        outliers = [s for s in every if not is_native(s.info, rate_hz) and s.rel not in fixed]
        if fixed:
            self.add(
                Severity.NOTE,
                Check.FIXED,
                f"--fix converted {len(fixed)} file(s) in place to {target} with kwsd's reader; the "
                f"originals are kept next to them as <name>.wav{ORIGINAL_SUFFIX}",
                [f"{rel} (was {was})" for rel, was in sorted(fixed.items())],
                sorted(fixed),
            )
        if fix_failed:
            self.add(
                Severity.ERROR,
                Check.FIX_FAILED,
                f"--fix could not convert {len(fix_failed)} file(s) (left as they were)",
                [f"{rel}: {why}" for rel, why in sorted(fix_failed.items())],
                sorted(fix_failed),
            )
        if outliers and not ds.resample:
            refused = [s for s in outliers if s.info.sample_rate_hz != rate_hz and s.rel not in fix_failed]
            if refused:
                self.add(
                    Severity.ERROR,
                    Check.FORMAT,
                    f"{len(refused)} file(s) not at {rate_hz} Hz, which tools/train.py --no_resample refuses "
                    f"(--fix converts them in place)",
                    [f"{s.rel} ({s.info.describe()})" for s in refused],
                    [s.rel for s in refused],
                )
                outliers = [s for s in outliers if s not in refused]
        outliers = [s for s in outliers if s.rel not in fix_failed]
        if outliers:
            self.add(
                Severity.WARNING,
                Check.FORMAT,
                f"{len(outliers)} file(s) not {target}: kwsd's trainer converts them as it reads them "
                f"(soxr, channels averaged), TensorFlow's train.py would misread them; --fix converts them "
                f"in place",
                [f"{s.rel} ({s.info.describe()})" for s in outliers],
                [s.rel for s in outliers],
            )
        if every:
            (key, count), *_ = Counter(s.format_key for s in every).most_common(1)
            if key[0] != rate_hz and 2 * count > len(every):
                self.add(
                    Severity.NOTE,
                    Check.MAJORITY_FORMAT,
                    f"most files ({count} of {len(every)}) are {_describe_key(key)}: is --sample_rate "
                    f"{rate_hz} what you want?",
                )

    def lengths(self) -> None:
        ds = self.settings.dataset
        clip_ms = ds.clip_duration_ms
        long = sorted(
            (s for s in self.clips if s.frames * 1000 > clip_ms * s.info.sample_rate_hz),
            key=lambda s: (-s.duration_ms, s.rel),
        )
        short = sorted(
            (s for s in self.clips if s.frames * 1000 < SHORT_SHARE * clip_ms * s.info.sample_rate_hz),
            key=lambda s: (s.duration_ms, s.rel),
        )
        if long:
            self.add(
                Severity.WARNING,
                Check.LONG,
                f"{len(long)} clip(s) longer than {clip_ms} ms: only their first {clip_ms} ms are used "
                f"(cut them, or raise --clip_duration_ms)",
                [f"{s.rel} ({s.duration_ms:.0f} ms)" for s in long],
                [s.rel for s in long],
            )
        if short:
            self.add(
                Severity.WARNING,
                Check.SHORT,
                f"{len(short)} clip(s) shorter than {SHORT_SHARE * clip_ms:.0f} ms, half the clip "
                f"(padded with zeros: a cut-off word?)",
                [f"{s.rel} ({s.duration_ms:.0f} ms)" for s in short],
                [s.rel for s in short],
            )

    def levels(self) -> None:
        clipped = [
            s
            for s in self.clips
            if s.full_scale
            and (s.full_scale >= CLIPPED_SHARE * s.samples or s.longest_full_scale_run >= CLIPPED_RUN_SAMPLES)
        ]
        if clipped:
            clipped.sort(key=lambda s: (-s.full_scale / s.samples, s.rel))
            self.add(
                Severity.WARNING,
                Check.CLIPPED,
                f"{len(clipped)} clipped clip(s) (at least {CLIPPED_SHARE:.1%} of the samples at full "
                f"scale, or {CLIPPED_RUN_SAMPLES} in a row)",
                [
                    f"{s.rel} ({s.full_scale} samples at full scale, {s.full_scale / s.samples:.2%}; "
                    f"longest run {s.longest_full_scale_run})"
                    for s in clipped
                ],
                [s.rel for s in clipped],
            )
        threshold = self.settings.silent_dbfs
        silent = sorted((s for s in self.clips if _dbfs(s.peak) < threshold), key=lambda s: (s.peak, s.rel))
        if silent:
            self.add(
                Severity.WARNING,
                Check.SILENT,
                f"{len(silent)} near-silent clip(s) (peak below {threshold:g} dBFS, --silent_dbfs)",
                [
                    f"{s.rel} (digital silence)"
                    if s.peak == 0
                    else f"{s.rel} (peak {_dbfs(s.peak):.1f} dBFS, RMS {_dbfs(s.rms):.1f} dBFS)"
                    for s in silent
                ],
                [s.rel for s in silent],
            )

    def duplicates(self) -> None:
        groups: dict[bytes, list[FileStats]] = {}
        for s in self.clips:
            if s.peak:  # digital silence is reported as silent, not as copies of each other
                groups.setdefault(s.digest, []).append(s)
        copies = sorted(
            (sorted(group, key=lambda s: s.rel) for group in groups.values() if len(group) > 1),
            key=lambda group: group[0].rel,
        )
        across = [g for g in copies if len({s.partition for s in g}) > 1]
        within = [g for g in copies if len({s.partition for s in g}) == 1]

        def item(group: list[FileStats]) -> str:
            return " = ".join(f"{s.rel} ({s.partition})" for s in group)

        if across:
            self.add(
                Severity.ERROR,
                Check.CROSS_PARTITION_DUPLICATES,
                f"{len(across)} group(s) of files with identical audio in different partitions: a leak "
                f"that inflates validation and test accuracy (remove the copies, or rename them to one "
                f"speaker so that the split keeps them together)",
                [item(g) for g in across],
                [s.rel for g in across for s in g],
            )
        if within:
            self.add(
                Severity.WARNING,
                Check.DUPLICATES,
                f"{len(within)} group(s) of files with identical audio in one partition (each copy "
                f"weighs that clip again)",
                [item(g) for g in within],
                [s.rel for g in within for s in g],
            )

    def speakers(self, rels: list[str]) -> None:
        named = [rel for rel in rels if NOHASH in rel.rsplit("/", 1)[-1]]
        unnamed = [rel for rel in rels if NOHASH not in rel.rsplit("/", 1)[-1]]
        per_speaker = Counter(speaker_of(rel) for rel in named)
        minimum = self.settings.min_clips_per_speaker
        few = sorted((count, speaker) for speaker, count in per_speaker.items() if count < minimum)
        if few:
            self.add(
                Severity.WARNING,
                Check.FEW_CLIPS_SPEAKERS,
                f"{len(few)} of {len(per_speaker)} speaker(s) with fewer than {minimum} clips "
                f"(--min_clips_per_speaker; a misspelt name before {NOHASH}?)",
                [f"{speaker} ({count} clip(s))" for count, speaker in few],
                [speaker for _, speaker in few],
            )
        if unnamed:
            self.add(
                Severity.WARNING,
                Check.NO_NOHASH,
                f"{len(unnamed)} file name(s) without {NOHASH}: each is split on its own, so one speaker's "
                f"recordings can land in several partitions (name them <speaker>{NOHASH}<n>.wav)",
                unnamed,
                unnamed,
            )

    def ignored(self, ignored: list[str]) -> None:
        originals = [rel for rel in ignored if rel.lower().endswith(".wav" + ORIGINAL_SUFFIX)]
        others = [rel for rel in ignored if rel not in set(originals)]
        if originals:
            self.add(
                Severity.NOTE,
                Check.ORIGINALS,
                f"{len(originals)} original(s) kept by --fix (*.wav{ORIGINAL_SUFFIX}; train.py and "
                f"kwsd's loader do not read them)",
                originals,
                originals,
            )
        if others:
            self.add(
                Severity.NOTE,
                Check.IGNORED,
                f"{len(others)} entr(y/ies) not read (hidden, not .wav, or below a word folder)",
                others,
                others,
            )

    def durations(self, clips: list[FileStats]) -> dict[str, tuple[float, float, float]]:
        out: dict[str, tuple[float, float, float]] = {}
        for label in self.labels:
            lengths = [s.duration_ms for s in clips if s.label == label]
            if lengths:
                out[label] = (min(lengths), statistics.median(lengths), max(lengths))
        return out


# --------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="check_dataset.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("data_dir", help="the data folder: <word>/*.wav, _background_noise_/*.wav")
    add("--sample_rate", type=int, default=16000, help="the model's sample rate in Hz (the target format)")
    add("--clip_duration_ms", type=int, default=1000, help="length of one clip")
    add(
        "--wanted_words",
        default="",
        help="words to recognise, comma-separated: each must have clips in every partition "
        "(default: none required, every folder reported)",
    )
    add("--validation_percentage", type=float, default=10.0, help="share of files for validation")
    add("--testing_percentage", type=float, default=10.0, help="share of files for testing")
    add(
        "--min_clips_per_speaker",
        type=int,
        default=DEFAULT_MIN_CLIPS_PER_SPEAKER,
        help="list speakers (the name before _nohash_) with fewer clips (0: off)",
    )
    add(
        "--silent_dbfs",
        type=float,
        default=DEFAULT_SILENT_DBFS,
        help="list clips whose peak is below this level (dBFS)",
    )
    add("--no_resample", action="store_true", help="as tools/train.py: a file at another rate is an error")
    add(
        "--fix",
        action="store_true",
        help="convert files not 16-bit mono at --sample_rate in place (originals kept as <name>.wav.orig)",
    )
    add("--json", action="store_true", help="print the report as JSON (every file named)")
    add(
        "--max_listed",
        type=int,
        default=DEFAULT_MAX_LISTED,
        help="files named per finding in the text report (0: all)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """:class:`CheckSettings` from the flags; :class:`DatasetError` naming a flag it does not accept."""
    words = tuple(w.strip() for w in args.wanted_words.split(",") if w.strip())
    if args.min_clips_per_speaker < 0:
        raise DatasetError(f"--min_clips_per_speaker: expected 0 or more, got {args.min_clips_per_speaker}")
    if not math.isfinite(args.silent_dbfs) or args.silent_dbfs > 0:
        raise DatasetError(f"--silent_dbfs: expected a level of 0 dBFS or below, got {args.silent_dbfs:g}")
    if args.max_listed < 0:
        raise DatasetError(f"--max_listed: expected 0 or more, got {args.max_listed}")
    dataset = DatasetSettings(
        sample_rate_hz=args.sample_rate,
        clip_duration_ms=args.clip_duration_ms,
        # The split does not depend on the words; without --wanted_words, train.py's are a placeholder.
        wanted_words=words or DatasetSettings.wanted_words,
        validation_percentage=args.validation_percentage,
        testing_percentage=args.testing_percentage,
        resample=not args.no_resample,
    )
    return CheckSettings(
        dataset=dataset,
        wanted_words=words or None,
        min_clips_per_speaker=args.min_clips_per_speaker,
        silent_dbfs=args.silent_dbfs,
        fix=args.fix,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_one_blas_thread()  # many tiny per-clip products (kwsd/blas.py)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=f"{TOOL_NAME}: %(message)s", stream=sys.stderr)
    try:
        settings = settings_from_args(args)
    except DatasetError as err:
        print(f"{TOOL_NAME}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        what = "no such folder" if not data_dir.exists() else "not a folder"
        print(f"{TOOL_NAME}: error: {data_dir}: {what} (expected {data_dir}/<word>/*.wav)", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = check_dataset(data_dir, settings)
    except DatasetError as err:
        print(f"{TOOL_NAME}: error: {err}", file=sys.stderr)
        return EXIT_ERRORS
    try:
        if args.json:
            json.dump(result.as_json(), sys.stdout, indent=1)
            sys.stdout.write("\n")
        else:
            print(result.text(args.max_listed or None))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has gone; the exit code still tells the verdict
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
