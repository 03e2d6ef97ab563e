"""kwsd.audio: WAV parsing, conversion to int16 mono, resampling, stdin, and every error.

Fixtures are written into tmp_path by tests/wavgen.py (our own writer) and by sox (a writer
that is not ours), so the parser is not only checked against its own idea of a WAV.
Rounding bound: conversions that round (24/32-bit, float, channel means) are asserted
exactly against the documented rule (times 32768, round half to even, clip), and within
1 LSB of the true value (the 1 is only reached where full scale clips to 32767).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import wavgen

from kwsd.audio import AudioInfo, Encoding, open_audio, read_wav, write_wav
from kwsd.errors import AudioFormatError, InputNotFoundError, StreamError

RATE_HZ = 16000
SOX = "/usr/bin/sox"


def rint_clip(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), -32768, 32767).astype(np.int16)


def collect(reader, block_samples: int = 8000) -> list[np.ndarray]:
    return list(reader.blocks(block_samples))


def sox(*args: str | Path) -> None:
    subprocess.run([SOX, *map(str, args)], check=True, capture_output=True)


# --------------------------------------------------------------------------------------
# Round trips at the target rate.


def test_pcm16_mono_at_target_rate_is_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = np.concatenate(
        ([-32768, -32767, -1, 0, 1, 32766, 32767], rng.integers(-32768, 32768, 20000))
    ).astype(np.int16)
    path = wavgen.write_wav(tmp_path / "a.wav", samples, RATE_HZ, "pcm16")
    out = read_wav(path, RATE_HZ)
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, samples)
    with open_audio(path, RATE_HZ) as reader:
        assert reader.info == AudioInfo(str(path), RATE_HZ, 1, "pcm16", len(samples))
        assert reader.info.describe() == "16000 Hz, 1 channel, pcm16"


def test_pcm8_is_shifted_exactly(tmp_path: Path) -> None:
    samples = np.arange(256, dtype=np.uint8)
    path = wavgen.write_wav(tmp_path / "a.wav", samples, RATE_HZ, "pcm8")
    expected = ((samples.astype(np.int16) - 128) << 8).astype(np.int16)
    np.testing.assert_array_equal(read_wav(path, RATE_HZ), expected)


@pytest.mark.parametrize("extensible", [False, True])
def test_pcm24_rounds_half_to_even(tmp_path: Path, extensible: bool) -> None:
    rng = np.random.default_rng(2)
    edges = [-(1 << 23), (1 << 23) - 1, 0, 128, 384, -128, -384, 127, 129, 255]
    values = np.concatenate((edges, rng.integers(-(1 << 23), 1 << 23, 5000))).astype(np.int32)
    path = wavgen.write_wav(tmp_path / "a.wav", values, RATE_HZ, "pcm24", extensible=extensible)
    out = read_wav(path, RATE_HZ)
    np.testing.assert_array_equal(out, rint_clip(values / 256))
    assert out[3:7].tolist() == [0, 2, 0, -2]  # 0.5 -> 0, 1.5 -> 2: half to even
    assert np.abs(out - values / 256).max() <= 1.0


def test_pcm32(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    edges = [-(1 << 31), (1 << 31) - 1, 0, 32768, 3 * 32768]
    values = np.concatenate((edges, rng.integers(-(1 << 31), 1 << 31, 5000))).astype(np.int32)
    path = wavgen.write_wav(tmp_path / "a.wav", values, RATE_HZ, "pcm32")
    out = read_wav(path, RATE_HZ)
    np.testing.assert_array_equal(out, rint_clip(values / 65536))
    assert out[3:5].tolist() == [0, 2]
    assert np.abs(out - values / 65536).max() <= 1.0


@pytest.mark.parametrize("encoding", ["float32", "float64"])
@pytest.mark.parametrize("extensible", [False, True])
def test_float_scales_by_32768_and_clips_with_one_warning(
    tmp_path: Path, encoding: str, extensible: bool, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(4)
    in_range = rng.uniform(-1, 1, 5000)
    outside = [1.0, -1.0, 1.5, -2.0, np.nan, np.inf, 0.5 / 32768, 1.5 / 32768]
    values = np.concatenate((outside, in_range))
    path = wavgen.write_wav(tmp_path / "a.wav", values, RATE_HZ, encoding, extensible=extensible)
    logs = caplog.at_level(logging.WARNING, logger="kwsd.audio")
    with logs, open_audio(path, RATE_HZ) as reader:
        out = np.concatenate(collect(reader, 1000))  # clipping counted over all blocks
    assert out[:8].tolist() == [32767, -32768, 32767, -32768, 0, 32767, 0, 2]
    stored = values[8:].astype(np.float32 if encoding == "float32" else np.float64)
    np.testing.assert_array_equal(out[8:], rint_clip(stored.astype(np.float64) * 32768))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{path}: 4 float samples outside [-1, 1] (or NaN) were clipped"]


def test_float_without_clipping_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = wavgen.write_wav(tmp_path / "a.wav", wavgen.sine(440, 0.1, RATE_HZ), RATE_HZ, "float32")
    with caplog.at_level(logging.DEBUG, logger="kwsd.audio"):
        read_wav(path, RATE_HZ)
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_stereo_pcm16_is_the_mean_rounded_half_to_even(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    frames = np.concatenate(
        (
            [[1, 2], [3, 4], [-1, -2], [32767, 32767], [-32768, -32768], [32767, -32768]],
            rng.integers(-32768, 32768, (4000, 2)),
        )
    ).astype(np.int16)
    path = wavgen.write_wav(tmp_path / "a.wav", frames, RATE_HZ, "pcm16")
    out = read_wav(path, RATE_HZ)
    assert out[:6].tolist() == [2, 4, -2, 32767, -32768, 0]  # 1.5 -> 2, 3.5 -> 4, -1.5 -> -2
    np.testing.assert_array_equal(out, rint_clip(frames.astype(np.float64).mean(axis=1)))
    with open_audio(path, RATE_HZ) as reader:
        assert reader.info.channels == 2


def test_three_channel_extensible_float(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    frames = rng.uniform(-1, 1, (3000, 3)).astype(np.float32)
    path = wavgen.write_wav(tmp_path / "a.wav", frames, 44100, "float32", extensible=True)
    with open_audio(path, 44100) as reader:
        assert reader.info.describe() == "44100 Hz, 3 channels, float32"
        out = np.concatenate(collect(reader))
    expected = rint_clip(frames.astype(np.float64).mean(axis=1) * 32768)
    np.testing.assert_array_equal(out, expected)


def test_unknown_chunks_are_skipped_with_odd_padding(tmp_path: Path) -> None:
    samples = np.arange(-500, 501, dtype=np.int16)
    path = wavgen.write_wav(
        tmp_path / "a.wav",
        samples,
        RATE_HZ,
        "pcm16",
        before_data=(
            wavgen.chunk(b"LIST", b"INFOISFT\x03\x00\x00\x00ab\x00"),  # 15 bytes: odd
            wavgen.chunk(b"fact", struct.pack("<I", len(samples))),
        ),
        after_data=(wavgen.chunk(b"LIST", b"INFOICMT\x05\x00\x00\x00hello"),),
    )
    np.testing.assert_array_equal(read_wav(path, RATE_HZ), samples)


def test_odd_sized_pcm8_data_chunk_followed_by_a_chunk(tmp_path: Path) -> None:
    samples = np.arange(0, 255, dtype=np.uint8)  # 255 bytes: the data chunk gets a pad byte
    path = wavgen.write_wav(
        tmp_path / "a.wav", samples, RATE_HZ, "pcm8", after_data=(wavgen.chunk(b"junk", b"\x01\x02\x03"),)
    )
    out = read_wav(path, RATE_HZ)
    np.testing.assert_array_equal(out, (samples.astype(np.int16) - 128) * 256)


# --------------------------------------------------------------------------------------
# Files written by sox, not by wavgen.


@pytest.fixture(scope="module")
def sox_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("sox")
    files = {"pcm16": tmp / "ref16.wav"}
    sox("-n", "-r", RATE_HZ, "-b", 16, "-c", 1, files["pcm16"], "synth", "0.5", "sine", "440", "gain", "-3")
    for name, options in {
        "pcm24": ("-b", "24"),
        "pcm32": ("-b", "32"),
        "float32": ("-e", "float", "-b", "32"),
        "float64": ("-e", "float", "-b", "64"),
        "pcm8": ("-D", "-e", "unsigned", "-b", "8"),
    }.items():
        files[name] = tmp / f"{name}.wav"
        sox(files["pcm16"], *options, files[name])
    files["stereo"] = tmp / "stereo.wav"
    sox(
        "-n",
        "-r",
        RATE_HZ,
        "-b",
        16,
        "-c",
        2,
        files["stereo"],
        "synth",
        "0.5",
        "sine",
        "440",
        "sine",
        "660",
        "gain",
        "-6",
    )
    files["stereo-mix"] = tmp / "stereo-mix.wav"
    sox(files["stereo"], "-D", "-c", 1, files["stereo-mix"])
    return files


@pytest.mark.parametrize("name", ["pcm24", "pcm32", "float32", "float64"])
def test_sox_widened_files_read_back_exactly(sox_files: dict[str, Path], name: str) -> None:
    # sox widens 16-bit exactly (x << 8, x << 16, x / 32768), so the reader must undo it exactly.
    reference = read_wav(sox_files["pcm16"], RATE_HZ)
    assert len(reference) == 8000
    with open_audio(sox_files[name], RATE_HZ) as reader:
        assert reader.info.encoding == name
        out = np.concatenate(collect(reader, 3001))
    np.testing.assert_array_equal(out, reference)


def test_sox_pcm8_within_half_an_8_bit_step(sox_files: dict[str, Path]) -> None:
    reference = read_wav(sox_files["pcm16"], RATE_HZ).astype(np.int32)
    out = read_wav(sox_files["pcm8"], RATE_HZ).astype(np.int32)
    assert np.abs(out - reference).max() <= 128


def test_sox_stereo_mix_within_one_lsb(sox_files: dict[str, Path]) -> None:
    ours = read_wav(sox_files["stereo"], RATE_HZ).astype(np.int32)
    theirs = read_wav(sox_files["stereo-mix"], RATE_HZ).astype(np.int32)
    assert len(ours) == len(theirs) == 8000
    assert np.abs(ours - theirs).max() <= 1


# --------------------------------------------------------------------------------------
# Resampling.


def fft_peak_hz(samples: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate_hz)[np.argmax(spectrum)])


@pytest.mark.parametrize(("source_rate_hz", "encoding"), [(48000, "pcm16"), (44100, "pcm24")])
def test_resampled_sine_keeps_length_frequency_and_amplitude(
    tmp_path: Path, source_rate_hz: int, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    amplitude = 0.5
    signal = wavgen.sine(1000, 2.0, source_rate_hz, amplitude)
    values = wavgen.as_int16(signal) if encoding == "pcm16" else np.rint(signal * (1 << 23))
    path = wavgen.write_wav(tmp_path / "a.wav", values, source_rate_hz, encoding)
    with caplog.at_level(logging.INFO, logger="kwsd.audio"):
        out = read_wav(path, RATE_HZ)
    assert f"{path}: resampling from {source_rate_hz} Hz to 16000 Hz" in caplog.messages
    assert abs(len(out) - 2 * RATE_HZ) <= 3
    middle = out[4000:-4000].astype(np.float64)
    assert fft_peak_hz(middle, RATE_HZ) == pytest.approx(1000, abs=2)
    rms_db = 20 * np.log10(np.sqrt(np.mean(middle**2)) / (amplitude * 32768 / np.sqrt(2)))
    assert abs(rms_db) < 1.0


def test_resampled_blocks_equal_read_wav_and_are_about_block_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    samples = (rng.standard_normal((44100 * 3, 2)) * 3000).astype(np.int16)
    path = wavgen.write_wav(tmp_path / "a.wav", samples, 44100, "pcm16")
    whole = read_wav(path, RATE_HZ)
    for block_samples in (160, 1000, 8000):
        with open_audio(path, RATE_HZ) as reader:
            blocks = collect(reader, block_samples)
        np.testing.assert_array_equal(np.concatenate(blocks), whole)
        assert all(b.dtype == np.int16 for b in blocks)
        assert {len(b) for b in blocks[:-1]} == {block_samples}
        assert 0 < len(blocks[-1]) <= block_samples


# --------------------------------------------------------------------------------------
# Blocks over long files.


def test_blocks_at_random_sizes_equal_read_wav(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    samples = rng.integers(-32768, 32768, RATE_HZ * 20).astype(np.int16)
    path = wavgen.write_wav(tmp_path / "a.wav", samples, RATE_HZ, "pcm16")
    np.testing.assert_array_equal(read_wav(path, RATE_HZ), samples)
    for block_samples in [1 + int(n) for n in rng.integers(0, 30000, 6)] + [7, len(samples)]:
        with open_audio(path, RATE_HZ) as reader:
            blocks = collect(reader, block_samples)
        np.testing.assert_array_equal(np.concatenate(blocks), samples)
        assert {len(b) for b in blocks[:-1]} <= {block_samples}
        assert 0 < len(blocks[-1]) <= block_samples


def test_a_long_file_is_streamed_not_loaded(tmp_path: Path) -> None:
    # A 1 GiB WAV (sparse on disk, ~9 hours at 16 kHz): the first blocks must come without
    # reading the rest, so Python's allocations stay tiny.
    data_bytes = 1 << 30
    path = tmp_path / "long.wav"
    with path.open("wb") as f:
        f.write(wavgen.riff(wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, RATE_HZ, 16)))
        f.write(struct.pack("<4sI", b"data", data_bytes))
        f.truncate(f.tell() + data_bytes)
    tracemalloc.start()
    try:
        with open_audio(path, RATE_HZ) as reader:
            assert reader.info.frames == data_bytes // 2
            blocks = reader.blocks(8000)
            first, second = next(blocks), next(blocks)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(first) == len(second) == 8000
    assert not first.any()
    assert peak_bytes < 1 << 20


# --------------------------------------------------------------------------------------
# Damaged files that are still read.


def test_data_chunk_longer_than_the_file_reads_what_is_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = np.arange(300, dtype=np.int16)
    path = wavgen.write_wav(tmp_path / "cut.wav", samples, RATE_HZ, "pcm16", data_size=10000)
    logs = caplog.at_level(logging.WARNING, logger="kwsd.audio")
    with logs, open_audio(path, RATE_HZ) as reader:
        assert reader.info.frames == 300
        out = np.concatenate(collect(reader))
    np.testing.assert_array_equal(out, samples)
    assert caplog.messages == [
        f"{path}: header said 10000 bytes of audio, file has 600 (a recording cut off?); using what is there"
    ]


def test_trailing_partial_frame_in_a_file_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = np.arange(200, dtype=np.int16).reshape(100, 2)
    blob = wavgen.wav_bytes(frames, RATE_HZ, "pcm16", data_size=403) + b"\x07\x00\x09"  # 3 of 4
    path = tmp_path / "partial.wav"
    path.write_bytes(blob)
    with caplog.at_level(logging.WARNING, logger="kwsd.audio"):
        out = read_wav(path, RATE_HZ)
    np.testing.assert_array_equal(out, rint_clip(frames.mean(axis=1)))
    assert caplog.messages == [f"{path}: dropping a trailing partial frame (3 of 4 bytes)"]


@pytest.mark.parametrize("data_size", [0x7FFFFFFF, 0xFFFFFFFF, 0])
def test_streaming_placeholder_size_in_a_file_reads_to_the_end(tmp_path: Path, data_size: int) -> None:
    samples = np.arange(-100, 100, dtype=np.int16)
    path = wavgen.write_wav(
        tmp_path / "a.wav", samples, RATE_HZ, "pcm16", data_size=data_size, riff_size=data_size
    )
    with open_audio(path, RATE_HZ) as reader:
        assert reader.info.frames == 200
        np.testing.assert_array_equal(np.concatenate(collect(reader)), samples)


# --------------------------------------------------------------------------------------
# stdin.


def test_stdin_raw_pcm16(caplog: pytest.LogCaptureFixture) -> None:
    samples = np.arange(-5000, 5000, 3, dtype=np.int16)
    stdin = io.BytesIO(samples.astype("<i2").tobytes())
    with open_audio("-", RATE_HZ, stdin=stdin) as reader:
        assert reader.info == AudioInfo("<stdin>", RATE_HZ, 1, "raw-pcm16", None)
        assert reader.info.encoding is Encoding.RAW_PCM16
        out = np.concatenate(collect(reader, 1000))
    np.testing.assert_array_equal(out, samples)
    assert not stdin.closed  # stdin belongs to the caller


def test_stdin_raw_stereo_at_another_rate_is_mixed_and_resampled() -> None:
    signal = wavgen.sine(1000, 1.0, 48000, 0.25)
    frames = np.stack((wavgen.as_int16(signal), wavgen.as_int16(signal)), axis=1)
    stdin = io.BytesIO(frames.astype("<i2").tobytes())
    with open_audio("-", RATE_HZ, raw_rate_hz=48000, raw_channels=2, stdin=stdin) as reader:
        assert reader.info.describe() == "48000 Hz, 2 channels, raw-pcm16"
        out = np.concatenate(collect(reader))
    assert abs(len(out) - RATE_HZ) <= 3
    assert fft_peak_hz(out[2000:-2000].astype(float), RATE_HZ) == pytest.approx(1000, abs=2)


def pipe_writer(chunks: list[bytes], *, pause: threading.Event | None = None):
    """An os.pipe whose writer thread writes ``chunks`` (waiting on ``pause`` after the first)."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as w:
            for index, piece in enumerate(chunks):
                w.write(piece)
                if index == 0 and pause is not None:
                    assert pause.wait(5)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return os.fdopen(read_fd, "rb"), thread


