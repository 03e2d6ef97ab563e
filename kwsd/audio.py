"""Audio input: WAV files and stdin, as mono int16 blocks at the rate the model wants.

:func:`open_audio` reads and checks the whole header before it returns, so a bad file fails
before anything runs; :meth:`AudioReader.blocks` then streams the samples in blocks (a WAV
may be hours long and is never loaded whole). :func:`read_wav` is the batch form for
``label-wav`` and training.

What is read:

* WAV (RIFF chunk walk by hand: Python 3.11's ``wave`` refuses float and
  WAVE_FORMAT_EXTENSIBLE): format tag 1 (PCM: 8-bit unsigned, 16/24/32-bit signed),
  tag 3 (IEEE float, 32/64-bit) and tag 0xFFFE (extensible, with a PCM or float subformat).
  Unknown chunks (LIST, fact, ...) are skipped, with RIFF's pad byte after odd sizes.
* stdin (source ``"-"``): a WAV if it starts with ``b"RIFF"`` (arecord's and sox's streaming
  headers carry a placeholder data size; such a stream is read to EOF), otherwise raw signed
  16-bit little-endian at ``raw_rate_hz`` with ``raw_channels`` interleaved.

Conversion to int16 mono (the one rule, used for every encoding but one): each sample is
scaled to a float with int16 full scale at 1.0 (8-bit: ``(x - 128) / 128``, 16-bit:
``x / 32768``, 24-bit: ``x / 2**23``, 32-bit: ``x / 2**31``; float samples are clipped to
[-1, 1] first, NaN read as 0), channels are averaged, the result resampled if the rate
differs, then multiplied by 32768, rounded half to even (``np.rint``) and clipped to
[-32768, 32767]. 16-bit mono at the target rate skips all this and passes through bit-exact.

Resampling uses ``soxr.ResampleStream`` (quality HQ) on float32, imported only when needed.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import shlex
import stat
import struct
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Final, Self

import numpy as np
import numpy.typing as npt

from kwsd.errors import AudioFormatError, InputNotFoundError, StreamError
from kwsd.frontend import INT16_FULL_SCALE

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]
_FloatArray = npt.NDArray[np.float64]

STDIN_SOURCE: Final = "<stdin>"

DEFAULT_BLOCK_SAMPLES: Final = 8000

_RIFF_HEADER_BYTES: Final = 12
_CHUNK_HEADER_BYTES: Final = 8
_FMT_MIN_BYTES: Final = 16
_FMT_EXTENSIBLE_BYTES: Final = 40
_TAG_PCM: Final = 0x0001
_TAG_FLOAT: Final = 0x0003
_TAG_EXTENSIBLE: Final = 0xFFFE
#: KSDATAFORMAT_SUBTYPE_* GUIDs are the format tag in the first 4 bytes, then this.
_SUBFORMAT_GUID_TAIL: Final = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
#: A data size at or above this in a stream is a placeholder ("until EOF"), not a length:
#: arecord writes 0x7FFFFFFF, sox 0x7FFFF000, ffmpeg 0xFFFFFFFF.
_PLACEHOLDER_MIN_BYTES: Final = 0x7FFF0000
#: Bytes read per block before the first sample is wanted, when sniffing stdin.
_SNIFF_BYTES: Final = 4
#: Sample rates a source may declare. Outside them a header is wrong or hostile: at 1 Hz a
#: 400 KB file would resample to 55 hours of 16 kHz audio.
MIN_SAMPLE_RATE_HZ: Final = 1_000
MAX_SAMPLE_RATE_HZ: Final = 384_000


class Encoding(enum.StrEnum):
    """How the source stores a sample. A ``str``: ``Encoding.PCM24 == "pcm24"``."""

    PCM8 = "pcm8"  # unsigned, 128 = silence
    PCM16 = "pcm16"
    PCM24 = "pcm24"
    PCM32 = "pcm32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    RAW_PCM16 = "raw-pcm16"  # headerless stdin: signed 16-bit little-endian

    @property
    def sample_bytes(self) -> int:
        return _SAMPLE_BYTES[self]


_SAMPLE_BYTES: Final = {
    Encoding.PCM8: 1,
    Encoding.PCM16: 2,
    Encoding.PCM24: 3,
    Encoding.PCM32: 4,
    Encoding.FLOAT32: 4,
    Encoding.FLOAT64: 8,
    Encoding.RAW_PCM16: 2,
}
_PCM_ENCODINGS: Final = {
    8: Encoding.PCM8,
    16: Encoding.PCM16,
    24: Encoding.PCM24,
    32: Encoding.PCM32,
}
_FLOAT_ENCODINGS: Final = {32: Encoding.FLOAT32, 64: Encoding.FLOAT64}

_FORMAT_TAG_NAMES: Final = {
    0x0000: "unknown",
    0x0001: "PCM",
    0x0002: "Microsoft ADPCM",
    0x0003: "IEEE float",
    0x0006: "A-law",
    0x0007: "mu-law",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0040: "G.721 ADPCM",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x0092: "Dolby AC-3 SPDIF",
    0x0161: "Windows Media Audio",
    0x00FF: "AAC",
    0x1610: "HE-AAC",
    0x2000: "AC-3",
    0xF1AC: "FLAC",
    _TAG_EXTENSIBLE: "WAVE_FORMAT_EXTENSIBLE",
}

#: Other containers that are sometimes piped in by mistake: refused rather than read as noise.
_STREAM_MAGIC: Final = {b"ID3": "MP3", b"fLaC": "FLAC", b"OggS": "Ogg", b"FORM": "AIFF"}


@dataclass(frozen=True)
class AudioInfo:
    """What the source holds, as its header (or the raw-stdin options) said."""

    source: str  # the path, or "<stdin>"
    sample_rate_hz: int  # of the source, before any resampling
    channels: int
    encoding: str  # an Encoding: "pcm8", "pcm16", "pcm24", "pcm32", "float32", "float64", "raw-pcm16"
    frames: int | None  # sample frames in the file; None when not known (stdin, pipes)

    def describe(self) -> str:
        """One line for logs, e.g. ``"44100 Hz, 2 channels, pcm24"``."""
        plural = "" if self.channels == 1 else "s"
        return f"{self.sample_rate_hz} Hz, {self.channels} channel{plural}, {self.encoding}"


class _ByteStream:
    """A binary file or pipe with a position count, and bytes already read put back in front.

    ``live`` streams (stdin, FIFOs) are read with ``read1``: whatever has arrived, so a live
    pipe is not held back waiting for a whole block.
    """

    def __init__(self, raw: BinaryIO, *, live: bool, pushed_back: bytes = b"") -> None:
        self.raw = raw
        self.live = live
        self.position = 0  # bytes handed out so far
        self._pushed_back = pushed_back
        reader: Callable[[int], bytes] | None = getattr(raw, "read1", None) if live else None
        self._read_some: Callable[[int], bytes] = reader if reader is not None else raw.read

    def read_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` (at least 1 unless at EOF); ``b""`` only at EOF."""
        if self._pushed_back:
            data, self._pushed_back = (
                self._pushed_back[:max_bytes],
                self._pushed_back[max_bytes:],
            )
            if len(data) < max_bytes:
                # Not a block of its own: the sniffed bytes go out with whatever follows.
                data += self._read_some(max_bytes - len(data))
        else:
            data = self._read_some(max_bytes)
        self.position += len(data)
        return data

    def read_exact(self, count_bytes: int) -> bytes:
        """Exactly ``count_bytes``, or fewer only at EOF."""
        parts: list[bytes] = []
        missing = count_bytes
        while missing > 0:
            data = self.read_some(missing)
            if not data:
                break
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    def skip(self, count_bytes: int) -> int:
        """Skip ``count_bytes``; returns how many were really there (fewer only at EOF)."""
        if self.live or self._pushed_back:
            skipped = 0
            while skipped < count_bytes:
                data = self.read_some(min(count_bytes - skipped, 1 << 16))
                if not data:
                    break
                skipped += len(data)
            return skipped
        size_bytes = os.fstat(self.raw.fileno()).st_size
        skipped = max(0, min(count_bytes, size_bytes - self.position))
        self.raw.seek(self.position + skipped)
        self.position += skipped
        return skipped


