"""Several models on one audio stream (``models`` in config.yaml, :class:`kwsd.pipeline.MultiPipeline`).

The models are the demo's network behind renamed keywords (so each model's detections are known:
the demo's, renamed) and behind another front end; `kwsd run` hears them through a real ALSA
FIFO device and a real mosquitto.
"""

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_run import run_daemon_with_broker

from kwsd.audio import read_wav
from kwsd.bundle import Bundle, demo_bundle_path, demo_wav_path, make_bundle, read_bundle, write_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.detection import resolve_detection
from kwsd.frontend import FrontendKind, FrontendSpec, MicroParams, StreamingFrontend
from kwsd.gate import GateSettings
from kwsd.pipeline import Model, MultiPipeline, PipelineError, build_pipeline, check_keywords
from kwsd_tools.harness import alsa, broker

ROOT = Path(__file__).resolve().parents[1]
RATE_HZ = 16000


def renamed(bundle: Bundle, suffix: str, name: str, spec: FrontendSpec | None = None) -> Bundle:
    """The demo's network under other keyword names (``yes`` -> ``yes<suffix>``), and front end."""
    labels = [label if label.startswith("_") else label + suffix for label in bundle.labels]
    return make_bundle(
        bundle.tflite,
        labels,
        spec or bundle.frontend,
        name=name,
        tool="test",
        detection=bundle.detection,
    )


@pytest.fixture(scope="module")
def demo() -> Bundle:
    return read_bundle(demo_bundle_path())


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return read_wav(demo_wav_path(), RATE_HZ)


def settings_of(bundle: Bundle):
    return resolve_detection(bundle.detection, {}, window_stride_ms=bundle.frontend.window_stride_ms)


def model(bundle: Bundle, name: str | None = None) -> Model:
    return Model(
        name or bundle.name,
        bundle.frontend,
        TfliteClassifier(bundle),
        tuple(bundle.labels),
        settings_of(bundle),
    )


def alone(bundle: Bundle, audio: np.ndarray, gate: GateSettings | None = None):
    """(label, audio time, score) of each detection of ``bundle`` listening by itself."""
    pipeline = build_pipeline(bundle, gate=gate)
    found = []
    for start in range(0, len(audio), 4000):
        found += [(d.label, d.audio_time_ms, d.score) for d in pipeline.feed(audio[start : start + 4000])]
    return found


def feed_in_odd_blocks(pipeline: MultiPipeline, audio: np.ndarray):
    found = []
    for block in np.array_split(audio, 37):
        found += pipeline.feed(block)
    return found


def test_models_with_one_front_end_share_it_and_each_hears_what_it_hears_alone(demo, audio, monkeypatch):
    other = renamed(demo, "_b", "other")
    pushes = []
    original = StreamingFrontend.push
    monkeypatch.setattr(StreamingFrontend, "push", lambda self, s: pushes.append(len(s)) or original(self, s))
    pipeline = MultiPipeline([model(demo), model(other)])
    assert len(pipeline.features) == 1
    found = feed_in_odd_blocks(pipeline, audio)
    # The frames were computed once: one push per chunk, not one per model.
    assert sum(pushes) == len(audio)
    monkeypatch.setattr(StreamingFrontend, "push", original)
    expected = alone(demo, audio)
    assert len(expected) >= 6
    by_model = {
        name: [(d.label, d.audio_time_ms, d.score) for d in found if d.model == name]
        for name in pipeline.names
    }
    assert by_model["demo"] == expected
    assert by_model["other"] == [(label + "_b", t, score) for label, t, score in expected]
    assert [d.audio_time_ms for d in found] == sorted(d.audio_time_ms for d in found)  # oldest first
    assert pipeline.stats.windows == sum(p.stats.windows for p in pipeline.pipelines)
    assert pipeline.pipelines[0].stats.windows == pipeline.pipelines[1].stats.windows > 0


