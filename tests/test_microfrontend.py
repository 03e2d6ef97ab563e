"""kwsd's micro front end against TensorFlow's ``audio_microfrontend`` op, and its two state
semantics: ``per_clip`` (a fresh front end per window, what train.py trains on) and
``continuous`` (one front end over the stream, as the micro_speech firmware runs it).

Measured over the clips here (real speech from Speech Commands, see fixtures/realspeech/README.md,
and synthetic noise, clipping, near-silence, silence and a sweep) at 30/20, 30/10 and 25/15 ms,
plus a 20/10 ms, 32-channel, 100-4000 Hz front end: every value equals the op's, bit for bit
(largest difference 0, 100% exactly equal). The tests assert exactly that.

The comparisons with TensorFlow skip when it is not installed (``pip install 'kwsd[train]'``);
the streaming == batch tests need only numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kwsd.audio import read_wav
from kwsd.detection import DetectionSettings
from kwsd.frontend import (
    FrontendKind,
    FrontendSpec,
    MicroParams,
    MicroState,
    PerClipMicroFrontend,
    SpecError,
    StreamingFrontend,
    compute_features,
)
from kwsd.pipeline import Pipeline

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "realspeech"
RATE_HZ = 16000
OUTPUT_SCALE = np.float32(10 / 256)

#: (window ms, stride ms, MicroParams changes): micro_speech's, train.py's default, another
#: window/step, and another channel count and band.
CONFIGURATIONS = [
    (30, 20, {}),
    (30, 10, {}),
    (25, 15, {}),
    (20, 10, {"channel_count": 32, "low_freq_hz": 100.0, "high_freq_hz": 4000.0}),
]


def spec_for(
    window_ms: int, stride_ms: int, state: MicroState = MicroState.PER_CLIP, **changes: Any
) -> FrontendSpec:
    return FrontendSpec(
        FrontendKind.MICRO,
        window_size_ms=window_ms,
        window_stride_ms=stride_ms,
        micro=MicroParams(state=state, **changes),
    )


def speech_clips() -> dict[str, np.ndarray]:
    return {path.stem: read_wav(path, RATE_HZ) for path in sorted(FIXTURES.glob("*.wav"))}


def synthetic_clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    t = np.arange(RATE_HZ) / RATE_HZ
    envelope = np.clip(np.sin(2 * np.pi * 1.3 * t), 0, None) ** 2
    return {
        "speechlike_noise": (rng.standard_normal(RATE_HZ) * 8000 * envelope).astype(np.int16),
        "clipped_loud": np.clip(rng.standard_normal(RATE_HZ) * 30000, -32768, 32767).astype(np.int16),
        "near_silence": (rng.standard_normal(RATE_HZ) * 2).astype(np.int16),
        "silence": np.zeros(RATE_HZ, np.int16),
        "sweep": (20000 * np.sin(2 * np.pi * (100 + 3900 * t) * t)).astype(np.int16),
        "full_scale_square": np.where(np.sin(2 * np.pi * 440 * t) >= 0, 32767, -32768).astype(np.int16),
    }


def long_stream() -> np.ndarray:
    """About 14 s: background noise under the speech clips, then the synthetic ones."""
    clips = speech_clips()
    noise = clips.pop("background_noise_3s")
    speech = np.concatenate(list(clips.values()))
    bed = np.resize(noise, len(speech)).astype(np.int32) + speech
    parts = [np.clip(bed, -32768, 32767).astype(np.int16), noise, *synthetic_clips().values()]
    return np.concatenate(parts)


def in_random_blocks(push: Any, samples: np.ndarray, seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(samples):
        n = int(rng.integers(1, 2500))
        out.append(push(samples[i : i + n]))
        i += n
    return out


@pytest.fixture(scope="module")
def tf_microfrontend() -> Any:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed (pip install 'kwsd[train]')")
    import tensorflow as tf
    from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op

    def run(spec: FrontendSpec, samples: np.ndarray) -> np.ndarray:
        """What train.py --preprocess=micro computes: the op's float output * 10/256."""
        p = spec.micro
        assert p is not None
        out = audio_microfrontend_op.audio_microfrontend(
            tf.constant(samples, tf.int16),
            sample_rate=spec.sample_rate_hz,
            window_size=spec.window_size_ms,
            window_step=spec.window_stride_ms,
            num_channels=p.channel_count,
            upper_band_limit=p.high_freq_hz,
            lower_band_limit=p.low_freq_hz,
            smoothing_bits=p.smoothing_bits,
            even_smoothing=p.even_smoothing,
            odd_smoothing=p.odd_smoothing,
            min_signal_remaining=p.min_signal_remaining,
            enable_pcan=p.pcan_gain_control,
            pcan_strength=p.pcan_strength,
            pcan_offset=p.pcan_offset,
            gain_bits=p.gain_bits,
            enable_log=p.log_scale,
            scale_shift=p.scale_shift,
            out_scale=1,
            out_type=tf.float32,
        )
        return (out * (10 / 256)).numpy()

    return run


