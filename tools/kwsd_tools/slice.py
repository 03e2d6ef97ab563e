#!/usr/bin/env python3
"""Cut long recordings into clips in the Speech Commands layout: fixed-length, or one per word.

Two ways to cut (one of them is required):

* ``--fixed MS``: consecutive clips of MS ms, every ``--hop_ms`` (default: MS, no overlap),
  what ``sox IN OUT trim 0 5 vol 45 dB rate 22050`` does for one clip. The tail shorter than a
  clip is dropped and reported, or kept padded with zeros (``--pad_tail``).
* ``--words``: single words found by their energy (below), each cut as one
  ``--clip_duration_ms`` clip centred on the word's energy centroid, padded with the
  recording's own audio around it (zeros only past the ends of the file).

Every input is read with kwsd's reader (any WAV it takes: 8/16/24/32-bit, float, any rate, any
channel count), mixed to mono and resampled to ``--sample_rate`` with soxr. ``--gain_db`` is
then applied to each clip in int16 (rounded half to even, clipped to the int16 range); the
samples it clips are counted per clip and reported (``--no_clip`` refuses instead, before
anything is written). Clips are written as 16-bit mono WAVs::

    DATA_DIR/<label>/<speaker>_nohash_<n>.wav

``<n>`` continues after the highest number already there for that speaker: an existing file is
never overwritten (each clip is written to a hidden temporary file in the same folder and then
hard-linked to its name, which fails rather than replace a file; on file systems without hard
links, such as FAT, the name is claimed with an exclusive create and the data renamed onto it).

Finding words: :mod:`kwsd.wordfinder`, the finder ``kwsd record`` uses too (frame energy over
the recording's own noise floor, with hysteresis; runs closer than ``--min_gap_ms`` are merged,
and words shorter than ``--min_word_ms`` or longer than the clip are skipped and reported).

Usage::

    python tools/slice.py cry-*.wav --out data --label crying --speaker baby1 \\
        --fixed 5000 --gain_db 45 --sample_rate 22050
    python tools/slice.py take1.wav --out data --label yes --speaker anna --words

The pure functions (:func:`clip_at`, :func:`centre_clip`, :func:`apply_gain`,
:func:`fixed_starts`) take int16 arrays and sample counts and touch no file.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from kwsd.audio import open_audio, read_wav, write_wav
from kwsd.blas import use_one_blas_thread
from kwsd.dataset_layout import BACKGROUND_NOISE_DIR, NOHASH, claim_name, clip_name, next_number, why
from kwsd.errors import InputNotFoundError, KwsdError, OutputError
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.wordfinder import DropReason, Segment, WordSettings, find_words

log = logging.getLogger("slice")

Int16Array = npt.NDArray[np.int16]

TOOL: Final = "slice"

EXIT_OK: Final = 0
EXIT_BAD_SETTING: Final = 64  # a flag value, label or speaker name that is not accepted
EXIT_BAD_AUDIO: Final = 65  # an input that is not valid or convertible audio
EXIT_NO_INPUT: Final = 66  # an input that does not exist or cannot be read
EXIT_CANT_WRITE: Final = 73  # the output folder cannot be written (permissions, read-only, full)
EXIT_INTERRUPTED: Final = 130

DEFAULT_SAMPLE_RATE_HZ: Final = 16000
DEFAULT_CLIP_DURATION_MS: Final = 1000
#: Bytes a clip's name may take besides the speaker's (``_nohash_<n>.wav``); names stay under 255.
MAX_SPEAKER_BYTES: Final = 200
#: How many clip names one warning line names before "and N more".
NAMED_CLIPS: Final = 8
_INT16_MAX: Final = 32767
_INT16_MIN: Final = -32768


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: What open() would give a new file (0644 under the usual umask).
_FILE_MODE: Final = _file_mode()


class SettingError(KwsdError):
    """A flag value, label or speaker name that is not accepted; names the flag and the value."""


# --------------------------------------------------------------------------------------
# Pure functions: levels, words, clips, gain. Arrays in, values out; no files, no clock.


def clip_at(samples: Int16Array, start_sample: int, clip_samples: int) -> Int16Array:
    """``samples[start : start + clip]``, with zeros where that runs past either end."""
    out = np.zeros(clip_samples, np.int16)
    lo, hi = max(0, start_sample), min(len(samples), start_sample + clip_samples)
    if hi > lo:
        out[lo - start_sample : hi - start_sample] = samples[lo:hi]
    return out


def centre_clip(samples: Int16Array, centre_sample: int, clip_samples: int) -> Int16Array:
    """A clip of ``clip_samples`` whose middle sample (index ``clip // 2``) is ``centre_sample``."""
    return clip_at(samples, centre_sample - clip_samples // 2, clip_samples)


def apply_gain(samples: Int16Array, gain_db: float) -> tuple[Int16Array, int]:
    """``samples`` times ``10 ** (gain_db / 20)``, rounded half to even and clipped to int16.

    Returns the result and how many samples were clipped (rounded past int16's range).
    """
    if gain_db == 0:
        return samples.copy(), 0
    scaled = np.rint(samples.astype(np.float64) * 10.0 ** (gain_db / 20.0))
    clipped = int(np.count_nonzero((scaled > _INT16_MAX) | (scaled < _INT16_MIN)))
    return np.clip(scaled, _INT16_MIN, _INT16_MAX).astype(np.int16), clipped


def max_gain_db(samples: Int16Array) -> float:
    """The largest gain in 0.1 dB steps that clips none of ``samples`` (inf for digital silence)."""
    if samples.size == 0:
        return math.inf
    high, low = int(samples.max()), int(samples.min())
    limits = [_INT16_MAX / high] if high > 0 else []
    limits += [_INT16_MIN / low] if low < 0 else []
    # Rounded down to 0.1 dB, so that the figure printed is a gain that really does not clip.
    return math.floor(200.0 * math.log10(min(limits))) / 10.0 if limits else math.inf


def fixed_starts(total_samples: int, clip_samples: int, hop_samples: int) -> list[int]:
    """Start of each whole clip of ``clip_samples`` every ``hop_samples`` in ``total_samples``."""
    return list(range(0, total_samples - clip_samples + 1, hop_samples))


# --------------------------------------------------------------------------------------
# Plans: where the clips of one recording go, and what is left out.


@dataclass(frozen=True)
class PlannedClip:
    start_sample: int  # in the recording; may be negative or run past the end (zero padding)
    word: Segment | None = None
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    start_sample: int
    end_sample: int
    reason: str


@dataclass(frozen=True)
class Plan:
    clip_samples: int
    clips: tuple[PlannedClip, ...]
    skipped: tuple[Skipped, ...]
    heading: str  # what was found, for the summary ("noise floor ...")


def fixed_plan(
    total_samples: int, clip_samples: int, hop_samples: int, *, pad_tail: bool, rate_hz: int
) -> Plan:
    starts = fixed_starts(total_samples, clip_samples, hop_samples)
    clips = [PlannedClip(s) for s in starts]
    skipped: list[Skipped] = []
    covered = starts[-1] + clip_samples if starts else 0
    next_start = starts[-1] + hop_samples if starts else 0
    if covered < total_samples and next_start < total_samples:
        if pad_tail:
            clips.append(PlannedClip(next_start, note="the tail, padded with zeros"))
        else:
            tail_start = max(covered, next_start)
            what = "a tail" if starts else "the whole recording"
            skipped.append(
                Skipped(
                    tail_start,
                    total_samples,
                    f"{what} of {_seconds(total_samples - tail_start, rate_hz)} s, shorter than one clip "
                    f"(--pad_tail keeps it, padded with zeros)",
                )
            )
    heading = ""
    if hop_samples > clip_samples and len(clips) > 1:
        heading = f"{_seconds(hop_samples - clip_samples, rate_hz)} s after each clip not used (--hop_ms)"
    return Plan(clip_samples, tuple(clips), tuple(skipped), heading)


def words_plan(samples: Int16Array, rate_hz: int, clip_samples: int, settings: WordSettings) -> Plan:
    found = find_words(samples, rate_hz, settings)
    clips: list[PlannedClip] = []
    words = found.words
    for k, word in enumerate(words):
        start = word.centre_sample - clip_samples // 2
        end = start + clip_samples
        neighbours = [
            f"word {j + 1} ({_seconds(other.start_sample, rate_hz)}-{_seconds(other.end_sample, rate_hz)} s)"
            for j, other in enumerate(words)
            if j != k and other.start_sample < end and other.end_sample > start
        ]
        note = f"the clip also holds part of {', '.join(neighbours)}" if neighbours else ""
        clips.append(PlannedClip(start, word, note))
    skipped = [
        Skipped(
            segment.start_sample,
            segment.end_sample,
            f"{_ms(segment.length_samples, rate_hz)} ms, {reason.value} "
            f"({settings.min_word_ms if reason is DropReason.TOO_SHORT else settings.max_word_ms:g} ms)",
        )
        for segment, reason in found.dropped
    ]
    skipped.sort(key=lambda s: s.start_sample)
    on_db = found.noise_floor_db + settings.threshold_db
    heading = (
        f"noise floor {found.noise_floor_db:.1f} dBFS, loudest frame {found.loudest_db:.1f} dBFS; "
        f"a word reaches {on_db:.1f} dBFS (--threshold_db {settings.threshold_db:g})"
    )
    if not words and not found.dropped:
        heading += "; nothing reached it"
    return Plan(clip_samples, tuple(clips), tuple(skipped), heading)


def _seconds(samples: int, rate_hz: int) -> str:
    return f"{samples / rate_hz:.3f}"


def _ms(samples: int, rate_hz: int) -> str:
    return f"{samples * 1000 / rate_hz:.0f}"


# --------------------------------------------------------------------------------------
# Names.

_SANITISE = re.compile(r"[^\w.-]+")


def check_label(label: str, *, fixed: bool) -> str:
    """The label as a folder name, or :class:`SettingError` naming it and why it cannot be one."""
    _check_name("--label", label)
    if label.startswith("_"):
        if label == BACKGROUND_NOISE_DIR and fixed:
            return label
        if label == BACKGROUND_NOISE_DIR:
            raise SettingError(
                f"--label {label!r}: background noise is cut with --fixed (long chunks), not --words"
            )
        raise SettingError(
            f"--label {label!r}: names starting with '_' are reserved ({SILENCE_LABEL}, {UNKNOWN_LABEL}, "
            f"{BACKGROUND_NOISE_DIR}); the only one accepted is {BACKGROUND_NOISE_DIR} with --fixed"
        )
    if label != label.lower():
        raise SettingError(
            f"--label {label!r}: has upper-case letters; training lower-cases folder names into labels, "
            f"so use {label.lower()!r}"
        )
    if "," in label:
        raise SettingError(f"--label {label!r}: contains ',' (train.py's --wanted_words is comma-separated)")
    return label


def check_speaker(speaker: str, flag: str = "--speaker") -> str:
    """The speaker as the start of a file name, or :class:`SettingError`."""
    _check_name(flag, speaker)
    if speaker.startswith("_"):
        raise SettingError(f"{flag} {speaker!r}: names starting with '_' are reserved")
    if NOHASH in speaker:
        raise SettingError(
            f"{flag} {speaker!r}: contains {NOHASH!r}, which is what separates the speaker from the "
            f"clip number in a file name"
        )
    if len(speaker.encode("utf-8")) > MAX_SPEAKER_BYTES:
        raise SettingError(f"{flag} {speaker[:20]!r}...: too long (at most {MAX_SPEAKER_BYTES} bytes)")
    return speaker


def _check_name(flag: str, value: str) -> None:
    if not value:
        raise SettingError(f"{flag} {value!r}: empty (expected a folder/file name)")
    if value in (".", ".."):
        raise SettingError(f"{flag} {value!r}: not a folder/file name")
    if "/" in value or "\\" in value:
        raise SettingError(f"{flag} {value!r}: contains a slash (expected one folder/file name)")
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad:
        raise SettingError(f"{flag} {value!r}: contains the control character {bad[0]!r}")
    if value != value.strip():
        raise SettingError(f"{flag} {value!r}: has spaces at its ends")
    if value.startswith("."):
        raise SettingError(f"{flag} {value!r}: starts with '.' (hidden: training would ignore it)")


def speaker_from_stem(path: Path) -> str:
    """A speaker name made from a file's stem: runs of anything but letters, digits, ``.``,
    ``-`` and ``_`` become ``-``; ``_nohash_`` becomes ``-nohash-``; leading ``._-`` go."""
    name = _SANITISE.sub("-", path.stem).replace(NOHASH, "-nohash-").lstrip("._-")
    name = name.encode("utf-8")[:MAX_SPEAKER_BYTES].decode("utf-8", "ignore")
    if not name:
        raise SettingError(
            f"{path}: cannot make a speaker name from the file name {path.name!r}; give --speaker NAME"
        )
    return name


# --------------------------------------------------------------------------------------
# Writing: never over an existing file, never a half-written one under a clip's name.


class ClipWriter:
    """Writes numbered clips into one label folder; counts what it wrote."""

    def __init__(self, folder: Path, data_dir: Path, *, dry_run: bool) -> None:
        self.folder = folder
        self.data_dir = data_dir
        self.dry_run = dry_run
        self.written: list[Path] = []
        self._next: dict[str, int] = {}

    def prepare(self) -> None:
        """Create the folder and prove a file can be made in it (before any audio is cut)."""
        if self.dry_run:
            for parent in (self.folder, *self.folder.parents):
                if parent.exists() and not parent.is_dir():
                    raise OutputError(f"{parent}: not a folder (expected the data folder or a label folder)")
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.folder, prefix=".slice-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot write there ({why(err)})") from None

    def write(self, speaker: str, samples: Int16Array, rate_hz: int) -> Path:
        """Write one clip as ``<speaker>_nohash_<n>.wav`` with the next free ``n``; returns its path."""
        if speaker not in self._next:
            self._next[speaker] = next_number(self.folder, speaker)
        if self.dry_run:
            path = self.folder / clip_name(speaker, self._next[speaker])
            self._next[speaker] += 1
            return path
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=".slice-", suffix=".tmp")
            os.close(fd)
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot create a file ({why(err)})") from None
        tmp = Path(tmp_name)
        try:
            try:
                os.chmod(tmp, _FILE_MODE)  # mkstemp makes it 0600; clips are ordinary files
                write_wav(tmp, samples, rate_hz)
                with open(tmp, "rb") as written:
                    os.fsync(written.fileno())
            except OSError as err:
                raise OutputError(f"{self.folder}: cannot write a clip ({why(err)})") from None
            path = self._claim(tmp, speaker)
        finally:
            tmp.unlink(missing_ok=True)
        self.written.append(path)
        return path

    def _claim(self, tmp: Path, speaker: str) -> Path:
        """Give the finished temporary file the next free name; an existing name is skipped."""
        path, self._next[speaker] = claim_name(tmp, self.folder, speaker, self._next[speaker])
        return path

    def sync_folder(self) -> None:
        """fsync the folder so the new names survive a power cut (SD cards on a Pi)."""
        if self.dry_run or not self.written:
            return
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError as err:
            log.warning("%s: fsync of the folder failed (%s)", self.folder, why(err))
        finally:
            os.close(fd)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.data_dir))