def test_each_model_keeps_its_own_detection_settings_on_the_shared_front_end(demo, audio):
    other = renamed(demo, "_b", "other")
    strict = dataclasses.replace(settings_of(other), threshold=0.99)
    pipeline = MultiPipeline(
        [model(demo), Model("other", other.frontend, TfliteClassifier(other), tuple(other.labels), strict)]
    )
    found = feed_in_odd_blocks(pipeline, audio)
    assert [d.label for d in found if d.model == "demo"] == [label for label, _, _ in alone(demo, audio)]
    strict_heard = [d for d in found if d.model == "other"]
    assert len(strict_heard) < len(alone(demo, audio))
    assert all(d.score >= 0.99 for d in strict_heard)
    assert pipeline.threshold_of("yes_b") == 0.99 and pipeline.threshold_of("yes") < 0.99


def test_a_model_with_another_front_end_gets_its_own_from_the_same_samples(demo, audio):
    micro_spec = FrontendSpec(FrontendKind.MICRO, micro=MicroParams(channel_count=13))
    micro = renamed(demo, "_m", "micro", micro_spec)
    stepped = renamed(demo, "_s", "stepped", dataclasses.replace(demo.frontend, window_size_ms=25))
    pipeline = MultiPipeline([model(demo), model(micro), model(stepped)])
    assert len(pipeline.features) == 3
    found = feed_in_odd_blocks(pipeline, audio)
    for bundle in (demo, micro, stepped):
        heard = [(d.label, d.audio_time_ms, d.score) for d in found if d.model == bundle.name]
        assert heard == alone(bundle, audio), bundle.name


def test_the_gate_decides_once_per_front_end_and_every_model_hears_as_alone(demo, audio):
    other = renamed(demo, "_b", "other")
    # Quiet between the demo's words: 30 s of near silence after the demo.
    rng = np.random.default_rng(3)
    quiet = (rng.standard_normal(30 * RATE_HZ) * 10).astype(np.int16)
    mix = np.concatenate([audio, quiet, audio])
    gate = GateSettings(enabled=True)
    pipeline = MultiPipeline([model(demo), model(other)], gate=gate)
    found = feed_in_odd_blocks(pipeline, mix)
    single = build_pipeline(demo, gate=gate)
    for block in np.array_split(mix, 11):
        single.feed(block)
    assert single.stats.gate_skipped > 500
    assert [p.stats.gate_skipped for p in pipeline.pipelines] == [single.stats.gate_skipped] * 2
    assert pipeline.stats.gate_skipped == 2 * single.stats.gate_skipped
    assert [(d.label, d.audio_time_ms) for d in found if d.model == "demo"] == [
        (label, t) for label, t, _ in alone(demo, mix, gate)
    ]


def test_the_smoothed_scores_hook_gets_every_models_labels_once(demo, audio):
    other = renamed(demo, "_b", "other")
    pipeline = MultiPipeline([model(demo), model(other)])
    assert pipeline.labels[: len(demo.labels)] == demo.labels
    assert len(pipeline.labels) == len(set(demo.labels) | set(other.labels))
    seen = []
    pipeline.on_smoothed = lambda t, s: seen.append((t, s))
    pipeline.feed(audio[: 3 * RATE_HZ])
    assert seen and all(len(s) == len(pipeline.labels) for _, s in seen)
    times = [t for t, _ in seen]
    assert times == sorted(set(times))  # once per window time, in order
    yes, yes_b = pipeline.labels.index("yes"), pipeline.labels.index("yes_b")
    # The same network on the same frames: at every window both models' scores are current.
    assert all(s[yes] == pytest.approx(s[yes_b]) for _, s in seen)


def test_models_at_different_rates_or_sharing_a_keyword_are_refused_naming_both(demo):
    mfcc = dataclasses.replace(demo.frontend.mfcc, high_freq_hz=3800)
    slow = renamed(demo, "_s", "slow", dataclasses.replace(demo.frontend, sample_rate_hz=8000, mfcc=mfcc))
    with pytest.raises(PipelineError, match=r"demo \(16000 Hz\) and slow \(8000 Hz\)"):
        MultiPipeline([model(demo), model(slow)])
    with pytest.raises(PipelineError, match=r"'yes' is in two models, a\.kwsd and b\.kwsd"):
        check_keywords([("a.kwsd", demo.labels), ("b.kwsd", demo.labels)])
    check_keywords(
        [("a.kwsd", demo.labels), ("b.kwsd", renamed(demo, "_b", "b").labels)]
    )  # _silence_ is shared