def test_stdin_pipe_with_odd_sized_writes() -> None:
    rng = np.random.default_rng(9)
    samples = rng.integers(-32768, 32768, 30000).astype(np.int16)
    data = samples.astype("<i2").tobytes()
    chunks, offset = [], 0
    while offset < len(data):
        size = int(rng.integers(0, 2000)) * 2 + 1  # always odd: samples split across writes
        chunks.append(data[offset : offset + size])
        offset += size
    stdin, thread = pipe_writer(chunks)
    with stdin, open_audio("-", RATE_HZ, stdin=stdin) as reader:
        blocks = collect(reader, 4000)
    thread.join(5)
    np.testing.assert_array_equal(np.concatenate(blocks), samples)
    assert max(len(b) for b in blocks) <= 4000


def test_stdin_pipe_yields_what_has_arrived_without_waiting_for_a_whole_block() -> None:
    first = np.arange(50, dtype=np.int16)
    rest = np.arange(50, 150, dtype=np.int16)
    arrived = threading.Event()
    stdin, thread = pipe_writer([first.tobytes(), rest.tobytes()], pause=arrived)
    with stdin, open_audio("-", RATE_HZ, stdin=stdin) as reader:
        blocks = reader.blocks(8000)
        np.testing.assert_array_equal(next(blocks), first)  # the writer is still paused
        arrived.set()
        np.testing.assert_array_equal(np.concatenate(list(blocks)), rest)
    thread.join(5)