@dataclass(frozen=True)
class _WavFormat:
    encoding: Encoding
    channels: int
    sample_rate_hz: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.encoding.sample_bytes


class AudioReader:
    """A source opened by :func:`open_audio`, read once through :meth:`blocks`.

    Not thread-safe: one thread iterates it. Closing it closes the file it opened (never
    stdin or a stream passed in). Use as a context manager.
    """

    def __init__(
        self,
        info: AudioInfo,
        target_rate_hz: int,
        stream: _ByteStream,
        *,
        frame_bytes: int,
        data_bytes: int | None,
        declared_data_bytes: int | None,
        owns_stream: bool,
    ) -> None:
        """Made by :func:`open_audio`. ``data_bytes`` is the audio left to read (None: to EOF)."""
        self.info = info
        self.target_rate_hz = target_rate_hz
        self._encoding = Encoding(info.encoding)
        self._stream = stream
        self._frame_bytes = frame_bytes
        self._data_bytes = data_bytes
        self._declared_data_bytes = declared_data_bytes
        self._owns_stream = owns_stream
        self._started = False
        self._closed = False
        self._clipped_samples = 0
        self._clipping_reported = False
        if info.sample_rate_hz != target_rate_hz:
            log.info(
                "%s: resampling from %d Hz to %d Hz",
                info.source,
                info.sample_rate_hz,
                target_rate_hz,
            )

    @property
    def resampling(self) -> bool:
        return self.info.sample_rate_hz != self.target_rate_hz

    def blocks(self, block_samples: int = DEFAULT_BLOCK_SAMPLES) -> Iterator[Int16Array]:
        """Mono int16 at ``target_rate_hz``, in blocks of about ``block_samples``.

        Every block is non-empty. From a file, every block holds exactly ``block_samples``
        samples but the last, which may be shorter. From a live stream (stdin, a FIFO) a block
        holds whatever had arrived, at most ``block_samples``.
        A clean end of the source ends the iterator. A stream that ends inside a frame yields
        every complete sample, then raises :class:`StreamError`. Can be iterated only once.
        """
        if isinstance(block_samples, bool) or not isinstance(block_samples, int):
            raise TypeError(f"block_samples: expected an int, got {block_samples!r}")
        if block_samples <= 0:
            raise ValueError(f"block_samples: expected a positive count, got {block_samples}")
        if self._started:
            raise RuntimeError(f"{self.info.source}: AudioReader.blocks() can be iterated once")
        if self._closed:
            raise RuntimeError(f"{self.info.source}: AudioReader is closed")
        self._started = True
        return self._generate(block_samples)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._report_clipping()
        if self._owns_stream:
            self._stream.raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # The streaming loop.

    def _generate(self, block_samples: int) -> Iterator[Int16Array]:
        """Re-cut the converted audio: exact blocks from a file, what has arrived from a pipe."""
        pieces = self._converted(block_samples)
        if self._stream.live:
            for piece in pieces:
                for start in range(0, len(piece), block_samples):
                    yield piece[start : start + block_samples]
            return
        pending = np.zeros(0, np.int16)
        try:
            for piece in pieces:
                pending = np.concatenate((pending, piece)) if pending.size else piece
                while len(pending) >= block_samples:
                    yield pending[:block_samples]
                    pending = pending[block_samples:]
        except StreamError:
            if pending.size:  # every complete sample goes out before the error
                yield pending
            raise
        if pending.size and not self._closed:
            yield pending

    def _converted(self, block_samples: int) -> Iterator[Int16Array]:
        """Non-empty int16 arrays of any length, in order; raises StreamError at the end."""
        info = self.info
        frame_bytes = self._frame_bytes
        if self.resampling:
            read_frames = math.ceil(block_samples * info.sample_rate_hz / self.target_rate_hz)
        else:
            read_frames = block_samples
        read_bytes = read_frames * frame_bytes
        resampler = _make_resampler(info.sample_rate_hz, self.target_rate_hz)
        remaining = self._data_bytes
        carry = b""
        got_bytes = 0
        while not self._closed:
            want = max(read_bytes - len(carry), 1)
            if remaining is not None:
                want = min(want, remaining)
                if want == 0:
                    break
            try:
                chunk = self._stream.read_some(want)
            except OSError as err:
                raise StreamError(
                    f"{info.source}: read failed after {self._stream.position} bytes ({err.strerror or err})"
                ) from None
            if not chunk:
                break
            got_bytes += len(chunk)
            if remaining is not None:
                remaining -= len(chunk)
            data = carry + chunk if carry else chunk
            usable = len(data) - len(data) % frame_bytes
            carry = data[usable:]
            if usable == 0:
                continue
            converted = self._convert(data[:usable], resampler)
            if converted.size:
                yield converted
        if self._closed:
            return
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if tail.size:
                yield float_to_int16(tail)
        self._report_clipping()
        if carry:
            trailing = len(carry)
            where = "mid-sample" if trailing % self._encoding.sample_bytes else "mid-frame"
            raise StreamError(
                f"{info.source}: stream ended {where}: {trailing} trailing "
                f"byte{'' if trailing == 1 else 's'} dropped (expected whole "
                f"{frame_bytes}-byte frames, {info.channels} x {info.encoding})"
            )
        if remaining:
            log.warning(
                "%s: header said %d bytes of audio, the %s had %d; using what is there",
                info.source,
                self._declared_data_bytes,
                "stream" if self._stream.live else "file",
                got_bytes,
            )
        elif got_bytes == 0:
            raise AudioFormatError(f"{info.source}: no audio samples (the stream ended before the first one)")

    def _convert(self, data: bytes, resampler: Any) -> Int16Array:
        """Whole frames of source bytes -> mono int16 at the target rate (may be empty)."""
        encoding = self._encoding
        pcm16 = encoding in (Encoding.PCM16, Encoding.RAW_PCM16)
        if resampler is None and self.info.channels == 1 and pcm16:
            # The bit-exact path: no float round trip.
            return np.frombuffer(data, dtype="<i2").astype(np.int16)
        mono = self._decode_mono(data)
        if resampler is None:
            return float_to_int16(mono)
        return float_to_int16(resampler.resample_chunk(mono.astype(np.float32)))

    def _decode_mono(self, data: bytes) -> _FloatArray:
        """Whole frames -> float64 mono, int16 full scale at 1.0 (channels averaged)."""
        encoding = self._encoding
        values: _FloatArray
        if encoding is Encoding.PCM8:
            values = (np.frombuffer(data, np.uint8).astype(np.float64) - 128.0) / 128.0
        elif encoding in (Encoding.PCM16, Encoding.RAW_PCM16):
            values = np.frombuffer(data, "<i2") / INT16_FULL_SCALE
        elif encoding is Encoding.PCM24:
            triples = np.frombuffer(data, np.uint8).reshape(-1, 3)
            padded = np.zeros((len(triples), 4), np.uint8)
            padded[:, 1:] = triples  # low byte zero: the int32 is the sample << 8, sign intact
            values = (padded.view("<i4")[:, 0] >> 8) / float(1 << 23)
        elif encoding is Encoding.PCM32:
            values = np.frombuffer(data, "<i4") / float(1 << 31)
        else:
            raw = np.frombuffer(data, "<f4" if encoding is Encoding.FLOAT32 else "<f8")
            values = raw.astype(np.float64)
            out_of_range = ~(np.abs(values) <= 1.0)  # NaN counts too
            clipped = int(np.count_nonzero(out_of_range))
            if clipped:
                self._clipped_samples += clipped
                values = np.clip(np.nan_to_num(values, nan=0.0), -1.0, 1.0)
        channels = self.info.channels
        if channels == 1:
            return values
        mixed: _FloatArray = values.reshape(-1, channels).mean(axis=1)
        return mixed

    def _report_clipping(self) -> None:
        if self._clipped_samples and not self._clipping_reported:
            self._clipping_reported = True
            log.warning(
                "%s: %d float samples outside [-1, 1] (or NaN) were clipped",
                self.info.source,
                self._clipped_samples,
            )