# --------------------------------------------------------------------------------------
# The command.


@dataclass(frozen=True)
class Source:
    path: Path
    speaker: str
    rate_hz: int  # of the file
    describe: str  # "44100 Hz, 2 channels, pcm16, 30.000 s"


@dataclass
class Totals:
    clips: int = 0
    inputs: int = 0
    skipped: int = 0
    clipped_clips: int = 0


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; a folder means its ``*.wav`` files (not hidden), sorted. Duplicates once."""
    paths: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            try:
                found = sorted(
                    p for p in path.iterdir() if p.suffix.lower() == ".wav" and not p.name.startswith(".")
                )
            except OSError as err:
                raise InputNotFoundError(f"{path}: cannot list the folder ({err.strerror or err})") from None
            found = [p for p in found if not p.is_dir()]
            if not found:
                raise InputNotFoundError(f"{path}: a folder with no .wav files (expected WAV files)")
            paths.extend(found)
        else:
            paths.append(path)
    unique: dict[str, Path] = {}
    for path in paths:
        key = os.path.realpath(path)
        if key in unique:
            log.warning("%s: given twice; sliced once", path)
        else:
            unique[key] = path
    return list(unique.values())


def open_sources(paths: list[Path], speaker: str | None, rate_hz: int) -> list[Source]:
    """Check every input's header (before anything is cut) and name its speaker."""
    sources: list[Source] = []
    for path in paths:
        with open_audio(path, rate_hz) as reader:
            info = reader.info
        length = f", {info.frames / info.sample_rate_hz:.3f} s" if info.frames is not None else ""
        name = speaker if speaker is not None else check_speaker(speaker_from_stem(path), f"{path}: speaker")
        sources.append(Source(path, name, info.sample_rate_hz, info.describe() + length))
    return sources