@pytest.mark.parametrize(("window_ms", "stride_ms", "changes"), CONFIGURATIONS)
def test_per_clip_features_equal_tensorflows_op_on_every_clip(
    tf_microfrontend: Any, window_ms: int, stride_ms: int, changes: dict[str, Any]
) -> None:
    spec = spec_for(window_ms, stride_ms, **changes)
    clips = {**speech_clips(), **synthetic_clips()}
    ours = np.stack([compute_features(spec, clip[: spec.clip_samples]) for clip in clips.values()])
    theirs = np.stack([tf_microfrontend(spec, clip[: spec.clip_samples]) for clip in clips.values()])
    assert ours.shape == theirs.shape == (len(clips), spec.frame_count, spec.feature_count)
    difference = np.abs(ours.astype(np.float64) - theirs)
    # Measured: largest difference 0 and every value equal, on speech and on the synthetic
    # clips (the integer arithmetic is the C's, step for step).
    assert difference.max() == 0.0
    assert np.mean(difference == 0) == 1.0
    # Loud frames too: above 26, values come from kwsd's fallback past its look-up table.
    assert theirs.max() > 26.0


@pytest.mark.parametrize(("window_ms", "stride_ms", "changes"), CONFIGURATIONS[:3])
def test_continuous_stream_equals_tensorflows_op_over_the_whole_stream(
    tf_microfrontend: Any, window_ms: int, stride_ms: int, changes: dict[str, Any]
) -> None:
    spec = spec_for(window_ms, stride_ms, MicroState.CONTINUOUS, **changes)
    stream = long_stream()
    frontend = StreamingFrontend(spec)
    ours = np.concatenate(in_random_blocks(frontend.push, stream, seed=window_ms + stride_ms))
    theirs = tf_microfrontend(spec, stream)
    assert ours.shape == theirs.shape == (1 + (len(stream) - spec.window_samples) // spec.stride_samples, 40)
    assert np.abs(ours.astype(np.float64) - theirs).max() == 0.0


@pytest.mark.parametrize(("window_ms", "stride_ms"), [(30, 20), (30, 10), (25, 15)])
@pytest.mark.parametrize("hop_frames", [1, 3])
def test_per_clip_stream_equals_the_batch_features_of_every_window(
    window_ms: int, stride_ms: int, hop_frames: int
) -> None:
    spec = spec_for(window_ms, stride_ms)
    stream = long_stream()[: 6 * RATE_HZ]
    frontend = PerClipMicroFrontend(spec)
    frontend.schedule(spec.frame_count, hop_frames)
    rng = np.random.default_rng(hop_frames)
    end, i, windows = spec.frame_count, 0, 0
    while i < len(stream):
        n = int(rng.integers(1, 2500))
        total = frontend.push(stream[i : i + n])
        i += n
        while end <= total:
            start = (end - spec.frame_count) * spec.stride_samples
            batch = compute_features(spec, stream[start : start + spec.clip_samples])
            assert np.array_equal(frontend.window(end), batch), end
            end += hop_frames
            windows += 1
    assert (
        windows
        == 1
        + (1 + (len(stream) - spec.window_samples) // spec.stride_samples - spec.frame_count) // hop_frames
    )


def test_a_window_off_the_schedule_is_computed_from_the_kept_frames() -> None:
    spec = spec_for(30, 20)
    stream = long_stream()[: 3 * RATE_HZ]
    frontend = PerClipMicroFrontend(spec)
    frontend.schedule(spec.frame_count, 5)
    total = frontend.push(stream)
    for end in (total, total - 1, total - 7):  # total - 1 and - 7 were never scheduled
        start = (end - spec.frame_count) * spec.stride_samples
        assert np.array_equal(frontend.window(end), compute_features(spec, stream[start:])), end


def test_per_clip_and_continuous_differ_inside_a_stream() -> None:
    """Why the state is recorded: a window inside a stream is not what a fresh front end
    makes of the same samples (the noise estimate has adapted to what came before)."""
    stream = long_stream()[: 4 * RATE_HZ]
    continuous = StreamingFrontend(spec_for(30, 20, MicroState.CONTINUOUS)).push(stream)
    spec = spec_for(30, 20)
    start = 80
    fresh = compute_features(spec, stream[start * 320 : start * 320 + spec.clip_samples])
    assert np.abs(continuous[start : start + 49] - fresh).max() > 5.0
    # From a stream's first sample the two are the same thing.
    assert np.array_equal(continuous[:49], compute_features(spec, stream))


class RecordingClassifier:
    """Keeps every feature matrix the pipeline classifies; scores are constant."""

    def __init__(self, labels: int) -> None:
        self.windows: list[np.ndarray] = []
        self._scores = np.full(labels, 1.0 / labels, np.float32)

    def classify(self, features: np.ndarray) -> np.ndarray:
        self.windows.append(features.copy())
        return self._scores


@pytest.mark.parametrize("state", list(MicroState))
def test_the_pipeline_classifies_each_windows_own_features(state: MicroState) -> None:
    spec = spec_for(30, 20, state)
    stream = long_stream()[: 5 * RATE_HZ]
    labels = ("_silence_", "_unknown_", "yes", "no")
    classifier = RecordingClassifier(len(labels))
    pipeline = Pipeline(spec, classifier, labels, DetectionSettings(clip_stride_ms=40))
    in_random_blocks(pipeline.feed, stream, seed=4)
    assert len(classifier.windows) == 1 + (1 + (len(stream) - 480) // 320 - 49) // 2
    continuous = StreamingFrontend(spec_for(30, 20, MicroState.CONTINUOUS)).push(stream)
    for k, window in enumerate(classifier.windows):
        first = 2 * k
        if state is MicroState.PER_CLIP:
            expected = compute_features(spec, stream[first * 320 : first * 320 + spec.clip_samples])
        else:
            expected = continuous[first : first + 49]
        assert np.array_equal(window, expected), k


def test_the_pipeline_keeps_per_clip_windows_right_across_a_stride_change_and_a_gap() -> None:
    spec = spec_for(30, 20)
    stream = long_stream()[: 6 * RATE_HZ]
    labels = ("_silence_", "_unknown_", "yes", "no")
    classifier = RecordingClassifier(len(labels))
    pipeline = Pipeline(spec, classifier, labels, DetectionSettings(clip_stride_ms=100))
    ends: list[int] = []
    pipeline.on_scores = lambda time_ms, scores: ends.append(time_ms)
    pipeline.feed(stream[: 2 * RATE_HZ])
    pipeline.set_detection(DetectionSettings(clip_stride_ms=20))  # hop 5 -> 1 frame
    pipeline.feed(stream[2 * RATE_HZ : 4 * RATE_HZ])
    pipeline.reset()
    pipeline.feed(stream[4 * RATE_HZ :])
    assert len(classifier.windows) == len(ends) > 60
    for time_ms, window in zip(ends, classifier.windows, strict=True):
        end_frame = (time_ms * 16 - 480) // 320 + 1  # frame_end_ms inverted (exact here)
        start = (end_frame - 49) * 320
        assert np.array_equal(window, compute_features(spec, stream[start : start + spec.clip_samples])), (
            time_ms
        )


def test_the_spec_records_every_parameter_and_round_trips() -> None:
    spec = spec_for(30, 20, MicroState.CONTINUOUS)
    data = spec.to_dict()
    assert data["micro"] == {
        "channel_count": 40,
        "low_freq_hz": 125.0,
        "high_freq_hz": 7500.0,
        "noise_reduction": True,
        "pcan_gain_control": True,
        "log_scale": True,
        "output_scale": 0.0390625,
        "smoothing_bits": 10,
        "even_smoothing": 0.025,
        "odd_smoothing": 0.06,
        "min_signal_remaining": 0.05,
        "pcan_strength": 0.95,
        "pcan_offset": 80.0,
        "gain_bits": 21,
        "scale_shift": 6,
        "state": "continuous",
    }
    assert FrontendSpec.from_dict(data) == spec
    assert FrontendSpec(FrontendKind.MICRO).micro == MicroParams(state=MicroState.PER_CLIP)


def test_a_bundle_from_before_the_state_field_reads_as_continuous() -> None:
    legacy = {
        "kind": "micro",
        "sample_rate_hz": 16000,
        "clip_duration_ms": 1000,
        "window_size_ms": 30,
        "window_stride_ms": 20,
        "micro": {
            "channel_count": 40,
            "low_freq_hz": 125.0,
            "high_freq_hz": 7500.0,
            "noise_reduction": True,
            "pcan_gain_control": True,
            "log_scale": True,
            "output_scale": 0.0390625,
            "native_step_ms": 10,
        },
    }
    assert FrontendSpec.from_dict(legacy) == spec_for(30, 20, MicroState.CONTINUOUS)
    with pytest.raises(SpecError, match=r"frontend.micro.native_step_ms: expected 10"):
        FrontendSpec.from_dict({**legacy, "micro": {**legacy["micro"], "native_step_ms": 20}})
    # A section that is neither today's nor the old one is refused, key by key.
    partial = {key: value for key, value in legacy["micro"].items() if key != "native_step_ms"}
    with pytest.raises(SpecError, match=r"frontend.micro.even_smoothing: missing"):
        FrontendSpec.from_dict({**legacy, "micro": partial})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"window_stride_ms": 40},
            r"window_stride_ms: the micro front end needs a stride no longer than its window",
        ),
        (
            {"micro": MicroParams(noise_reduction=False)},
            "micro.noise_reduction: the TFLite Micro front end always",
        ),
        (
            {"micro": MicroParams(high_freq_hz=9000.0)},
            r"micro.high_freq_hz: expected 0 <= low_freq_hz < high_freq_hz",
        ),
        ({"micro": MicroParams(even_smoothing=1.5)}, r"micro.even_smoothing: expected 0..1, got 1.5"),
        (
            # TensorFlow's op fails too ("failed to populate frontend state").
            {"micro": MicroParams(high_freq_hz=8000.0)},
            r"micro: the filterbank reaches FFT bin 257, above the spectrum's 257 bins",
        ),
    ],
)
def test_what_the_front_end_cannot_do_is_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        FrontendSpec(FrontendKind.MICRO, **kwargs)


def test_the_filterbank_square_root_rounds_as_the_c_does() -> None:
    """Sqrt64: isqrt rounded to nearest, except that its 32-bit shortcut keeps 65535."""
    import math

    from kwsd.microfrontend import _sqrt_round

    def reference(x: int) -> int:
        root = math.isqrt(x)
        limit = 0xFFFF if x < 2**32 else 0xFFFFFFFF
        return root + (x - root * root > root and root != limit)

    rng = np.random.default_rng(3)
    squares = [n * n + d for n in (1, 2, 3, 1000, 65534, 65535, 65536, 2**25 - 1) for d in (-1, 0, n, n + 1)]
    values = [*range(300), *squares, 2**32 - 1, 2**32, 2**52 + 12345, *rng.integers(0, 2**50, 2000).tolist()]
    values = [v for v in values if v >= 0]
    got = _sqrt_round(np.array(values, np.float64)).astype(np.int64).tolist()
    assert got == [reference(v) for v in values]