def float_to_int16(samples: npt.NDArray[np.floating[Any]]) -> Int16Array:
    """Full scale 1.0 -> int16: times 32768, round half to even, clip to [-32768, 32767]."""
    scaled = np.rint(np.asarray(samples, np.float64) * INT16_FULL_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def write_wav(path: str | os.PathLike[str], samples: Int16Array, sample_rate_hz: int) -> None:
    """Write mono int16 samples as a 16-bit PCM WAV (what every kwsd tool writes)."""
    import wave

    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate_hz)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def _make_resampler(source_rate_hz: int, target_rate_hz: int) -> Any:
    if source_rate_hz == target_rate_hz:
        return None
    import soxr  # only when resampling: keeps `import kwsd.audio` cheap

    return soxr.ResampleStream(source_rate_hz, target_rate_hz, 1, dtype="float32", quality="HQ")


# --------------------------------------------------------------------------------------
# Opening.


def open_audio(
    source: str | os.PathLike[str],
    target_rate_hz: int,
    *,
    raw_rate_hz: int | None = None,
    raw_channels: int = 1,
    stdin: BinaryIO | None = None,
) -> AudioReader:
    """Open a WAV file, or stdin for ``source == "-"``, and check its whole header.

    Header problems raise here, before any block is produced: :class:`InputNotFoundError`
    (missing, a directory, unreadable) or :class:`AudioFormatError` (not a WAV, an
    unsupported encoding, no audio samples, ...). ``stdin`` defaults to
    ``sys.stdin.buffer``; on stdin, a stream not starting with ``b"RIFF"`` is raw signed
    16-bit little-endian at ``raw_rate_hz`` (default ``target_rate_hz``) with
    ``raw_channels`` interleaved. Opening stdin blocks until its first 4 bytes (or EOF)
    arrive. A path that is not a regular file (a FIFO, ``/dev/stdin``) is read as a
    streamed WAV.
    """
    if isinstance(target_rate_hz, bool) or not isinstance(target_rate_hz, int):
        raise TypeError(f"target_rate_hz: expected an int, got {target_rate_hz!r}")
    if target_rate_hz <= 0:
        raise ValueError(f"target_rate_hz: expected a positive rate, got {target_rate_hz}")
    path = os.fspath(source)
    if path == "-":
        return _open_stdin(
            stdin if stdin is not None else sys.stdin.buffer,
            target_rate_hz,
            raw_rate_hz=target_rate_hz if raw_rate_hz is None else raw_rate_hz,
            raw_channels=raw_channels,
        )
    return _open_file(path, target_rate_hz)


