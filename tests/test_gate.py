"""The audio gate (audio.gate): the interpreter skips windows with nothing in them, and the
detections stay exactly those of the ungated pipeline. Real model, real demo audio, seeded noise."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, make_bundle, read_bundle, write_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.config import ConfigError, parse_config
from kwsd.frontend import FrontendKind, FrontendSpec, MicroParams
from kwsd.gate import EnergyGate, GateSettings, silence_scores
from kwsd.listener import Listener
from kwsd.notify import SystemdNotifier
from kwsd.pipeline import PipelineError, build_pipeline
from kwsd.publisher import EventStamper

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 16000
#: Where the quiet stretches are, in seconds: before, between and after two demo.wav replays.
QUIET_S = 20.0


class CountingClassifier:
    """The real TfliteClassifier, counting the windows it is really asked to classify."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0

    def classify(self, features):
        self.calls += 1
        return self.inner.classify(features)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def room_noise(seconds, dbfs, seed):
    """Steady, slightly coloured noise at ``dbfs`` overall (float, int16 scale)."""
    white = np.random.default_rng(seed).standard_normal(int(seconds * RATE_HZ))
    coloured = np.convolve(white, [1.0, 0.9, 0.8, 0.6, 0.4, 0.2], "same")
    return coloured / np.sqrt(np.mean(coloured**2)) * 32768 * 10 ** (dbfs / 20)