def _plan(samples: Int16Array, args: argparse.Namespace) -> Plan:
    rate = args.sample_rate
    if args.fixed is not None:
        return fixed_plan(
            len(samples),
            _samples(args.fixed, rate),
            _samples(args.hop_ms, rate),
            pad_tail=args.pad_tail,
            rate_hz=rate,
        )
    settings = WordSettings(
        threshold_db=args.threshold_db,
        min_gap_ms=args.min_gap_ms,
        min_word_ms=args.min_word_ms,
        max_word_ms=args.clip_duration_ms,
    )
    return words_plan(samples, rate, _samples(args.clip_duration_ms, rate), settings)


def _samples(ms: float, rate_hz: int) -> int:
    return round(ms * rate_hz / 1000)


def _clips(samples: Int16Array, plan: Plan, gain_db: float) -> Iterator[tuple[PlannedClip, Int16Array, int]]:
    for planned in plan.clips:
        audio, clipped = apply_gain(clip_at(samples, planned.start_sample, plan.clip_samples), gain_db)
        yield planned, audio, clipped


def check_no_clipping(sources: list[Source], args: argparse.Namespace) -> None:
    """--no_clip: cut every input once without writing; refuse if the gain would clip any clip."""
    problems: list[str] = []
    for source in sources:
        samples = read_wav(source.path, args.sample_rate)
        plan = _plan(samples, args)
        counts = [(p, c) for p, _audio, c in _clips(samples, plan, args.gain_db) if c]
        if counts:
            used = np.concatenate([clip_at(samples, p.start_sample, plan.clip_samples) for p in plan.clips])
            listed = ", ".join(
                f"{_seconds(p.start_sample, args.sample_rate)} s ({c})" for p, c in counts[:NAMED_CLIPS]
            )
            more = f" and {len(counts) - NAMED_CLIPS} more" if len(counts) > NAMED_CLIPS else ""
            problems.append(
                f"{source.path}: {len(counts)} of {len(plan.clips)} clips would clip (clip start, samples): "
                f"{listed}{more}; at most {max_gain_db(used):+.1f} dB would not clip"
            )
    if problems:
        raise SettingError(
            f"--gain_db {args.gain_db:g} with --no_clip: nothing written; " + "; ".join(problems)
        )


