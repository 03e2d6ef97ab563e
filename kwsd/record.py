"""Recording training data on the Pi: ``kwsd record`` (also ``tools/record``).

Three modes, all capturing through :class:`kwsd.sources.MicrophoneSource` (the daemon's own
device choice, rate conversion and channel mixing), all writing 16-bit mono WAVs at the
model's rate in the layout training reads:

* ``guided``: for each word of a list and each take, a prompt, a countdown and a live level
  meter, then ``take_ms`` of audio; the word is found by energy and a clip of ``clip_ms`` is
  cut centred on it. A take that is too quiet, clipped, too long for the clip or cut off at the
  edge of the take is refused with the reason and taken again. Saved as
  ``<out>/<label>/<speaker>_nohash_<n>.wav``: the hash split keeps one speaker's clips in one
  partition. A summary of the clips per label ends the session.
* ``background``: one long recording into ``<out>/_background_noise_/<name>.wav`` (for
  augmentation and the silence class).
* ``continuous``: fixed-length chunks back to back, for hours (the nursery workflow), into
  ``<out>/<label>/<prefix>_nohash_<n>.wav``, stopping cleanly on Ctrl-C or SIGTERM, or before
  the disk holds less than ``min_free_mb``.

Never overwrites: a file is written to a temporary name in its folder and linked to the first
free name (``os.link`` fails rather than replace). A stop mid-take leaves no file; a stop in a
long recording or chunk keeps the audio recorded so far as a complete WAV.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt

from kwsd.dataset_layout import BACKGROUND_NOISE_DIR, NOHASH, link_next, save_new
from kwsd.errors import KwsdError, OutputError
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.wordfinder import DropReason, WordSettings, find_words

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]

#: A take whose loudest frame is below this is too quiet to be a word.
QUIET_PEAK_DBFS = -40.0
#: This many samples at (or within one step of) full scale make a take clipped.
CLIPPED_SAMPLES = 3
_FULL_SCALE = 32767

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RecordError(KwsdError):
    """A recording setting that cannot be used (a label or speaker that cannot be a file name)."""


def check_name(what: str, value: str, *, allow_reserved: bool = False) -> str:
    """``value`` as a folder or file name part; RecordError naming it if it cannot be one."""
    if allow_reserved and value == BACKGROUND_NOISE_DIR:
        return value
    if value in (SILENCE_LABEL, UNKNOWN_LABEL):
        raise RecordError(f"{what} {value!r}: reserved for the classes training makes itself")
    if not _NAME.match(value) or value in (".", ".."):
        raise RecordError(
            f"{what} {value!r}: expected letters, digits, '.', '_' or '-', starting with a letter or "
            "digit (it becomes a folder or file name)"
        )
    if NOHASH in value:
        raise RecordError(
            f"{what} {value!r}: must not contain {NOHASH!r} (the split reads the name up to it)"
        )
    return value


# --- finding the word ------------------------------------------------------------------------


@dataclass(frozen=True)
class Take:
    """What a take held: the clip cut from it, or why it was refused."""

    clip: Int16Array | None
    reason: str | None
    peak_dbfs: float
    word_ms: tuple[int, int] | None = None  # start and end of the sound, in the take


def cut_word(
    samples: Int16Array, sample_rate_hz: int, clip_samples: int, settings: WordSettings | None = None
) -> Take:
    """The clip of ``clip_samples`` centred on the energy of the word in ``samples``.

    The word is found by :func:`kwsd.wordfinder.find_words`, the slicer's finder (``settings``;
    their ``max_word_ms`` is the clip's); where it finds several sounds, the loudest is the word.
    """
    peak = int(np.max(np.abs(samples.astype(np.int32)))) if len(samples) else 0
    peak_dbfs = 20 * math.log10(max(peak, 1) / 32768.0)
    if np.count_nonzero(np.abs(samples.astype(np.int32)) >= _FULL_SCALE) >= CLIPPED_SAMPLES:
        return Take(
            None, f"clipped (peak {peak_dbfs:.1f} dBFS): speak softer or turn the gain down", peak_dbfs
        )
    if len(samples) == 0 or peak_dbfs < QUIET_PEAK_DBFS:
        return Take(None, f"too quiet (peak {peak_dbfs:.1f} dBFS): speak up or move closer", peak_dbfs)
    clip_ms = clip_samples * 1000 // sample_rate_hz
    found = find_words(samples, sample_rate_hz, replace(settings or WordSettings(), max_word_ms=clip_ms))
    candidates = found.words or tuple(s for s, why in found.dropped if why is DropReason.TOO_LONG)
    if not candidates:
        return Take(None, f"no word found above the room noise ({found.noise_floor_db:.1f} dBFS)", peak_dbfs)
    word = max(candidates, key=lambda segment: segment.peak_db)
    word_ms = (word.start_sample * 1000 // sample_rate_hz, word.end_sample * 1000 // sample_rate_hz)
    if word.start_sample == 0 or word.end_sample == len(samples):
        return Take(None, "cut off: the word touches the start or end of the take", peak_dbfs, word_ms)
    if word.length_samples > clip_samples:
        too_long = f"too long: {word_ms[1] - word_ms[0]} ms of sound for a {clip_ms} ms clip"
        return Take(None, too_long, peak_dbfs, word_ms)
    start = min(max(0, word.centre_sample - clip_samples // 2), len(samples) - clip_samples)
    start = min(start, word.start_sample)  # the whole word in the clip, however lopsided its energy
    start = max(start, word.end_sample - clip_samples)
    return Take(samples[start : start + clip_samples].copy(), None, peak_dbfs, word_ms)


# --- writing without overwriting: kwsd.dataset_layout.save_new, link_next


class StreamingWav:
    """A WAV written as audio arrives, under a temporary name until :meth:`finish`."""

    def __init__(self, folder: Path, stem: str, sample_rate_hz: int, *, numbered: bool) -> None:
        self.folder, self.stem, self.numbered = folder, stem, numbered
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".recording-", suffix=".wav.part", dir=folder)
        except OSError as err:
            raise OutputError(f"{folder}: cannot write there ({err.strerror or err})") from None
        self.tmp = Path(tmp)
        self._handle = os.fdopen(fd, "wb")
        self._wav = wave.open(self._handle, "wb")  # noqa: SIM115 (closed by finish or discard)
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate_hz)
        self.frames = 0

    def write(self, block: Int16Array) -> None:
        try:
            self._wav.writeframes(np.asarray(block, "<i2").tobytes())
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot write there ({err.strerror or err})") from None
        self.frames += len(block)

    def finish(self) -> Path | None:
        """Close (the header gets its length) and move to the final name; None if empty."""
        try:
            self._wav.close()
            self._handle.close()
            if not self.frames:
                return None
            if self.numbered:
                return link_next(self.tmp, self.folder, self.stem)
            final = self.folder / f"{self.stem}.wav"
            os.link(self.tmp, final)
            return final
        except FileExistsError:
            raise OutputError(f"{self.folder / (self.stem + '.wav')}: exists; not replaced") from None
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot write there ({err.strerror or err})") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._wav.close()
            self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


# --- capture --------------------------------------------------------------------------------


class Capture:
    """Blocks from a source, a level meter, and stop requests (Ctrl-C, SIGTERM)."""

    def __init__(self, source: object, sample_rate_hz: int, out: TextIO, *, meter: bool) -> None:
        self.source = source
        self.sample_rate_hz = sample_rate_hz
        self.out = out
        self.meter = meter
        self.stop = threading.Event()
        #: Audio read past what the last call asked for: the start of the next (no gaps).
        self._pending = np.zeros(0, np.int16)

    def read(self, samples: int, *, label: str = "") -> Int16Array:
        """The next ``samples`` samples (fewer only if stopped), showing the level as it comes.

        Consecutive calls return consecutive audio: nothing between them is lost.
        """
        blocks: list[Int16Array] = [self._pending]
        got = len(self._pending)
        while got < samples and not self.stop.is_set():
            block = self.source.read(0.5)  # type: ignore[attr-defined]
            if block is None:
                continue
            blocks.append(block)
            got += len(block)
            if self.meter:
                self._show(block, label)
        if self.meter:
            self.out.write("\r\x1b[K")
        audio = np.concatenate(blocks)
        self._pending = audio[samples:]
        return audio[:samples]

    def _show(self, block: Int16Array, label: str) -> None:
        peak = int(np.max(np.abs(block.astype(np.int32)))) if len(block) else 0
        dbfs = 20 * math.log10(max(peak, 1) / 32768.0)
        width = 40
        filled = max(0, min(width, int((dbfs + 60) / 60 * width)))
        self.out.write(f"\r{label}[{'#' * filled}{'.' * (width - filled)}] {dbfs:6.1f} dBFS\x1b[K")
        self.out.flush()


@contextlib.contextmanager
def stop_on_signals(capture: Capture) -> Iterator[None]:
    """SIGTERM (and SIGINT) set ``capture.stop`` instead of killing the process mid-write."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: object) -> None:
        capture.stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- the modes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidedSettings:
    words: tuple[str, ...]
    speaker: str
    takes: int = 5
    clip_ms: int = 1000
    take_ms: int = 2000
    countdown_s: int = 3
    retries: int = 3
    ask: bool = True  # False (--yes): no waiting for Enter between words