@pytest.mark.parametrize("data_size", [0x7FFFFFFF, 0])
def test_stdin_wav_with_a_bogus_data_size_reads_to_eof(data_size: int) -> None:
    samples = np.arange(-2000, 2000, dtype=np.int16)
    blob = wavgen.wav_bytes(samples, RATE_HZ, "pcm16", data_size=data_size, riff_size=data_size)
    with open_audio("-", RATE_HZ, stdin=io.BytesIO(blob)) as reader:
        assert reader.info == AudioInfo("<stdin>", RATE_HZ, 1, "pcm16", None)
        out = np.concatenate(collect(reader, 1000))
    np.testing.assert_array_equal(out, samples)


def test_stdin_wav_from_a_sox_pipe() -> None:
    # sox writes a 0x7FFFF000 placeholder when its output cannot be seeked.
    process = subprocess.Popen(
        [
            SOX,
            "-n",
            "-r",
            "48000",
            "-b",
            "24",
            "-c",
            "2",
            "-t",
            "wav",
            "-",
            "synth",
            "1",
            "sine",
            "1000",
            "gain",
            "-6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    with process.stdout, open_audio("-", RATE_HZ, stdin=process.stdout) as reader:
        assert reader.info.describe() == "48000 Hz, 2 channels, pcm24"
        out = np.concatenate(collect(reader))
    assert process.wait(5) == 0
    assert abs(len(out) - RATE_HZ) <= 3
    assert fft_peak_hz(out[2000:-2000].astype(float), RATE_HZ) == pytest.approx(1000, abs=2)


def test_stdin_wav_with_a_real_size_stops_at_the_end_of_the_data() -> None:
    samples = np.arange(100, dtype=np.int16)
    blob = wavgen.wav_bytes(samples, RATE_HZ, "pcm16", after_data=(wavgen.chunk(b"LIST", b"INFOjunkjunk"),))
    out = np.concatenate(collect(open_audio("-", RATE_HZ, stdin=io.BytesIO(blob))))
    np.testing.assert_array_equal(out, samples)


def test_stdin_ending_mid_sample_yields_every_full_sample_then_raises() -> None:
    samples = np.arange(1001, dtype=np.int16)
    stdin = io.BytesIO(samples.tobytes() + b"\x01")
    reader = open_audio("-", RATE_HZ, stdin=stdin)
    got: list[np.ndarray] = []
    with pytest.raises(StreamError) as caught:
        for block in reader.blocks(300):
            got.append(block)
    np.testing.assert_array_equal(np.concatenate(got), samples)
    assert str(caught.value) == (
        "<stdin>: stream ended mid-sample: 1 trailing byte dropped "
        "(expected whole 2-byte frames, 1 x raw-pcm16)"
    )


def test_stdin_stereo_wav_ending_mid_frame_after_resampling() -> None:
    frames = np.zeros((4800, 2), np.int16)
    blob = wavgen.wav_bytes(frames, 48000, "pcm16", data_size=0x7FFFFFFF) + b"\x00\x00"
    reader = open_audio("-", RATE_HZ, stdin=io.BytesIO(blob))
    got: list[np.ndarray] = []
    with pytest.raises(StreamError, match=r"stream ended mid-frame: 2 trailing bytes dropped"):
        for block in reader.blocks(1000):
            got.append(block)
    assert abs(sum(len(b) for b in got) - 1600) <= 3  # the resampler was flushed first


def test_stdin_wav_shorter_than_its_header_says_warns(caplog: pytest.LogCaptureFixture) -> None:
    samples = np.arange(100, dtype=np.int16)
    blob = wavgen.wav_bytes(samples, RATE_HZ, "pcm16", data_size=1000)
    with caplog.at_level(logging.WARNING, logger="kwsd.audio"):
        out = np.concatenate(collect(open_audio("-", RATE_HZ, stdin=io.BytesIO(blob))))
    np.testing.assert_array_equal(out, samples)
    assert caplog.messages == [
        "<stdin>: header said 1000 bytes of audio, the stream had 200; using what is there"
    ]


def test_default_stdin_is_the_process_stdin() -> None:
    samples = np.arange(-3000, 3000, dtype=np.int16)
    code = "from kwsd.audio import read_wav; print(read_wav('-', 16000).sum())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=samples.tobytes(),
        capture_output=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert int(result.stdout) == int(samples.sum())


def test_a_fifo_path_is_read_as_a_streamed_wav(tmp_path: Path) -> None:
    samples = np.arange(-1000, 1000, dtype=np.int16)
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    blob = wavgen.wav_bytes(samples, RATE_HZ, "pcm16", data_size=0x7FFFFFFF)
    thread = threading.Thread(target=fifo.write_bytes, args=(blob,), daemon=True)
    thread.start()
    with open_audio(fifo, RATE_HZ) as reader:
        assert reader.info.frames is None
        out = np.concatenate(collect(reader))
    thread.join(5)
    np.testing.assert_array_equal(out, samples)


def test_empty_stdin_is_an_error_not_an_empty_success() -> None:
    with pytest.raises(
        AudioFormatError, match=r"<stdin>: no audio samples \(the stream ended before the first one\)"
    ):
        collect(open_audio("-", RATE_HZ, stdin=io.BytesIO(b"")))


def test_header_only_wav_on_stdin_is_an_error() -> None:
    header_only = wavgen.riff(wavgen.fmt_chunk(1, 1, RATE_HZ, 16), wavgen.chunk(b"data", b""))
    with pytest.raises(AudioFormatError, match="<stdin>: no audio samples"):
        collect(open_audio("-", RATE_HZ, stdin=io.BytesIO(header_only)))


def test_stdin_header_errors_are_raised_at_open() -> None:
    blob = wavgen.riff(
        wavgen.fmt_chunk(2, 1, RATE_HZ, 4, block_align=256), wavgen.chunk(b"data", b"\x00" * 256)
    )
    with pytest.raises(AudioFormatError) as caught:
        open_audio("-", RATE_HZ, stdin=io.BytesIO(blob))
    assert str(caught.value) == (
        "<stdin>: unsupported WAV encoding: format tag 2 (Microsoft ADPCM) (expected PCM or "
        "IEEE float); convert it with: sox IN -b 16 OUT.wav"
    )


def test_stdin_that_is_an_mp3_is_refused() -> None:
    with pytest.raises(AudioFormatError, match=r"^<stdin>: starts with b'ID3\\x04' \(MP3\)"):
        open_audio("-", RATE_HZ, stdin=io.BytesIO(b"ID3\x04\x00\x00\x00\x00\x00\x00"))


def test_stdin_raw_options_are_checked() -> None:
    with pytest.raises(AudioFormatError, match="raw_rate_hz: expected a positive integer, got 0"):
        open_audio("-", RATE_HZ, raw_rate_hz=0, stdin=io.BytesIO(b""))
    with pytest.raises(AudioFormatError, match="raw_channels: expected a positive integer"):
        open_audio("-", RATE_HZ, raw_channels=0, stdin=io.BytesIO(b""))
    with pytest.raises(AudioFormatError, match=r"raw_rate_hz: expected 1,000 to 384,000 Hz, got 999"):
        open_audio("-", RATE_HZ, raw_rate_hz=999, stdin=io.BytesIO(b""))


@pytest.mark.parametrize("rate_hz", [1_000, 384_000])
def test_the_sample_rate_bounds_themselves_are_read(tmp_path: Path, rate_hz: int) -> None:
    path = tmp_path / "edge.wav"
    path.write_bytes(
        wavgen.riff(
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, rate_hz, 16), wavgen.chunk(b"data", b"\x00" * 2000)
        )
    )
    assert len(read_wav(path, RATE_HZ)) == round(1000 * RATE_HZ / rate_hz)


def test_read_wav_with_max_samples_reads_only_that_much(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    samples = rng.integers(-32768, 32768, 50_000).astype(np.int16)
    path = tmp_path / "long.wav"
    write_wav(path, samples, RATE_HZ)
    np.testing.assert_array_equal(read_wav(path, RATE_HZ, max_samples=16_000), samples[:16_000])
    np.testing.assert_array_equal(read_wav(path, RATE_HZ, max_samples=80_000), samples)
    # Resampled: the first samples of the whole file's conversion, exactly.
    at_48k = tmp_path / "48k.wav"
    write_wav(at_48k, rng.integers(-3000, 3000, 150_000).astype(np.int16), 48_000)
    whole = read_wav(at_48k, RATE_HZ)
    np.testing.assert_array_equal(read_wav(at_48k, RATE_HZ, max_samples=16_000), whole[:16_000])


# --------------------------------------------------------------------------------------
# Errors, all raised by open_audio before any block.


def expect_error(path: Path, error: type[Exception], text: str) -> str:
    with pytest.raises(error) as caught:
        open_audio(path, RATE_HZ)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert text in message, message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    message = expect_error(path, InputNotFoundError, "no such file")
    assert message == f"{path}: no such file (expected a WAV file)"


def test_directory(tmp_path: Path) -> None:
    expect_error(tmp_path, InputNotFoundError, "is a directory (expected a WAV file)")


def test_unreadable_file(tmp_path: Path) -> None:
    path = wavgen.write_wav(tmp_path / "secret.wav", np.zeros(10, np.int16), RATE_HZ)
    path.chmod(0)
    if os.geteuid() != 0:
        expect_error(path, InputNotFoundError, "cannot read it (permission denied)")
        return
    # root reads anything: drop the effective uid for the one open, then take it back.
    os.seteuid(65534)
    try:
        expect_error(path, InputNotFoundError, "cannot read it (permission denied)")
    finally:
        os.seteuid(0)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    expect_error(path, AudioFormatError, "empty file (0 bytes, expected a WAV file)")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00\x00\x00", "not a WAV file (starts with b'ID3\\x04'"),
        (b"hello", "not a WAV file (starts with b'hell', expected b'RIFF')"),
        (b"RIFF\x04\x00\x00\x00AVI LIST", "not a WAV file (a RIFF file of type b'AVI ', expected b'WAVE')"),
        (b"RIFF\x04\x00", "WAV header cut off after 6 bytes"),
        (b"RIFX\x04\x00\x00\x00WAVE", "big-endian WAV (RIFX) is not supported; convert it"),
        (b"RF64\xff\xff\xff\xffWAVE", "RF64 WAV is not supported; convert it with: sox"),
    ],
)
def test_not_a_wav(tmp_path: Path, data: bytes, text: str) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(data)
    expect_error(path, AudioFormatError, text)


def fmt16(**options: int) -> bytes:
    return wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, RATE_HZ, 16, **options)