def to_int16(audio):
    return np.clip(np.round(audio), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def bundle():
    return read_bundle(demo_bundle_path())


@pytest.fixture(scope="module")
def quiet_room_with_words():
    """20 s of quiet room, demo.wav over the room, 20 s of room, demo.wav again, 20 s of room."""
    demo = read_wav(demo_wav_path(), RATE_HZ).astype(np.float64)
    demo_s = len(demo) / RATE_HZ
    parts = [
        room_noise(QUIET_S, -60, seed=1),
        demo + room_noise(demo_s, -60, seed=2),
        room_noise(QUIET_S, -60, seed=3),
        demo + room_noise(demo_s, -60, seed=4),
        room_noise(QUIET_S, -60, seed=5),
    ]
    return to_int16(np.concatenate(parts)), demo_s


def run(bundle, audio, gate, block=4000):
    """Detections as (label, ms), and for each window (end ms, whether the model ran on it)."""
    classifier = CountingClassifier(TfliteClassifier(bundle))
    pipeline = build_pipeline(bundle, classifier=classifier, gate=gate)
    windows = []

    def seen(time_ms, scores):
        windows.append((time_ms, classifier.calls))

    pipeline.on_scores = seen
    detections = []
    for start in range(0, len(audio), block):
        detections += [(d.label, d.audio_time_ms) for d in pipeline.feed(audio[start : start + block])]
    before = [0] + [calls for _, calls in windows[:-1]]
    ran = [(t, calls > earlier) for (t, calls), earlier in zip(windows, before, strict=True)]
    return detections, ran, pipeline, classifier


#: What the demo model hears in the two demo.wav replays over the room ("off" is heard over the
#: first replay's noise only).
HEARD = ["yes", "no", "right", "on", "off", "stop", "go", "yes", "no", "right", "on", "stop", "go"]


def test_the_gate_skips_the_quiet_stretches_and_detects_exactly_what_the_ungated_pipeline_does(
    bundle, quiet_room_with_words
):
    audio, demo_s = quiet_room_with_words
    off, ran_off, _, classifier_off = run(bundle, audio, None)
    on, ran_on, pipeline, classifier_on = run(bundle, audio, GateSettings(enabled=True))
    # The same words at the same times, gate or no gate.
    assert on == off
    assert [label for label, _ in on] == HEARD
    # Every window was decided; the model ran only on those the gate let through.
    assert [t for t, _ in ran_on] == [t for t, _ in ran_off]
    assert all(ran for _, ran in ran_off) and classifier_off.calls == len(ran_off)
    skipped = pipeline.stats.gate_skipped
    assert classifier_on.calls == sum(ran for _, ran in ran_on) == pipeline.stats.windows - skipped
    # No window ending in a quiet stretch runs the model, once the clip (1 s), the hangover
    # (250 ms) and a margin have passed since the last word.
    settle_ms = 1000 + 250 + 250
    quiet_ms = []
    start_ms = 0
    for length_s in (QUIET_S, demo_s, QUIET_S, demo_s, QUIET_S):
        quiet_ms.append((start_ms, start_ms + int(length_s * 1000)))
        start_ms += int(length_s * 1000)
    quiet_ms = quiet_ms[0::2]
    first, second, third = quiet_ms
    in_quiet = [
        (t, ran)
        for t, ran in ran_on
        if first[0] < t <= first[1] or second[0] + settle_ms < t <= second[1] or third[0] + settle_ms < t
    ]
    assert len(in_quiet) > 2500
    assert [t for t, ran in in_quiet if ran] == []
    # demo.wav is dense (a word every few seconds over noise that changes level): it runs.
    assert sum(ran for _, ran in ran_on) > 1500


def test_the_gate_decides_the_same_whatever_the_block_size(bundle, quiet_room_with_words):
    audio, _ = quiet_room_with_words
    audio = audio[: RATE_HZ * 30]
    _, big, _, _ = run(bundle, audio, GateSettings(enabled=True), block=RATE_HZ * 3)
    _, small, _, _ = run(bundle, audio, GateSettings(enabled=True), block=320)
    assert big == small


def test_a_per_clip_micro_front_end_scores_the_windows_it_runs_as_without_the_gate(
    bundle, quiet_room_with_words
):
    # The demo's model behind a 13-channel micro front end (per_clip: each window its own front
    # end, computed as the frames come): the scores mean little, but must be the same numbers.
    spec = FrontendSpec(FrontendKind.MICRO, micro=MicroParams(channel_count=13))
    micro = make_bundle(bundle.tflite, bundle.labels, spec, name="micro", tool="test")
    audio, _ = quiet_room_with_words
    audio = audio[: RATE_HZ * 60]
    scores = {}
    for gate in (None, GateSettings(enabled=True)):
        pipeline = build_pipeline(micro, gate=gate)
        seen = scores[gate] = {}
        pipeline.on_scores = lambda t, s, seen=seen: seen.__setitem__(t, s.copy())
        for start in range(0, len(audio), 4000):
            pipeline.feed(audio[start : start + 4000])
            assert len(pipeline.features.per_clip._done) <= 15  # skipped windows are not kept
    off, on = scores[None], scores[GateSettings(enabled=True)]
    assert list(on) == list(off)
    silence = silence_scores(bundle.labels, "_silence_")
    skipped = [t for t in on if np.array_equal(on[t], silence) and not np.array_equal(off[t], silence)]
    assert len(skipped) > 500
    assert all(np.array_equal(on[t], off[t]) for t in on if t not in skipped)


def test_a_loud_steady_noise_raises_the_floor_and_closes_the_gate_after_a_while(bundle):
    # 10 s of quiet room, then a fan 35 dB louder for 30 s.
    audio = to_int16(np.concatenate([room_noise(10, -65, seed=6), room_noise(30, -30, seed=7)]))
    settings = GateSettings(enabled=True)
    _, ran, pipeline, _ = run(bundle, audio, settings)
    times_run = [t for t, was_run in ran if was_run]
    # Nothing runs in the quiet; from the step on, everything does until the floor has risen to
    # within margin_db of the fan (about (35 - 12) dB at 3 dB/s, plus the clip and hangover).
    assert times_run[0] == next(t for t, _ in ran if t > 10_000)
    assert [t for t, _ in ran if times_run[0] <= t <= times_run[-1]] == times_run  # one stretch
    assert 10_000 + 6_000 < times_run[-1] < 10_000 + 11_000
    assert [t for t, was_run in ran if t > times_run[-1] and was_run] == []
    assert pipeline.gate.floor_dbfs > -30 - settings.margin_db


def test_the_floor_never_goes_below_floor_min_dbfs_so_digital_silence_keeps_it_closed():
    gate = EnergyGate(GateSettings(enabled=True), sample_rate_hz=RATE_HZ, span_samples=RATE_HZ)
    silence = np.zeros(RATE_HZ * 3, np.int16)
    gate.push(silence)
    assert gate.floor_dbfs == -70.0
    # A few bits of noise (about -84 dBFS) are not a sound; a -50 dBFS sound is.
    gate.push(to_int16(room_noise(1, -84, seed=8)))
    assert not gate.is_open(RATE_HZ * 4)
    gate.push(to_int16(room_noise(0.1, -50, seed=9)))
    assert gate.is_open(RATE_HZ * 4 + RATE_HZ // 10)


def test_gate_settings_are_validated_with_the_key_and_the_expected_range():
    with pytest.raises(ConfigError) as err:
        parse_config(
            "audio:\n  gate:\n    enabled: yes\n    margin_db: 0.5\n    hangover_ms: 250.5\n"
            "    floor_min_dbfs: -130\n    floor_rise_db_per_s: .inf\n    hangover: 3\n"
        )
    assert err.value.problems == [
        "audio.gate.enabled: expected true or false, got 'yes'",
        "audio.gate.margin_db: expected a number of dB 1..60, got 0.5",
        "audio.gate.hangover_ms: expected a whole number of milliseconds 0..10000, got 250.5",
        "audio.gate.floor_min_dbfs: expected a number of dBFS -120..-20, got -130",
        "audio.gate.floor_rise_db_per_s: expected a number of dB per second 0.1..60, got inf",
        "audio.gate.hangover: unknown key; did you mean 'hangover_ms'?",
    ]
    with pytest.raises(ConfigError) as err:
        parse_config("audio:\n  gate: true\n")
    assert err.value.problems == ["audio.gate: expected a mapping of settings, got True"]
    assert parse_config("").audio.gate == GateSettings(
        enabled=False, margin_db=12.0, hangover_ms=250, floor_min_dbfs=-70.0, floor_rise_db_per_s=3.0
    )
    assert parse_config("audio:\n  gate:\n    enabled: true\n    margin_db: 15\n").audio.gate == GateSettings(
        enabled=True, margin_db=15.0
    )


def test_the_shipped_config_documents_every_gate_key_at_its_default():
    text = (ROOT / "config.yaml").read_text()
    assert parse_config(text).audio.gate == GateSettings()
    for field in dataclasses.fields(GateSettings):
        assert f"    {field.name}: " in text


@pytest.fixture(scope="module")
def model_without_silence(tmp_path_factory):
    demo = read_bundle(demo_bundle_path())
    labels = tuple("quiet" if label == "_silence_" else label for label in demo.labels)
    path = tmp_path_factory.mktemp("nosilence") / "nosilence.kwsd"
    write_bundle(dataclasses.replace(demo, labels=labels, name="nosilence"), path)
    return path


def test_a_model_without_a_silence_label_is_refused_with_the_gate_on(model_without_silence, tmp_path):
    bundle = read_bundle(model_without_silence)
    with pytest.raises(PipelineError) as err:
        build_pipeline(bundle, gate=GateSettings(enabled=True))
    assert str(err.value).startswith(
        "audio.gate.enabled: the model nosilence has no _silence_ label (its labels: quiet, _unknown_, yes,"
    )
    build_pipeline(bundle, gate=GateSettings(enabled=False))  # the gate off: no objection
    # kwsd run and kwsd check-config refuse it at start, with the same words and exit 78.
    config = tmp_path / "config.yaml"
    config.write_text(f"model: {model_without_silence}\naudio:\n  gate:\n    enabled: true\n")
    results = [
        subprocess.run(
            [sys.executable, "-m", "kwsd", *args], capture_output=True, timeout=60, cwd=ROOT, check=False
        )
        for args in (("run", "-c", str(config)), ("check-config", str(config)))
    ]
    for result in results:
        assert result.returncode == 78, result.stderr.decode()
        assert result.stderr.decode().startswith(
            f"kwsd: error: {config}: audio.gate.enabled: the model nosilence has no _silence_ label"
        )
    assert results[0].stderr == results[1].stderr


def test_kwsd_stream_takes_the_gate_and_reports_what_it_skipped(bundle, tmp_path, quiet_room_with_words):
    import wave

    audio, _ = quiet_room_with_words
    path = tmp_path / "room.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE_HZ)
        out.writeframes(audio.tobytes())
    outputs = {}
    for flags in ((), ("--gate",)):
        result = subprocess.run(
            [sys.executable, "-m", "kwsd", "stream", str(path), "--stats", *flags],
            capture_output=True,
            timeout=120,
            cwd=ROOT,
            check=True,
        )
        outputs[flags] = result
    assert outputs[("--gate",)].stdout == outputs[()].stdout
    assert "audio gate skipped" not in outputs[()].stderr.decode()
    # The same count as the pipeline in this process makes of the same audio.
    _, _, pipeline, _ = run(bundle, audio, GateSettings(enabled=True))
    stats_line = outputs[("--gate",)].stderr.decode().strip().splitlines()[-1]
    assert pipeline.stats.windows == 6551
    assert stats_line.endswith(f"; audio gate skipped {pipeline.stats.gate_skipped} of 6551 windows")


def test_the_stats_message_counts_the_windows_the_gate_skipped(bundle, quiet_room_with_words):
    audio, _ = quiet_room_with_words
    pipeline = build_pipeline(bundle, gate=GateSettings(enabled=True))
    pipeline.feed(audio[: RATE_HZ * 25])

    class NoPublisher:
        def counters(self):
            return {}

        def score_sink(self):
            return None

    listener = Listener(
        lambda: None,
        pipeline,
        NoPublisher(),
        EventStamper(bundle.name, bundle.sha256, boot_id="test"),
        stall_timeout_ms=1000,
        notifier=SystemdNotifier({}),
    )
    stats = listener.stats()
    assert stats["gate"] == {"windows": pipeline.stats.windows, "skipped": pipeline.stats.gate_skipped}
    assert pipeline.stats.windows == 1201 and pipeline.stats.gate_skipped > 900
    ungated = build_pipeline(bundle)
    plain = Listener(
        lambda: None,
        ungated,
        NoPublisher(),
        EventStamper(bundle.name, bundle.sha256, boot_id="test"),
        stall_timeout_ms=1000,
        notifier=SystemdNotifier({}),
    )
    assert "gate" not in plain.stats()