def guided(
    capture: Capture,
    out_dir: Path,
    settings: GuidedSettings,
    *,
    prompt: Callable[[str], str] = input,
) -> Counter[str]:
    """Record ``takes`` clips of each word; returns the clips saved per label."""
    rate = capture.sample_rate_hz
    clip_samples = rate * settings.clip_ms // 1000
    saved: Counter[str] = Counter()
    say = capture.out
    for word in settings.words:
        folder = out_dir / word
        if settings.ask:
            prompt(f"Next word: '{word}' ({settings.takes} takes). Press Enter when ready. ")
        take = 0
        while take < settings.takes and not capture.stop.is_set():
            for attempt in range(settings.retries + 1):
                for n in range(settings.countdown_s, 0, -1):
                    say.write(f"'{word}' take {take + 1}/{settings.takes} in {n}...\n")
                    say.flush()
                    capture.read(rate, label="  ")  # the meter runs while counting down
                say.write(f"Say '{word}' now\n")
                say.flush()
                audio = capture.read(rate * settings.take_ms // 1000, label=f"{word} ")
                if capture.stop.is_set():
                    say.write("stopped: this take is not saved\n")
                    break
                result = cut_word(audio, rate, clip_samples)
                if result.clip is not None:
                    path = save_new(folder, settings.speaker, result.clip, rate)
                    saved[word] += 1
                    assert result.word_ms is not None
                    say.write(
                        f"saved {path} (sound {result.word_ms[0]}-{result.word_ms[1]} ms of the take)\n"
                    )
                    break
                left = settings.retries - attempt
                say.write(
                    f"take refused: {result.reason}; " + (f"again ({left} left)\n" if left else "skipped\n")
                )
            take += 1
    return saved


def background(capture: Capture, out_dir: Path, name: str, seconds: float) -> Path | None:
    """One long recording (until ``seconds`` or a stop) into ``_background_noise_/<name>.wav``."""
    folder = out_dir / BACKGROUND_NOISE_DIR
    if (folder / f"{name}.wav").exists():
        raise OutputError(f"{folder / (name + '.wav')}: exists; not replaced (choose another --name)")
    writer = StreamingWav(folder, name, capture.sample_rate_hz, numbered=False)
    total = int(seconds * capture.sample_rate_hz)
    try:
        while writer.frames < total and not capture.stop.is_set():
            writer.write(capture.read(min(capture.sample_rate_hz, total - writer.frames), label="noise "))
    except BaseException:
        writer.finish()  # keep what was recorded
        raise
    return writer.finish()


def continuous(
    capture: Capture,
    out_dir: Path,
    *,
    label: str,
    prefix: str,
    chunk_s: float,
    total_s: float | None,
    min_free_mb: int,
) -> list[Path]:
    """Chunks of ``chunk_s`` back to back until ``total_s``, a stop, or the disk fills."""
    folder = out_dir / label
    rate = capture.sample_rate_hz
    chunk = int(chunk_s * rate)
    chunk_bytes = chunk * 2 + 44
    saved: list[Path] = []
    started = time.monotonic()
    while not capture.stop.is_set() and (total_s is None or len(saved) * chunk_s < total_s):
        free = _free_bytes(out_dir)
        if free - chunk_bytes < min_free_mb * 1024 * 1024:
            capture.out.write(
                f"stopping: {free // (1024 * 1024)} MB free on the disk of {out_dir}, "
                f"the guard is {min_free_mb} MB (--min-free-mb)\n"
            )
            break
        writer = StreamingWav(folder, prefix, rate, numbered=True)
        try:
            while writer.frames < chunk and not capture.stop.is_set():
                writer.write(capture.read(min(rate, chunk - writer.frames), label=f"chunk {len(saved) + 1} "))
        except OutputError:
            kept = writer.finish()
            if kept is not None:
                saved.append(kept)
            raise
        path = writer.finish()
        if path is not None:
            saved.append(path)
            capture.out.write(
                f"saved {path} ({writer.frames / rate:.1f} s; {time.monotonic() - started:.0f} s in)\n"
            )
            capture.out.flush()
    return saved


def _free_bytes(path: Path) -> int:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def summary(saved: Counter[str], out_dir: Path) -> str:
    """Clips saved now and in the folder, per label."""
    lines = [f"{'label':<16}{'saved now':>10}{'in folder':>10}"]
    labels = sorted(
        set(saved) | {p.name for p in out_dir.iterdir() if p.is_dir()} if out_dir.exists() else set(saved)
    )
    for label in labels:
        total = len(list((out_dir / label).glob("*.wav")))
        lines.append(f"{label:<16}{saved.get(label, 0):>10}{total:>10}")
    return "\n".join(lines)