@pytest.mark.parametrize(
    ("chunks", "text"),
    [
        (
            (fmt16(), wavgen.chunk(b"data", b"")),
            "no audio samples (the data chunk holds 0 bytes and the file 0 after it; "
            "expected at least one 2-byte frame)",
        ),
        ((fmt16(), b"data\x01\x00\x00\x00\x05"), "no audio samples (the data chunk holds 1 bytes"),
        ((wavgen.chunk(b"data", b"\x00\x00"), fmt16()), "no fmt chunk before the data chunk"),
        ((wavgen.chunk(b"LIST", b"INFO"),), "no fmt chunk (the WAV ends after 24 bytes)"),
        ((fmt16(),), "no data chunk (the WAV ends after 36 bytes)"),
        ((fmt16(), wavgen.chunk(b"LIST", b"INFO"), b"dat"), "no data chunk (the WAV ends after 51 bytes)"),
        (
            (wavgen.chunk(b"fmt ", b"\x01\x00\x01\x00" + b"\x00" * 10), wavgen.chunk(b"data", b"12")),
            "fmt chunk is 14 bytes (expected at least 16)",
        ),
        ((b"fmt \x10\x00\x00\x00\x01\x00",), "fmt chunk cut off (2 of 16 bytes)"),
    ],
)
def test_broken_structure(tmp_path: Path, chunks: tuple[bytes, ...], text: str) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(wavgen.riff(*chunks))
    expect_error(path, AudioFormatError, text)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        (2, "Microsoft ADPCM"),
        (6, "A-law"),
        (7, "mu-law"),
        (0x11, "IMA ADPCM"),
        (85, "MP3"),
        (0x1234, "unknown"),
    ],
)
def test_unsupported_format_tags(tmp_path: Path, tag: int, name: str) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(wavgen.riff(wavgen.fmt_chunk(tag, 1, 8000, 8), wavgen.chunk(b"data", b"\x00" * 8)))
    message = expect_error(path, AudioFormatError, f"format tag {tag} ({name})")
    assert message == (
        f"{path}: unsupported WAV encoding: format tag {tag} ({name}) (expected PCM or IEEE "
        f"float); convert it with: sox {path} -b 16 OUT.wav"
    )


