"""kwsd.capture: detections and near-misses kept as WAV + sidecar, off the listener thread."""

from __future__ import annotations

import datetime as dt
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from kwsd.capture import CaptureError, CaptureRecorder, CaptureSettings, CaptureWriter, check_folder

RATE = 16000
LABELS = ("_silence_", "_unknown_", "yes", "no")
WHEN = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)


def settings(tmp_path: Path, **changes) -> CaptureSettings:
    values = {
        "directory": tmp_path / "captures",
        "pre_ms": 1000,
        "post_ms": 500,
        "near_miss_threshold": None,
        "max_files": 100,
        "max_mb": 100,
    }
    return CaptureSettings(**{**values, **changes})


def recorder(config: CaptureSettings, writer: CaptureWriter) -> CaptureRecorder:
    return CaptureRecorder(
        config,
        writer,
        LABELS,
        sample_rate_hz=RATE,
        model={"name": "demo", "sha256": "ab" * 32},
        detection={"clip_stride_ms": 20, "threshold": 0.9},
        thresholds={"yes": 0.9, "no": 0.9},
    )


def read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (RATE, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


def feed(rec: CaptureRecorder, audio: np.ndarray, block: int = 320, on_window=None) -> None:
    for start in range(0, len(audio), block):
        rec.feed(audio[start : start + block])
        if on_window is not None:
            on_window(rec.audio_time_ms())


def test_a_detection_is_kept_from_pre_ms_before_to_post_ms_after_with_its_sidecar(tmp_path):
    config = settings(tmp_path)
    writer = CaptureWriter(config, "pi", RATE).start()
    rec = recorder(config, writer)
    audio = (np.arange(5 * RATE) % 30000).astype(np.int16)  # every sample says where it was
    feed(rec, audio[: 3 * RATE])
    for t in range(2000, 3001, 20):
        rec.scores(t, np.array([0.0, 0.0, 0.95 if t >= 2900 else 0.1, 0.0]))
    rec.detected("yes", 0.95, 3000, WHEN)
    feed(rec, audio[3 * RATE : 3 * RATE + 400])  # 25 ms: the capture waits for post_ms
    assert writer.counters()["written"] == 0
    feed(rec, audio[3 * RATE + 400 :])
    writer.close()
    wav = tmp_path / "captures" / "pending" / "yes" / "pi_nohash_0.wav"
    assert np.array_equal(read(wav), audio[2 * RATE : 3 * RATE + RATE // 2])
    sidecar = json.loads(wav.with_suffix(".json").read_text())
    assert {k: sidecar[k] for k in ("kind", "label", "score", "threshold", "audio_time_ms")} == {
        "kind": "detection",
        "label": "yes",
        "score": 0.95,
        "threshold": 0.9,
        "audio_time_ms": 3000,
    }
    assert sidecar["first_sample_audio_time_ms"] == 2000 and sidecar["time"] == "2026-12-07T09:30:00.000Z"
    assert sidecar["model"]["name"] == "demo" and sidecar["detection"]["threshold"] == 0.9
    assert sidecar["labels"] == list(LABELS)
    assert [s["audio_time_ms"] for s in sidecar["scores"]] == list(range(2000, 3001, 20))
    assert writer.counters() == {"written": 1, "dropped": 0, "removed": 0}


def test_a_near_miss_is_kept_around_its_highest_score_and_a_detection_is_not_one(tmp_path):
    config = settings(tmp_path, near_miss_threshold=0.5, pre_ms=500, post_ms=500)
    writer = CaptureWriter(config, "pi", RATE).start()
    rec = recorder(config, writer)
    audio = np.zeros(6 * RATE, np.int16)
    curve = {"no": [0.2, 0.6, 0.8, 0.7, 0.3], "yes": [0.2, 0.6, 0.95, 0.7, 0.3]}  # no: near; yes: fired

    def on_window(now_ms):
        step = now_ms // 200 - 5  # a score every 200 ms from 1 s
        if 0 <= step < 5 and now_ms % 200 == 0:
            rec.scores(now_ms, np.array([0.0, 0.0, curve["yes"][step], curve["no"][step]]))

    feed(rec, audio, block=160, on_window=on_window)
    writer.close()
    kept = sorted(
        p.relative_to(tmp_path / "captures" / "pending").as_posix() for p in tmp_path.rglob("*.wav")
    )
    assert kept == ["no/pi_nohash_0.wav"]
    sidecar = json.loads((tmp_path / "captures/pending/no/pi_nohash_0.json").read_text())
    assert (sidecar["kind"], sidecar["score"], sidecar["audio_time_ms"]) == ("near_miss", 0.8, 1400)
    assert len(read(tmp_path / "captures/pending/no/pi_nohash_0.wav")) == RATE  # 500 + 500 ms


def test_the_oldest_captures_go_first_past_the_bounds_and_numbering_survives_a_restart(tmp_path):
    config = settings(tmp_path, max_files=2)
    for _ in range(2):
        writer = CaptureWriter(config, "pi", RATE).start()
        for _ in range(2):
            writer.submit("yes", np.zeros(RATE, np.int16), {"kind": "detection"})
        writer.close()
        assert writer.counters()["written"] == 2
    names = sorted(p.name for p in (tmp_path / "captures/pending/yes").glob("*.wav"))
    assert names == ["pi_nohash_2.wav", "pi_nohash_3.wav"]  # 0 and 1 removed; never reused
    assert sorted(p.name for p in (tmp_path / "captures/pending/yes").glob("*.json")) == [
        "pi_nohash_2.json",
        "pi_nohash_3.json",
    ]
    by_size = settings(tmp_path / "b", max_mb=1)
    writer = CaptureWriter(by_size, "pi", RATE).start()
    for _ in range(3):
        writer.submit("no", np.zeros(10 * RATE, np.int16), {"kind": "detection"})  # 320 kB each
    writer.close()
    assert len(list((tmp_path / "b/captures/pending/no").glob("*.wav"))) == 3
    writer = CaptureWriter(by_size, "pi", RATE).start()
    writer.submit("no", np.zeros(10 * RATE, np.int16), {"kind": "detection"})
    writer.close()
    assert writer.counters()["removed"] == 1  # 4 x 320 kB > 1 MB


def test_a_writer_that_falls_behind_drops_captures_and_counts_them_never_blocks(tmp_path):
    writer = CaptureWriter(settings(tmp_path), "pi", RATE)  # not started: nothing is written
    for _ in range(20):
        writer.submit("yes", np.zeros(10, np.int16), {})
    assert writer.counters()["dropped"] == 4  # the queue holds 16


def test_a_folder_kwsd_cannot_write_is_refused_naming_it(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CaptureError, match="file: cannot write there"):
        check_folder(tmp_path / "file")


def ledger_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "captures" / "listened.json").read_text())


def test_the_ledger_counts_what_was_heard_across_restarts_and_each_sidecar_says_where_it_falls(tmp_path):
    config = settings(tmp_path, pre_ms=500, post_ms=500)
    for run in range(2):
        writer = CaptureWriter(config, "pi", RATE).start()
        rec = recorder(config, writer)
        feed(rec, np.zeros(2 * RATE, np.int16))
        rec.detected("yes", 0.95, 1500, WHEN)
        feed(rec, np.zeros(2 * RATE, np.int16))  # 4 s heard in each run
        writer.close()
        assert ledger_of(tmp_path)["listened_ms"] == 4000 * (run + 1)
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "captures/pending/yes").glob("*.json"))]
    assert [s["listened_ms"] for s in sidecars] == [1500, 5500]  # the second run continues the count
    assert ledger_of(tmp_path)["complete_from_ms"] == 0