def slice_source(source: Source, args: argparse.Namespace, writer: ClipWriter, totals: Totals) -> None:
    """Cut one input and write its clips; prints its part of the summary as it goes."""
    rate = args.sample_rate
    samples = read_wav(source.path, rate)
    plan = _plan(samples, args)
    out = sys.stdout
    verb = "would write" if args.dry_run else "wrote"
    resampled = "" if source.rate_hz == rate else f"; resampled to {rate} Hz"
    print(f"{source.path}: {source.describe}{resampled}", file=out)
    if plan.heading:
        print(f"  {plan.heading}", file=out)
    names: list[str] = []
    clipped_clips: list[tuple[str, int]] = []
    try:
        for k, (planned, audio, clipped) in enumerate(_clips(samples, plan, args.gain_db), start=1):
            name = writer.relative(writer.write(source.speaker, audio, rate))
            names.append(name)
            totals.clips += 1
            if clipped:
                clipped_clips.append((name, clipped))
            span = (
                f"{_seconds(planned.start_sample, rate)}-"
                f"{_seconds(planned.start_sample + plan.clip_samples, rate)} s"
            )
            if planned.word is not None:
                word = planned.word
                print(
                    f"  word {k}: {_seconds(word.start_sample, rate)}-{_seconds(word.end_sample, rate)} s, "
                    f"centre {_seconds(word.centre_sample, rate)} s -> {name} ({span})"
                    + (f"; {planned.note}" if planned.note else ""),
                    file=out,
                )
            elif planned.note:
                print(f"  {name} ({span}): {planned.note}", file=out)
    finally:
        writer.sync_folder()
        if names:
            listing = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
            clip_ms = _ms(plan.clip_samples, rate)
            print(
                f"  {verb} {len(names)} clip{'s' if len(names) != 1 else ''} of {clip_ms} ms: {listing}",
                file=out,
            )
        elif plan.clips:
            print("  no clips written", file=out)
        else:
            print("  no clips", file=out)
        for skipped in plan.skipped:
            print(
                f"  skipped {_seconds(skipped.start_sample, rate)}-{_seconds(skipped.end_sample, rate)} s: "
                f"{skipped.reason}",
                file=out,
            )
        totals.skipped += len(plan.skipped)
        if clipped_clips:
            totals.clipped_clips += len(clipped_clips)
            used = [clip_at(samples, p.start_sample, plan.clip_samples) for p in plan.clips]
            listed = ", ".join(f"{name} ({count})" for name, count in clipped_clips[:NAMED_CLIPS])
            more = f" and {len(clipped_clips) - NAMED_CLIPS} more" if len(clipped_clips) > NAMED_CLIPS else ""
            log.warning(
                "%s: --gain_db %g clipped samples in %d of %d clips (clip, samples at full scale): %s%s; "
                "at most %+.1f dB would not clip (--no_clip refuses instead)",
                source.path,
                args.gain_db,
                len(clipped_clips),
                len(plan.clips),
                listed,
                more,
                max_gain_db(np.concatenate(used)),
            )
    totals.inputs += 1


