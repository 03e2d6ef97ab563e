"""`kwsd record` through the real PortAudio path: an ALSA device backed by a FIFO, fed in real time.

Each test writes known audio into the FIFO and checks the files kwsd saved against it, sample
for sample.
"""

import errno
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from kwsd.audio import read_wav
from kwsd.dataset_layout import next_number
from kwsd.record import cut_word, save_new
from kwsd_tools.harness import alsa

pytestmark = pytest.mark.skipif(not alsa.portaudio_available(), reason="libportaudio2 is not installed")

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
BLOCK_MS = 20


def demo_word():
    """A real person saying "stop": a 1 s Speech Commands clip (tests/fixtures/realspeech, CC BY 4.0)."""
    return read_wav(Path(__file__).parent / "fixtures" / "realspeech" / "stop_0fa1e7a9_nohash_0.wav", RATE)


def wav_samples(path):
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


class Recorder:
    """``kwsd record ARGS`` on an ALSA FIFO device named kwsdmic, fed by a paced writer."""

    def __init__(self, tmp_path, *args, silence=False):
        self.fifo = tmp_path / "mic.fifo"
        self.writer = alsa.PacedFifoWriter(
            self.fifo, rate_hz=RATE, frame_bytes=2, chunk_frames=RATE * BLOCK_MS // 1000
        )
        conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdmic", self.fifo))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kwsd", "-v", "record", *args, "--device", "kwsdmic"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**alsa.capture_env(conf), "PYTHONPATH": str(ROOT)},
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if silence:  # a device with nothing to say (an empty FIFO would block PortAudio's close)
            self.writer.start(b"")

    def _read(self):
        for line in iter(self.proc.stderr.readline, b""):
            self.lines.append(line.decode())

    def wait_for(self, text, timeout_s=60):
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), self.log
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.log}"
            time.sleep(0.02)

    def finish(self, timeout_s=60):
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._reader.join(5)
            raise AssertionError(f"kwsd record still running after {timeout_s} s:\n{self.log}") from None
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.writer.stop()
            self._reader.join(5)
        return code

    @property
    def log(self):
        return "".join(self.lines)