def test_a_capture_removed_by_the_bounds_or_dropped_ends_the_complete_span_before_it(tmp_path):
    config = settings(tmp_path, max_files=1)
    writer = CaptureWriter(config, "pi", RATE).start()
    for listened in (1000, 2000):
        writer.submit("yes", np.zeros(RATE, np.int16), {"listened_ms": listened})
    writer.close()
    assert ledger_of(tmp_path)["complete_from_ms"] == 1000  # the capture heard at 1000 ms is gone
    writer = CaptureWriter(config, "pi", RATE)  # not started: a full queue drops
    for listened in range(3000, 3017):
        writer.submit("yes", np.zeros(10, np.int16), {"listened_ms": listened})
    assert writer.ledger().complete_from_ms == 3016


def test_a_ledger_that_is_not_one_is_refused_naming_it(tmp_path):
    (tmp_path / "captures").mkdir()
    (tmp_path / "captures" / "listened.json").write_text('{"listened_ms": -5, "complete_from_ms": 0}')
    with pytest.raises(CaptureError, match=r"listened\.json: not a kwsd capture ledger"):
        check_folder(tmp_path / "captures")
    (tmp_path / "captures" / "listened.json").write_text("{")
    with pytest.raises(CaptureError, match=r"listened\.json: cannot read it"):
        check_folder(tmp_path / "captures")


def test_a_capture_still_waiting_for_its_post_ms_when_kwsd_stops_is_written_with_what_there_is(tmp_path):
    config = settings(tmp_path, pre_ms=1000, post_ms=2000)
    writer = CaptureWriter(config, "pi", RATE).start()
    rec = recorder(config, writer)
    audio = (np.arange(3 * RATE) % 30000).astype(np.int16)
    feed(rec, audio[: 2 * RATE])
    rec.detected("yes", 0.95, 2000, WHEN)
    feed(rec, audio[2 * RATE :])  # 1 s of the 2 s after it
    rec.finish()
    writer.close()
    wav = tmp_path / "captures/pending/yes/pi_nohash_0.wav"
    assert np.array_equal(read(wav), audio[RATE:])  # from pre_ms before to where the audio ended