SPEAKER_HELP = (
    "speaker name, the part of each file name before _nohash_ (default: the input file's name, "
    "made safe). Training splits clips into training/validation/testing by a hash of this name, "
    "so all clips with one name stay in one partition. That is why the default is per input: "
    "clips cut from one recording (overlapping, same room, same voice) never end up on both "
    "sides of the split, which would make validation and test accuracy look better than they "
    "are. Give the same --speaker for every recording of one person (or one baby) to keep all "
    "of them in one partition too."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/slice.py",
        description=(
            "Cut long WAV recordings into fixed-length clips (--fixed MS) or one clip per word "
            "(--words), written as DATA_DIR/<label>/<speaker>_nohash_<n>.wav (16-bit mono). "
            "Existing files are never overwritten; numbering continues after them."
        ),
        epilog=(
            "exit codes: 0 done, 2 bad command line, 64 a value not accepted (label, speaker, flag, "
            "--no_clip refusal), 65 an input that is not usable audio, 66 an input missing or "
            "unreadable, 73 the output folder cannot be written (clips saved before stay)"
        ),
    )
    add = parser.add_argument
    add("inputs", nargs="+", metavar="INPUT", help="WAV files, or folders (their *.wav files, sorted)")
    add("--out", required=True, type=Path, metavar="DATA_DIR", help="the data folder (created if missing)")
    add("--label", required=True, help="the word or sound: clips go to DATA_DIR/<label>/")
    add("--speaker", metavar="NAME", help=SPEAKER_HELP)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fixed", type=float, metavar="MS", help="cut consecutive clips of MS milliseconds")
    mode.add_argument("--words", action="store_true", help="cut one clip per word found by its energy")
    add("--sample_rate", type=int, default=DEFAULT_SAMPLE_RATE_HZ, metavar="HZ", help="output rate (16000)")
    add("--gain_db", type=float, default=0.0, metavar="DB", help="gain applied to every clip (0)")
    add("--no_clip", action="store_true", help="refuse (write nothing) if --gain_db would clip any sample")
    add("--dry_run", action="store_true", help="write nothing; report what would be written")
    add("-v", "--verbose", action="store_true", help="log more (resampling, ...)")
    fixed = parser.add_argument_group("--fixed")
    fixed.add_argument(
        "--hop_ms", type=float, metavar="MS", help="start a clip every this many ms (default: MS, no overlap)"
    )
    fixed.add_argument(
        "--pad_tail", action="store_true", help="keep the last part shorter than a clip, padded with zeros"
    )
    words = parser.add_argument_group("--words")
    words.add_argument(
        "--clip_duration_ms",
        type=float,
        metavar="MS",
        help=f"length of each clip ({DEFAULT_CLIP_DURATION_MS})",
    )
    words.add_argument(
        "--threshold_db", type=float, metavar="DB", help="a word rises this far above the noise floor (15)"
    )
    words.add_argument(
        "--min_gap_ms", type=float, metavar="MS", help="louder parts closer than this are one word (200)"
    )
    words.add_argument("--min_word_ms", type=float, metavar="MS", help="shorter words are skipped (100)")
    return parser