def read_wav(
    path: str | os.PathLike[str], target_rate_hz: int, *, max_samples: int | None = None
) -> Int16Array:
    """The file as mono int16 at ``target_rate_hz`` (for label-wav and training): all of it,
    or its first ``max_samples`` only, the rest never read (``label-wav - </dev/zero`` needs
    one clip and reads one clip).

    Same checks and conversion as :func:`open_audio`; ``"-"`` reads stdin to EOF or to
    ``max_samples``.
    """
    block = 1 << 16 if max_samples is None else max(1, min(1 << 16, max_samples))
    blocks: list[Int16Array] = []
    held = 0
    with open_audio(path, target_rate_hz) as reader:
        for samples in reader.blocks(block):
            blocks.append(samples)
            held += len(samples)
            if max_samples is not None and held >= max_samples:
                break
    if not blocks:
        return np.zeros(0, np.int16)
    return np.concatenate(blocks)[:max_samples]


def _open_file(path: str, target_rate_hz: int) -> AudioReader:
    try:
        raw = open(path, "rb")  # noqa: SIM115 (the reader owns it and closes it)
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such file (expected a WAV file)") from None
    except IsADirectoryError:
        raise InputNotFoundError(f"{path}: is a directory (expected a WAV file)") from None
    except PermissionError:
        raise InputNotFoundError(f"{path}: cannot read it (permission denied)") from None
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot open it ({err.strerror or err})") from None
    try:
        return _open_wav_file(raw, path, target_rate_hz)
    except BaseException:
        raw.close()
        raise