# --- kwsd check-config and kwsd run -------------------------------------------------------------


def kwsd(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=timeout,
    )


@pytest.fixture
def bundles(tmp_path, demo):
    other = write_bundle(renamed(demo, "_b", "other"), tmp_path / "other.kwsd")
    twin = write_bundle(renamed(demo, "", "twin"), tmp_path / "twin.kwsd")
    return str(demo_bundle_path()), str(other), str(twin)


def check_config(tmp_path, text):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return kwsd("check-config", config)


def test_check_config_accepts_several_models_and_says_how_they_share(tmp_path, bundles):
    demo, other, _ = bundles
    result = check_config(
        tmp_path,
        f"models:\n  - {demo}\n  - path: {other}\n    detection: {{threshold: 0.9}}\n"
        "detection:\n  label_thresholds: {yes: 0.7}\n",
    )
    assert result.returncode == 0, result.stderr
    assert "2 models on 1 front end" in result.stdout
    assert "demo" in result.stdout and "other" in result.stdout and "threshold 0.9" in result.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "models:\n  - {demo}\n  - {twin}\n",
            r"models: the keyword 'yes' is in two models, {demo} and {twin}",
        ),
        ("model: {demo}\nmodels:\n  - {other}\n", r"models: give either model .* or models .*, not both"),
        (
            "models:\n  - {other}\n  - {other}\n",
            r"models: {other} is given twice; each model may be loaded once",
        ),
        (
            "models:\n  - {demo}\n  - path: {other}\n    detection: {{threshold: 2}}\n",
            r"models\[1\]\.detection\.threshold",
        ),
        ("models:\n  - {demo}\n  - {{detection: {{}}}}\n", r"models\[1\]\.path: missing"),
        ("models: []\n", r"models: expected a list of \.kwsd bundle paths"),
        (
            "models:\n  - {demo}\n  - {other}\ndetection:\n  label_thresholds: {{nope: 0.5}}\n",
            r"detection\.label_thresholds\.nope: no loaded model has this label",
        ),
    ],
)
def test_check_config_and_run_refuse_what_several_models_cannot_be(tmp_path, bundles, config, message):
    demo, other, twin = bundles
    text = config.format(demo=demo, other=other, twin=twin, tmp=tmp_path)
    pattern = message.format(demo=demo, other=other, twin=twin)
    checked = check_config(tmp_path, text)
    ran = kwsd("run", "-c", tmp_path / "config.yaml")
    for result in (checked, ran):
        assert result.returncode == 78, result.stderr
        assert "Traceback" not in result.stderr
        assert re.search(pattern, result.stderr), result.stderr


needs_mosquitto = pytest.mark.skipif(not Path(broker.MOSQUITTO).exists(), reason="mosquitto is not installed")