_WORD_DEFAULTS: Final = {
    "clip_duration_ms": float(DEFAULT_CLIP_DURATION_MS),
    "threshold_db": WordSettings.threshold_db,
    "min_gap_ms": WordSettings.min_gap_ms,
    "min_word_ms": WordSettings.min_word_ms,
}


def check_args(args: argparse.Namespace) -> None:
    """Flag values and combinations; fills in the defaults of the chosen mode."""
    fixed = args.fixed is not None
    if fixed:
        wrong_mode = [f"--{k}" for k in _WORD_DEFAULTS if getattr(args, k) is not None]
    else:
        wrong_mode = ["--hop_ms"] if args.hop_ms is not None else []
        wrong_mode += ["--pad_tail"] if args.pad_tail else []
    if wrong_mode:
        raise SettingError(
            f"{', '.join(wrong_mode)}: only with {'--words' if fixed else '--fixed'} "
            f"(this run uses {'--fixed' if fixed else '--words'})"
        )
    if not 1000 <= args.sample_rate <= 384000:
        raise SettingError(f"--sample_rate: expected 1000..384000 Hz, got {args.sample_rate}")
    if not math.isfinite(args.gain_db) or abs(args.gain_db) > 120:
        raise SettingError(f"--gain_db: expected -120..120 dB, got {args.gain_db:g}")
    if fixed:
        if args.hop_ms is None:
            args.hop_ms = args.fixed
        for flag, value in (("--fixed", args.fixed), ("--hop_ms", args.hop_ms)):
            if not math.isfinite(value) or _samples(value, args.sample_rate) < 1:
                raise SettingError(f"{flag}: expected a duration of at least one sample in ms, got {value:g}")
        return
    for key, default in _WORD_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if not math.isfinite(args.clip_duration_ms) or _samples(args.clip_duration_ms, args.sample_rate) < 1:
        raise SettingError(f"--clip_duration_ms: expected a positive duration, got {args.clip_duration_ms:g}")
    if not math.isfinite(args.threshold_db) or args.threshold_db <= WordSettings.hysteresis_db:
        raise SettingError(
            f"--threshold_db: expected more than {WordSettings.hysteresis_db:g} dB (the hysteresis), "
            f"got {args.threshold_db:g}"
        )
    for flag, value in (("--min_gap_ms", args.min_gap_ms), ("--min_word_ms", args.min_word_ms)):
        if not math.isfinite(value) or value < 0:
            raise SettingError(f"{flag}: expected 0 or more ms, got {value:g}")
    if args.min_word_ms > args.clip_duration_ms:
        raise SettingError(
            f"--min_word_ms {args.min_word_ms:g}: longer than --clip_duration_ms {args.clip_duration_ms:g}"
        )