def _open_wav_file(raw: BinaryIO, path: str, target_rate_hz: int) -> AudioReader:
    file_stat = os.fstat(raw.fileno())
    if stat.S_ISDIR(file_stat.st_mode):  # open() of a directory succeeds on some systems
        raise InputNotFoundError(f"{path}: is a directory (expected a WAV file)")
    if not stat.S_ISREG(file_stat.st_mode):
        stream = _ByteStream(raw, live=True)
        wav, declared = _read_wav_header(stream, path, size_bytes=None)
        return _stream_wav_reader(stream, path, wav, declared, target_rate_hz, owns_stream=True)
    if file_stat.st_size == 0:
        raise AudioFormatError(f"{path}: empty file (0 bytes, expected a WAV file)")
    stream = _ByteStream(raw, live=False)
    wav, declared = _read_wav_header(stream, path, size_bytes=file_stat.st_size)
    available = file_stat.st_size - stream.position
    data_bytes = declared
    if declared == 0 and available > 0:
        log.warning(
            "%s: data chunk size is 0 but %d bytes follow; reading them as audio "
            "(a streaming header that was never fixed up)",
            path,
            available,
        )
        data_bytes = available
    elif declared > available:
        if declared >= _PLACEHOLDER_MIN_BYTES:
            log.info(
                "%s: data size 0x%X is a streaming placeholder; reading to the end of the file",
                path,
                declared,
            )
        else:
            log.warning(
                "%s: header said %d bytes of audio, file has %d (a recording cut off?); using what is there",
                path,
                declared,
                available,
            )
        data_bytes = available
    trailing = data_bytes % wav.frame_bytes
    if trailing:
        log.warning(
            "%s: dropping a trailing partial frame (%d of %d bytes)",
            path,
            trailing,
            wav.frame_bytes,
        )
        data_bytes -= trailing
    if data_bytes == 0:
        raise AudioFormatError(
            f"{path}: no audio samples (the data chunk holds {declared} bytes and the file "
            f"{available} after it; expected at least one {wav.frame_bytes}-byte frame)"
        )
    info = AudioInfo(path, wav.sample_rate_hz, wav.channels, wav.encoding, data_bytes // wav.frame_bytes)
    log.debug("%s: %s, %d frames", path, info.describe(), info.frames)
    return AudioReader(
        info,
        target_rate_hz,
        stream,
        frame_bytes=wav.frame_bytes,
        data_bytes=data_bytes,
        declared_data_bytes=declared,
        owns_stream=True,
    )


def _open_stdin(raw: BinaryIO, target_rate_hz: int, *, raw_rate_hz: int, raw_channels: int) -> AudioReader:
    source = STDIN_SOURCE
    for name, value in (("raw_rate_hz", raw_rate_hz), ("raw_channels", raw_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise AudioFormatError(f"{source}: {name}: expected a positive integer, got {value!r}")
    if not MIN_SAMPLE_RATE_HZ <= raw_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise AudioFormatError(
            f"{source}: raw_rate_hz: expected {MIN_SAMPLE_RATE_HZ:,} to {MAX_SAMPLE_RATE_HZ:,} Hz, "
            f"got {raw_rate_hz}"
        )
    sniff = _ByteStream(raw, live=True)
    head = sniff.read_exact(_SNIFF_BYTES)
    stream = _ByteStream(raw, live=True, pushed_back=head)
    if head in (b"RIFF", b"RIFX", b"RF64"):
        wav, declared = _read_wav_header(stream, source, size_bytes=None)
        return _stream_wav_reader(stream, source, wav, declared, target_rate_hz, owns_stream=False)
    for magic, kind in _STREAM_MAGIC.items():
        if head.startswith(magic):
            raise AudioFormatError(
                f"{source}: starts with {head!r} ({kind}), expected a WAV or raw signed "
                f"16-bit PCM; convert it with: sox -t {kind.lower()} - -b 16 -t wav -"
            )
    info = AudioInfo(source, raw_rate_hz, raw_channels, Encoding.RAW_PCM16, None)
    log.debug("%s: raw PCM, %s", source, info.describe())
    return AudioReader(
        info,
        target_rate_hz,
        stream,
        frame_bytes=2 * raw_channels,
        data_bytes=None,
        declared_data_bytes=None,
        owns_stream=False,
    )


def _stream_wav_reader(
    stream: _ByteStream,
    source: str,
    wav: _WavFormat,
    declared: int,
    target_rate_hz: int,
    *,
    owns_stream: bool,
) -> AudioReader:
    """A WAV read from a pipe: a real data size is honoured, a placeholder means until EOF."""
    data_bytes: int | None = declared
    if declared == 0 or declared >= _PLACEHOLDER_MIN_BYTES:
        log.debug("%s: data size 0x%X is a streaming placeholder; reading to EOF", source, declared)
        data_bytes = None
    elif declared % wav.frame_bytes:
        trailing = declared % wav.frame_bytes
        log.warning(
            "%s: data size %d is not whole %d-byte frames; dropping the last %d bytes",
            source,
            declared,
            wav.frame_bytes,
            trailing,
        )
        data_bytes = declared - trailing
    info = AudioInfo(source, wav.sample_rate_hz, wav.channels, wav.encoding, None)
    log.debug("%s: %s", source, info.describe())
    return AudioReader(
        info,
        target_rate_hz,
        stream,
        frame_bytes=wav.frame_bytes,
        data_bytes=data_bytes,
        declared_data_bytes=declared,
        owns_stream=owns_stream,
    )


# --------------------------------------------------------------------------------------
# The header.


def _convert_hint(source: str) -> str:
    source_arg = "IN" if source == STDIN_SOURCE else shlex.quote(source)
    return f"convert it with: sox {source_arg} -b 16 OUT.wav"


def _read_wav_header(stream: _ByteStream, source: str, *, size_bytes: int | None) -> tuple[_WavFormat, int]:
    """Walk the chunks up to the data chunk; returns the format and the declared data size.

    Leaves ``stream`` at the first audio byte.
    """
    head = stream.read_exact(_RIFF_HEADER_BYTES)
    if len(head) == 0:
        raise AudioFormatError(f"{source}: empty (0 bytes, expected a WAV file)")
    magic, form = head[:4], head[8:12]
    if magic == b"RIFX":
        raise AudioFormatError(f"{source}: big-endian WAV (RIFX) is not supported; {_convert_hint(source)}")
    if magic == b"RF64":
        raise AudioFormatError(f"{source}: RF64 WAV is not supported; {_convert_hint(source)}")
    if magic != b"RIFF":
        raise AudioFormatError(f"{source}: not a WAV file (starts with {magic!r}, expected b'RIFF')")
    if len(head) < _RIFF_HEADER_BYTES:
        raise AudioFormatError(
            f"{source}: WAV header cut off after {len(head)} bytes (expected b'RIFF', size, b'WAVE')"
        )
    if form != b"WAVE":
        raise AudioFormatError(f"{source}: not a WAV file (a RIFF file of type {form!r}, expected b'WAVE')")
    wav: _WavFormat | None = None
    while True:
        chunk_start = stream.position
        chunk_header = stream.read_exact(_CHUNK_HEADER_BYTES)
        if len(chunk_header) < _CHUNK_HEADER_BYTES:
            ends = f"ends after {chunk_start + len(chunk_header)} bytes"
            if wav is None:
                raise AudioFormatError(f"{source}: no fmt chunk (the WAV {ends})")
            raise AudioFormatError(f"{source}: no data chunk (the WAV {ends})")
        chunk_id, chunk_bytes = struct.unpack("<4sI", chunk_header)
        if chunk_id == b"data":
            if wav is None:
                raise AudioFormatError(f"{source}: no fmt chunk before the data chunk (expected fmt first)")
            return wav, chunk_bytes
        if chunk_id == b"fmt ":
            body = stream.read_exact(chunk_bytes)
            if len(body) < chunk_bytes:
                raise AudioFormatError(f"{source}: fmt chunk cut off ({len(body)} of {chunk_bytes} bytes)")
            wav = _parse_fmt(body, source)
            stream.skip(chunk_bytes & 1)
        else:
            log.debug("%s: skipping %r chunk (%d bytes)", source, chunk_id, chunk_bytes)
            stream.skip(chunk_bytes + (chunk_bytes & 1))


def _tag_name(tag: int) -> str:
    return f"format tag {tag} ({_FORMAT_TAG_NAMES.get(tag, 'unknown')})"


def _parse_fmt(body: bytes, source: str) -> _WavFormat:
    if len(body) < _FMT_MIN_BYTES:
        raise AudioFormatError(
            f"{source}: fmt chunk is {len(body)} bytes (expected at least {_FMT_MIN_BYTES})"
        )
    tag, channels, rate_hz, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:_FMT_MIN_BYTES])
    described = _tag_name(tag)
    if tag == _TAG_EXTENSIBLE:
        if len(body) < _FMT_EXTENSIBLE_BYTES:
            raise AudioFormatError(
                f"{source}: WAVE_FORMAT_EXTENSIBLE fmt chunk is {len(body)} bytes "
                f"(expected {_FMT_EXTENSIBLE_BYTES})"
            )
        guid = body[24:40]
        if guid[4:] != _SUBFORMAT_GUID_TAIL:
            raise AudioFormatError(
                f"{source}: unsupported WAV encoding: WAVE_FORMAT_EXTENSIBLE with subformat "
                f"{{{uuid.UUID(bytes_le=guid)}}}; {_convert_hint(source)}"
            )
        (tag,) = struct.unpack("<I", guid[:4])
        described = f"WAVE_FORMAT_EXTENSIBLE with subformat {_tag_name(tag)}"
        # wValidBitsPerSample < container bits (20 in 24) is left-justified: read as the container.
    if tag == _TAG_PCM:
        encoding = _PCM_ENCODINGS.get(bits)
        if encoding is None:
            raise AudioFormatError(
                f"{source}: {bits}-bit PCM is not supported (expected 8, 16, 24 or 32 bits); "
                f"{_convert_hint(source)}"
            )
    elif tag == _TAG_FLOAT:
        encoding = _FLOAT_ENCODINGS.get(bits)
        if encoding is None:
            raise AudioFormatError(
                f"{source}: {bits}-bit IEEE float is not supported (expected 32 or 64 bits); "
                f"{_convert_hint(source)}"
            )
    else:
        raise AudioFormatError(
            f"{source}: unsupported WAV encoding: {described} (expected PCM or IEEE float); "
            f"{_convert_hint(source)}"
        )
    if channels == 0:
        raise AudioFormatError(f"{source}: fmt chunk says 0 channels (expected at least 1)")
    if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise AudioFormatError(
            f"{source}: fmt chunk says a sample rate of {rate_hz} Hz (expected "
            f"{MIN_SAMPLE_RATE_HZ:,} to {MAX_SAMPLE_RATE_HZ:,} Hz)"
        )
    wav = _WavFormat(encoding, channels, rate_hz)
    if block_align != wav.frame_bytes:
        raise AudioFormatError(
            f"{source}: fmt chunk block_align is {block_align} bytes (expected {wav.frame_bytes}"
            f" for {channels} channel{'' if channels == 1 else 's'} of {bits}-bit {encoding})"
        )
    return wav


class PcmConverter:
    """Raw little-endian PCM in pieces of any size -> mono int16 at ``target_rate_hz``.

    For audio that comes as bytes with its format stated beside it (a Wyoming stream):
    signed integer samples of ``width_bytes`` 1, 2 or 4 (1 is signed 8-bit, as Python's
    ``audioop`` and Wyoming's own converter read it, not WAV's unsigned 8-bit),
    ``channels`` interleaved. The conversion is the module's one rule (channels averaged,
    soxr HQ when the rate differs, ``float_to_int16``); 16-bit mono at the target rate passes
    through bit-exact. A piece need not hold whole frames: the rest waits for the next.

    Not thread-safe: one thread at a time converts (it may be a different one each call).
    """

    WIDTHS_BYTES: Final = (1, 2, 4)

    def __init__(self, rate_hz: int, width_bytes: int, channels: int, target_rate_hz: int) -> None:
        if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:
            raise AudioFormatError(
                f"rate: expected {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz, got {rate_hz}"
            )
        if width_bytes not in self.WIDTHS_BYTES:
            raise AudioFormatError(f"width: expected 1, 2 or 4 bytes per sample, got {width_bytes}")
        if channels < 1:
            raise AudioFormatError(f"channels: expected at least 1, got {channels}")
        self.rate_hz = rate_hz
        self.width_bytes = width_bytes
        self.channels = channels
        self.target_rate_hz = target_rate_hz
        self._frame_bytes = width_bytes * channels
        self._resampler = _make_resampler(rate_hz, target_rate_hz)
        self._carry = b""

    def convert(self, data: bytes) -> Int16Array:
        """The samples of every whole frame so far (may be empty: the resampler holds some back)."""
        if self._carry:
            data = self._carry + data
        usable = len(data) - len(data) % self._frame_bytes
        self._carry = data[usable:]
        whole = data[:usable]
        if self._resampler is None and self.channels == 1 and self.width_bytes == 2:
            return np.frombuffer(whole, "<i2").astype(np.int16)  # bit-exact
        dtype = {1: "i1", 2: "<i2", 4: "<i4"}[self.width_bytes]
        values = np.frombuffer(whole, dtype) / float(1 << (8 * self.width_bytes - 1))
        mono = values if self.channels == 1 else values.reshape(-1, self.channels).mean(axis=1)
        if self._resampler is None:
            return float_to_int16(mono)
        return float_to_int16(self._resampler.resample_chunk(mono.astype(np.float32)))

    def flush(self) -> Int16Array:
        """What the resampler still holds, at the end of the stream (a partial frame is dropped)."""
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, np.int16)
        return float_to_int16(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