@needs_mosquitto
@pytest.mark.skipif(not alsa.portaudio_available(), reason="libportaudio2 is not installed")
def test_run_hears_with_two_models_on_one_front_end_and_each_event_names_its_model(tmp_path, bundles):
    demo_path, other_path, _ = bundles
    demo, other = read_bundle(demo_path), read_bundle(other_path)

    def six_detections(subscriber):
        return sum(m.topic == "kwsd/pi1/detection" for m in subscriber.messages) >= 6

    expected, code, stdout, log, messages = run_daemon_with_broker(
        tmp_path,
        "  home_assistant:\n    enabled: true\n  hermes:\n    enabled: true\n",
        f"models:\n  - {demo_path}\n  - path: {other_path}\n    detection: {{suppression_ms: 700}}\n"
        f"capture:\n  enabled: true\n  directory: {tmp_path / 'captures'}\n",
        settled=six_detections,
        run_args=["--scores"],
    )
    assert code == 0, log
    assert "2 models on 1 front end" in log
    # --scores: one line per window time with every model's labels, each current.
    lines = [json.loads(line) for line in stdout]
    assert lines and all(
        list(line["scores"]) == list(dict.fromkeys(demo.labels + other.labels)) for line in lines
    )
    assert all(b["audio_time_ms"] - a["audio_time_ms"] == 20 for a, b in itertools.pairwise(lines))
    assert all(line["scores"]["yes"] == pytest.approx(line["scores"]["yes_b"], abs=1e-4) for line in lines)
    events = [json.loads(m.payload) for m in messages if m.topic == "kwsd/pi1/detection"]
    assert [e["sequence"] for e in events] == list(range(1, 7))
    for bundle, suffix in ((demo, ""), (other, "_b")):
        mine = [e for e in events if e["model"]["name"] == bundle.name]
        assert [e["label"] for e in mine] == [d["label"] + suffix for d in expected]
        assert {e["model"]["sha256"] for e in mine} == {bundle.sha256}
    # Each model's words, in the log by model, and to Home Assistant and Hermes as one device's.
    assert sum(f"heard other: {d['label']}_b " in log for d in expected) == len(expected)
    configs = [json.loads(m.payload) for m in messages if m.topic.startswith("homeassistant/event/kwsd_pi1/")]
    keywords = [label for bundle in (demo, other) for label in bundle.labels if not label.startswith("_")]
    assert sorted(c["name"] for c in configs) == sorted(keywords)
    hotwords = {m.topic: json.loads(m.payload) for m in messages if m.topic.startswith("hermes/hotword/")}
    assert hotwords[f"hermes/hotword/{expected[0]['label']}_b/detected"]["modelVersion"] == other.sha256[:12]
    assert hotwords[f"hermes/hotword/{expected[0]['label']}/detected"]["modelVersion"] == demo.sha256[:12]
    # Captures: each model's detections, each with its own model, labels and smoothed scores.
    sidecars = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "captures" / "pending").glob("*/*.json"))
    ]
    assert len(sidecars) == 2 * len(expected)
    for bundle, suffix in ((demo, ""), (other, "_b")):
        mine = [c for c in sidecars if c["model"]["name"] == bundle.name]
        assert sorted(c["label"] for c in mine) == sorted(d["label"] + suffix for d in expected)
        assert all(c["labels"] == list(bundle.labels) for c in mine)
        assert all(len(w["scores"]) == len(bundle.labels) for c in mine for w in c["scores"])
        assert all(c["model"]["sha256"] == bundle.sha256 for c in mine)
    ledger = json.loads((tmp_path / "captures" / "listened.json").read_text())
    assert ledger["listened_ms"] >= expected[-1]["audio_time_ms"]  # one ledger for both models


def test_a_reload_gives_each_model_its_settings_and_refuses_another_set_of_models(tmp_path, bundles, caplog):
    from kwsd import daemon

    demo_path, other_path, _ = bundles
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  - {demo_path}\n  - {other_path}\n")
    prepared = daemon.prepare_model(str(config))
    running = daemon._Running(prepared.config, str(config))
    pipeline = MultiPipeline(
        [
            Model(m.key, m.bundle.frontend, m.classifier, tuple(m.bundle.labels), m.detection)
            for m in prepared.models
        ]
    )
    config.write_text(
        f"models:\n  - {demo_path}\n  - path: {other_path}\n    detection: {{threshold: 0.95}}\n"
        "detection:\n  label_thresholds: {yes: 0.5}\n"
    )
    reload = daemon._reload(running, str(config), prepared.models, verbose=True)
    assert reload is not None
    pipeline.set_detection(reload.detection)
    assert pipeline.threshold_of("yes") == 0.5  # the top-level label threshold, in the model with yes
    assert pipeline.threshold_of("no") == prepared.models[0].detection.threshold
    assert pipeline.threshold_of("yes_b") == pipeline.threshold_of("no_b") == 0.95
    config.write_text(f"models:\n  - {demo_path}\n")
    assert daemon._reload(running, str(config), prepared.models, verbose=True) is None
    assert "models: 1 given where 2 run now; adding or removing models needs a restart" in caplog.text