def run(args: argparse.Namespace) -> int:
    check_args(args)
    label = check_label(args.label, fixed=args.fixed is not None)
    speaker = check_speaker(args.speaker) if args.speaker is not None else None
    sources = open_sources(expand_inputs(args.inputs), speaker, args.sample_rate)
    writer = ClipWriter(args.out / label, args.out, dry_run=args.dry_run)
    writer.prepare()
    if args.no_clip and args.gain_db > 0:
        check_no_clipping(sources, args)
    totals = Totals()
    try:
        for source in sources:
            slice_source(source, args, writer, totals)
    except (KwsdError, KeyboardInterrupt) as err:
        stopped = "interrupted" if isinstance(err, KeyboardInterrupt) else "stopped"
        saved = "would have been written" if args.dry_run else "written and kept"
        print(f"{stopped} after {totals.clips} clips {saved} (in {writer.folder})", file=sys.stdout)
        raise
    verb = "would write" if args.dry_run else "wrote"
    print(
        f"total: {verb} {totals.clips} clip{'s' if totals.clips != 1 else ''} from {totals.inputs} "
        f"input{'s' if totals.inputs != 1 else ''} into {writer.folder}"
        + (f"; {totals.skipped} part{'s' if totals.skipped != 1 else ''} skipped" if totals.skipped else "")
        + (f"; {totals.clipped_clips} clipped by the gain" if totals.clipped_clips else "")
        + ("; dry run: nothing written" if args.dry_run else ""),
        file=sys.stdout,
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_one_blas_thread()  # many tiny per-clip products (kwsd/blas.py)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=f"{TOOL}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except KwsdError as err:
        sys.stdout.flush()
        print(f"{TOOL}: error: {err}", file=sys.stderr)
        return _exit_code(err)


def _exit_code(err: KwsdError) -> int:
    if isinstance(err, SettingError):
        return EXIT_BAD_SETTING
    if isinstance(err, InputNotFoundError):
        return EXIT_NO_INPUT
    if isinstance(err, OutputError):
        return EXIT_CANT_WRITE
    return EXIT_BAD_AUDIO  # AudioFormatError, StreamError


if __name__ == "__main__":
    sys.exit(main())