def test_extensible_with_an_unsupported_subformat(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(
        wavgen.riff(
            wavgen.fmt_chunk(wavgen.FORMAT_EXTENSIBLE, 1, 8000, 8, subformat_tag=6),
            wavgen.chunk(b"data", b"\x00" * 8),
        )
    )
    expect_error(
        path,
        AudioFormatError,
        "unsupported WAV encoding: WAVE_FORMAT_EXTENSIBLE with subformat format tag 6 "
        "(A-law) (expected PCM or IEEE float); convert it with: sox",
    )


def test_extensible_with_a_foreign_guid(tmp_path: Path) -> None:
    fmt = bytearray(wavgen.fmt_chunk(wavgen.FORMAT_EXTENSIBLE, 1, 8000, 16, subformat_tag=1))
    fmt[-16:] = bytes(range(16))
    path = tmp_path / "x.wav"
    path.write_bytes(wavgen.riff(bytes(fmt), wavgen.chunk(b"data", b"\x00" * 8)))
    expect_error(
        path, AudioFormatError, "WAVE_FORMAT_EXTENSIBLE with subformat {03020100-0504-0706-0809-0a0b0c0d0e0f}"
    )


def test_extensible_fmt_too_short(tmp_path: Path) -> None:
    fmt = wavgen.fmt_chunk(wavgen.FORMAT_EXTENSIBLE, 1, 8000, 16)
    path = tmp_path / "x.wav"
    path.write_bytes(wavgen.riff(fmt, wavgen.chunk(b"data", b"\x00" * 8)))
    expect_error(path, AudioFormatError, "WAVE_FORMAT_EXTENSIBLE fmt chunk is 16 bytes (expected 40)")


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, RATE_HZ, 12, block_align=2),
            "12-bit PCM is not supported (expected 8, 16, 24 or 32 bits); convert it with: sox",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_FLOAT, 1, RATE_HZ, 16),
            "16-bit IEEE float is not supported (expected 32 or 64 bits); convert it with: sox",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 0, RATE_HZ, 16),
            "fmt chunk says 0 channels (expected at least 1)",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, 0, 16),
            "fmt chunk says a sample rate of 0 Hz (expected 1,000 to 384,000 Hz)",
        ),
        (  # 400 KB would become 55 hours of 16 kHz audio
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, 1, 16),
            "fmt chunk says a sample rate of 1 Hz (expected 1,000 to 384,000 Hz)",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, 999, 16),
            "fmt chunk says a sample rate of 999 Hz (expected 1,000 to 384,000 Hz)",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, 384_001, 16),
            "fmt chunk says a sample rate of 384001 Hz (expected 1,000 to 384,000 Hz)",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 2, RATE_HZ, 16, block_align=3),
            "fmt chunk block_align is 3 bytes (expected 4 for 2 channels of 16-bit pcm16)",
        ),
        (
            wavgen.fmt_chunk(wavgen.FORMAT_PCM, 1, RATE_HZ, 24, block_align=4),
            "fmt chunk block_align is 4 bytes (expected 3 for 1 channel of 24-bit pcm24)",
        ),
    ],
)
def test_bad_fmt_fields(tmp_path: Path, fmt: bytes, text: str) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(wavgen.riff(fmt, wavgen.chunk(b"data", b"\x00" * 12)))
    expect_error(path, AudioFormatError, text)


# --------------------------------------------------------------------------------------
# The reader's own contract.


def test_blocks_can_be_iterated_once_and_checks_its_argument(tmp_path: Path) -> None:
    path = wavgen.write_wav(tmp_path / "a.wav", np.zeros(100, np.int16), RATE_HZ)
    with open_audio(path, RATE_HZ) as reader:
        with pytest.raises(ValueError, match="block_samples: expected a positive count, got 0"):
            reader.blocks(0)
        assert len(collect(reader)) == 1
        with pytest.raises(RuntimeError, match="can be iterated once"):
            reader.blocks()


def test_target_rate_is_checked(tmp_path: Path) -> None:
    path = wavgen.write_wav(tmp_path / "a.wav", np.zeros(100, np.int16), RATE_HZ)
    with pytest.raises(ValueError, match="target_rate_hz: expected a positive rate, got 0"):
        open_audio(path, 0)


def test_import_is_cheap() -> None:
    code = "import sys, kwsd.audio; print(sorted({'soxr', 'scipy'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert result.stdout.strip() == "[]"
