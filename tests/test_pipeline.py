"""The pipeline's timing contract, with the demo model made by our training tool."""

import itertools

import numpy as np
import pytest

from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.detection import DetectionSettings, resolve_detection
from kwsd.frontend import compute_features
from kwsd.pipeline import Pipeline, PipelineError, build_pipeline


@pytest.fixture(scope="module")
def demo():
    bundle = read_bundle(demo_bundle_path())
    return bundle, TfliteClassifier(bundle)


def scores_seen(bundle, classifier, samples, clip_stride_ms, *, blocks, recompute=False):
    pipeline = Pipeline(
        bundle.frontend,
        classifier,
        bundle.labels,
        DetectionSettings(clip_stride_ms=clip_stride_ms),
        recompute_full_window=recompute,
    )
    seen = []
    pipeline.on_scores = lambda t, s: seen.append((t, s.copy()))
    for block in np.array_split(samples, blocks):
        pipeline.feed(block)
    return seen


def test_windows_run_every_clip_stride_in_audio_time(demo):
    bundle, classifier = demo
    samples = read_wav(demo_wav_path(), 16000)[: 3 * 16000]
    seen = scores_seen(bundle, classifier, samples, 40, blocks=7)
    times = [t for t, _ in seen]
    # First window: 49 frames of 30 ms every 20 ms end at 990 ms; then one every 40 ms.
    assert times[:3] == [990, 1030, 1070]
    assert np.all(np.diff(times) == 40)
    assert len(times) == 1 + (1 + (len(samples) - 480) // 320 - 49) // 2


def test_each_window_is_the_batch_features_of_its_own_samples(demo):
    bundle, classifier = demo
    samples = read_wav(demo_wav_path(), 16000)[: 4 * 16000]
    streamed = scores_seen(bundle, classifier, samples, 20, blocks=13)
    recomputed = scores_seen(bundle, classifier, samples, 20, blocks=5, recompute=True)
    assert [t for t, _ in streamed] == [t for t, _ in recomputed]
    for (t, a), (_, b) in zip(streamed, recomputed, strict=True):
        assert np.array_equal(a, b), t
    # And the first window is exactly label-wav's view of the first 990 ms.
    first = classifier.classify(compute_features(bundle.frontend, samples[: bundle.frontend.span_samples]))
    assert np.array_equal(streamed[0][1], first)


def test_clip_stride_must_be_a_multiple_of_the_window_stride(demo):
    bundle, classifier = demo
    with pytest.raises(
        PipelineError,
        match=r"clip_stride_ms: expected a positive multiple of the "
        r"model's window stride \(20 ms\), got 30",
    ):
        Pipeline(bundle.frontend, classifier, bundle.labels, DetectionSettings(clip_stride_ms=30))


def test_new_detection_settings_mid_stream_do_not_report_a_word_twice():
    # A reload right after a word was reported: the new smoother carries on the old one's
    # history (scores and suppression), so the word is not reported again, and the new
    # threshold applies to the words after it.
    bundle = read_bundle(demo_bundle_path())
    spec = bundle.frontend
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=spec.window_stride_ms)
    samples = read_wav(demo_wav_path(), spec.sample_rate_hz)
    classifier = TfliteClassifier(bundle)
    first, second, third = build_pipeline(bundle, settings, classifier=classifier).feed(samples)[:3]
    assert third.label not in (first.label, second.label), "the test needs a third word of its own"
    samples = samples[: (third.audio_time_ms + 500) * 16]
    pipeline = build_pipeline(bundle, settings, classifier=classifier)
    before = pipeline.feed(samples[: first.audio_time_ms * 16])  # the reload comes right after the word
    assert before == [first]
    stricter = settings.replace(label_thresholds={third.label: 1.0})
    pipeline.set_detection(stricter)
    after = pipeline.feed(samples[first.audio_time_ms * 16 :])
    assert after == [second]


def test_after_a_reset_no_window_takes_audio_from_before_the_gap():
    bundle = read_bundle(demo_bundle_path())
    spec = bundle.frontend
    pipeline = build_pipeline(bundle)
    stride = pipeline.settings.clip_stride_ms
    windows = []
    pipeline.on_scores = lambda time_ms, scores: windows.append(time_ms)
    pipeline.feed(np.zeros(1234 * 16, np.int16))  # not a whole number of frames
    gap_ms = pipeline.audio_time_ms()
    pipeline.reset()
    seen = len(windows)
    pipeline.feed(np.zeros(3000 * 16, np.int16))
    after = windows[seen:]
    # The first window after the gap starts after it: it ends a whole clip later, or more.
    assert after and after[0] >= gap_ms + spec.clip_duration_ms
    assert after[0] - (gap_ms + spec.clip_duration_ms) <= spec.window_size_ms + stride
    assert all(b - a == stride for a, b in itertools.pairwise(after))