def test_guided_takes_are_saved_sample_for_sample_and_bad_takes_retried(tmp_path):
    word = demo_word()
    take = 2 * RATE  # --take-ms 2000
    quiet = (word * 0.002).astype(np.int16)
    clipped = np.clip(word.astype(np.int32) * 40, -32768, 32767).astype(np.int16)
    segments = [word, quiet, clipped, word]  # take 1 good; take 2: quiet, clipped, then good
    payload = np.zeros(take * len(segments), np.int16)
    for n, segment in enumerate(segments):
        payload[n * take + RATE // 2 : n * take + RATE // 2 + RATE] = segment
    out = tmp_path / "data"
    (out / "stop").mkdir(parents=True)
    (out / "stop" / "ann_nohash_3.wav").write_bytes(b"not touched")  # numbering goes on after it
    rec = Recorder(
        tmp_path,
        "guided", "--words", "stop", "--speaker", "ann", "--takes", "2", "--countdown", "0", "--yes",
        "--out", str(out),
    )  # fmt: skip
    rec.wait_for("Say 'stop' now")
    rec.writer.start(payload.tobytes())
    assert rec.finish() == 0, rec.log
    assert (out / "stop" / "ann_nohash_3.wav").read_bytes() == b"not touched"
    saved = sorted((out / "stop").glob("ann_nohash_*.wav"))
    assert [p.name for p in saved] == ["ann_nohash_3.wav", "ann_nohash_4.wav", "ann_nohash_5.wav"]
    # Each saved clip is one second of exactly what was fed, holding the whole word.
    for path, take_index in ((saved[1], 0), (saved[2], 3)):
        clip = wav_samples(path)
        assert len(clip) == RATE
        base = take_index * take
        matches = [
            start
            for start in range(base, base + take - RATE + 1)
            if np.array_equal(payload[start : start + RATE], clip)
        ]
        assert matches, f"{path.name} is not a slice of what was fed"
        loud = np.flatnonzero(np.abs(payload[base : base + take].astype(np.int32)) > 1000) + base
        assert matches[0] <= loud[0] and loud[-1] < matches[0] + RATE
    assert "take refused: too quiet" in rec.log
    assert "take refused: clipped" in rec.log
    assert not list(out.rglob("*.part"))
    summary = rec.log.splitlines()[-1].split()
    assert summary == ["stop", "2", "3"]  # saved now, in the folder


def test_continuous_chunks_follow_each_other_with_no_gap(tmp_path):
    rng = np.random.default_rng(1)
    payload = (rng.normal(0, 3000, 3 * RATE)).astype(np.int16)
    out = tmp_path / "data"
    rec = Recorder(
        tmp_path,
        "continuous", "--label", "crying", "--prefix", "nursery", "--chunk-seconds", "1",
        "--hours", str(3 / 3600), "--min-free-mb", "0", "--out", str(out),
    )  # fmt: skip
    rec.wait_for("capturing from kwsdmic")
    rec.writer.start(payload.tobytes())
    assert rec.finish() == 0, rec.log
    chunks = [wav_samples(out / "crying" / f"nursery_nohash_{n}.wav") for n in range(3)]
    assert np.array_equal(np.concatenate(chunks), payload)


def test_sigterm_keeps_the_chunk_so_far_as_a_complete_file(tmp_path):
    payload = np.arange(10 * RATE, dtype=np.int64).astype(np.int16)
    out = tmp_path / "data"
    rec = Recorder(
        tmp_path, "continuous", "--label", "crying", "--prefix", "night", "--chunk-seconds", "60",
        "--min-free-mb", "0", "--out", str(out),
    )  # fmt: skip
    rec.wait_for("capturing from kwsdmic")
    rec.writer.start(payload.tobytes())
    # Mid-chunk: 3 s of the 10 s sent (the recorder may lag behind on a busy machine).
    deadline = time.monotonic() + 60
    while rec.writer.frames_written < 3 * RATE:
        assert time.monotonic() < deadline, rec.log
        time.sleep(0.02)
    rec.proc.send_signal(signal.SIGTERM)
    assert rec.finish() == 0, rec.log
    kept = wav_samples(out / "crying" / "night_nohash_0.wav")
    assert RATE // 10 < len(kept) < len(payload)
    assert np.array_equal(kept, payload[: len(kept)])
    assert not list(out.rglob("*.part"))


def test_ctrl_c_mid_take_leaves_no_file(tmp_path):
    out = tmp_path / "data"
    rec = Recorder(
        tmp_path,
        "guided",
        "--words",
        "yes",
        "--speaker",
        "bo",
        "--countdown",
        "0",
        "--yes",
        "--out",
        str(out),
    )
    rec.wait_for("Say 'yes' now")
    rec.writer.start(np.zeros(RATE // 2, np.int16).tobytes())
    time.sleep(0.3)
    rec.proc.send_signal(signal.SIGINT)
    assert rec.finish() == 0, rec.log
    assert "this take is not saved" in rec.log
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_full_disk_guard_stops_before_writing(tmp_path):
    out = tmp_path / "data"
    rec = Recorder(
        tmp_path,
        "continuous",
        "--label",
        "crying",
        "--min-free-mb",
        str(10**9),
        "--out",
        str(out),
        silence=True,
    )
    assert rec.finish() == 0, rec.log
    assert "stopping:" in rec.log and "--min-free-mb" in rec.log
    assert not list(out.rglob("*.wav"))


def kwsd_record(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kwsd", "record", *args],
        capture_output=True,
        check=False,
        timeout=60,
        env={**(env or os.environ), "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["guided", "--words", "a/b", "--speaker", "x"], "--words 'a/b': expected letters, digits"),
        (["guided", "--words", "yes", "--speaker", "../x"], "--speaker '../x'"),
        (["guided", "--words", "_silence_", "--speaker", "x"], "reserved for the classes training makes"),
        (["continuous", "--label", ""], "continuous: give --label"),
    ],
)
def test_names_that_cannot_be_files_are_refused_before_any_device_opens(args, message):
    result = kwsd_record(*args, "--device", "nosuchmic")
    err = result.stderr.decode()
    assert result.returncode == 64, err
    assert message in err and "nosuchmic" not in err


def test_a_device_that_does_not_exist_is_named_with_those_that_do(tmp_path):
    raw = tmp_path / "x.raw"
    raw.write_bytes(np.zeros(RATE, np.int16).tobytes())
    conf = alsa.write_asound_conf(tmp_path / "asound.conf", alsa.file_pcm("kwsdmic", raw))
    result = kwsd_record(
        "background", "--device", "nosuchmic", "--out", str(tmp_path / "d"), env=alsa.capture_env(conf)
    )
    err = result.stderr.decode()
    assert result.returncode == 75, err
    assert "no capture device matching 'nosuchmic'" in err and "kwsdmic" in err


def test_an_unwritable_folder_stops_cleanly(tmp_path):
    rec = Recorder(tmp_path, "background", "--seconds", "1", "--out", "/proc/kwsd-cannot-write", silence=True)
    result = rec.finish()
    assert result == 73, rec.log
    assert "/proc/kwsd-cannot-write/_background_noise_: cannot write there" in rec.log
    assert "Traceback" not in rec.log


def test_cut_word_centres_the_clip_on_the_word():
    word = demo_word()
    take = np.random.default_rng(0).normal(0, 30, 2 * RATE).astype(np.int16)  # a quiet room
    take[300:300 + RATE] = word  # fmt: skip
    result = cut_word(take, RATE, RATE)
    assert result.reason is None and result.word_ms is not None
    start, end = result.word_ms
    loud = np.flatnonzero(np.abs(take.astype(np.int32)) > 1000)
    assert start <= loud[0] * 1000 // RATE + 10 and end >= loud[-1] * 1000 // RATE


def test_saving_never_replaces_a_file(tmp_path):
    (tmp_path / "x_nohash_0.wav").write_bytes(b"mine")
    path = save_new(tmp_path, "x", np.zeros(10, np.int16), RATE)
    assert path.name == "x_nohash_1.wav" and (tmp_path / "x_nohash_0.wav").read_bytes() == b"mine"
    assert next_number(tmp_path, "x") == 2


def test_saving_numbers_past_names_differing_in_case_and_needs_no_hard_links(tmp_path, monkeypatch):
    # One numbering for every writer of clips (kwsd record, the slicer, the synthesiser): a
    # case-insensitive SD card must not see X_nohash_0.wav and x_nohash_0.wav as two files.
    (tmp_path / "X_NOHASH_4.wav").write_bytes(b"mine")
    assert next_number(tmp_path, "x") == 5
    # FAT and some network mounts have no hard links: the name is then claimed exclusively.
    import os

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = save_new(tmp_path, "x", np.ones(10, np.int16), RATE)
    assert path.name == "x_nohash_5.wav" and path.stat().st_size > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X_NOHASH_4.wav", "x_nohash_5.wav"]
