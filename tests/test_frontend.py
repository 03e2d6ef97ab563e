"""Front-end spec arithmetic, agreement with python_speech_features, and streaming == batch."""

import numpy as np
import pytest

from kwsd.frontend import (
    FrontendKind,
    FrontendSpec,
    MfccParams,
    MicroParams,
    MicroState,
    SpecError,
    StreamingFrontend,
    WindowFunction,
    compute_features,
)


def noise(seconds, seed=0, rate=16000):
    rng = np.random.default_rng(seed)
    # Speech-like: noise under a slow amplitude envelope, with silent stretches.
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 0.7 * t), 0, None) ** 2
    return (rng.standard_normal(len(t)) * 6000 * envelope).astype(np.int16)


def stream_in_random_blocks(spec, samples, seed):
    rng = np.random.default_rng(seed)
    frontend = StreamingFrontend(spec)
    out, i = [], 0
    while i < len(samples):
        n = int(rng.integers(1, 3 * spec.stride_samples + 700))
        out.append(frontend.push(samples[i : i + n]))
        i += n
    return np.concatenate(out)


@pytest.mark.parametrize(("stride_ms", "frames"), [(20, 49), (10, 98), (30, 33)])
def test_derived_sizes(stride_ms, frames):
    spec = FrontendSpec(FrontendKind.MFCC, window_stride_ms=stride_ms)
    assert spec.window_samples == 480
    assert spec.stride_samples == 16 * stride_ms
    assert spec.clip_samples == 16000
    assert spec.frame_count == frames
    assert spec.feature_shape == (frames, 13)
    assert spec.span_samples == (frames - 1) * 16 * stride_ms + 480


def test_crying_clip_sizes():
    spec = FrontendSpec(
        FrontendKind.MFCC,
        sample_rate_hz=22050,
        clip_duration_ms=5000,
        window_size_ms=40,
        window_stride_ms=20,
        mfcc=MfccParams(fft_size=1024, high_freq_hz=11025.0),
    )
    assert (spec.window_samples, spec.stride_samples, spec.clip_samples) == (882, 441, 110250)
    assert spec.frame_count == 249


def test_mfcc_equals_python_speech_features_with_every_parameter_explicit():
    import python_speech_features as psf

    params = MfccParams(
        filter_count=32,
        cepstrum_count=10,
        fft_size=1024,
        low_freq_hz=60.0,
        high_freq_hz=7000.0,
        preemphasis=0.0,
        lifter=18,
        append_energy=True,
        window_function=WindowFunction.HANN,
    )
    spec = FrontendSpec(FrontendKind.MFCC, window_size_ms=40, window_stride_ms=20, mfcc=params)
    clip = noise(1.0, seed=3)
    ours = compute_features(spec, clip)
    theirs = psf.mfcc(
        clip[: spec.span_samples] / 32768.0,
        16000,
        0.040,
        0.020,
        10,
        32,
        1024,
        60.0,
        7000.0,
        0.0,
        18,
        True,
        np.hanning,
    )
    assert ours.shape == theirs.shape == (49, 10)
    # Only the float32 rounding of our output separates them (values up to ~20 here: a float32
    # step is ~2e-6). Full scale 32767 instead of 32768 would shift c0 by 6e-5 and fail this.
    np.testing.assert_allclose(ours.astype(np.float64), theirs, rtol=2e-7, atol=2e-6)


def test_preemphasis_is_applied_within_each_frame():
    import python_speech_features as psf

    spec = FrontendSpec(FrontendKind.MFCC)  # preemphasis 0.97
    clip = noise(1.0, seed=4)
    ours = compute_features(spec, clip)
    p = spec.mfcc
    for f in (0, 17, 48):
        frame = clip[f * 320 : f * 320 + 480] / 32768.0
        theirs = psf.mfcc(
            frame,
            16000,
            0.03,
            0.02,
            p.cepstrum_count,
            p.filter_count,
            p.fft_size,
            p.low_freq_hz,
            p.high_freq_hz,
            p.preemphasis,
            p.lifter,
            p.append_energy,
            np.hamming,
        )
        assert np.allclose(ours[f], theirs[0], atol=1e-4)


@pytest.mark.parametrize(("window_ms", "stride_ms"), [(20, 30), (25, 50)])
def test_mfcc_streaming_equals_batch_when_the_stride_is_longer_than_the_window(window_ms, stride_ms):
    spec = FrontendSpec(FrontendKind.MFCC, window_size_ms=window_ms, window_stride_ms=stride_ms)
    signal = noise(8.0, seed=11)
    whole = StreamingFrontend(spec).push(signal)
    assert len(whole) == 1 + (len(signal) - spec.window_samples) // spec.stride_samples
    # Same frames whatever the blocks (up to BLAS summation order, as below).
    for seed in (1, 2):
        assert np.abs(stream_in_random_blocks(spec, signal, seed) - whole).max() < 1e-6
    fixed = StreamingFrontend(spec)
    assert np.abs(np.concatenate([fixed.push(b) for b in np.split(signal, 256)]) - whole).max() < 1e-6


def test_mfcc_streaming_equals_batch_on_every_window():
    spec = FrontendSpec(FrontendKind.MFCC)
    signal = noise(30.0, seed=5)
    frames = stream_in_random_blocks(spec, signal, seed=6)
    assert len(frames) == 1 + (len(signal) - 480) // 320
    largest = 0.0
    for start in range(len(frames) - spec.frame_count + 1):
        clip = signal[start * 320 : start * 320 + spec.clip_samples]
        batch = compute_features(spec, clip)
        largest = max(largest, float(np.abs(batch - frames[start : start + spec.frame_count]).max()))
    # Largest difference measured over all 1451 windows: 6.3e-14, on features of magnitude
    # up to ~30: the same float64 maths, with BLAS summing in a different order for blocks of
    # different sizes before the cast to float32.
    assert largest < 1e-6


def test_micro_streaming_is_independent_of_block_sizes():
    spec = FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)
    signal = noise(10.0, seed=7)
    one_block = StreamingFrontend(spec).push(signal)
    assert one_block.shape == (1 + (len(signal) - 480) // 320, 40)
    for seed in (1, 2):
        assert np.array_equal(stream_in_random_blocks(spec, signal, seed), one_block)


def test_micro_batch_equals_streaming_from_a_fresh_start():
    spec = FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)
    clip = noise(1.0, seed=8)
    batch = compute_features(spec, clip)
    assert batch.shape == (49, 40)
    assert np.array_equal(batch, stream_in_random_blocks(spec, clip, seed=3)[:49])
    # The front end runs at the model's own 20 ms step: its state advances once per frame,
    # so this is not every other frame of a 10 ms front end (whose state advances twice).
    ten_ms = compute_features(FrontendSpec(FrontendKind.MICRO, window_stride_ms=10), clip)
    assert np.array_equal(batch[0], ten_ms[0])
    assert not np.array_equal(batch, ten_ms[::2][:49])
    assert batch.min() >= 0.0 and batch.max() < 27.0


def test_micro_front_end_state_carries_across_windows():
    """The continuous micro front end adapts (noise reduction, PCAN) as on the microcontroller.

    So a window inside a stream is not what a fresh front end makes of the same samples;
    train.py's micro features start fresh on every clip (``per_clip``). This pins the size
    of that skew so a change to it is noticed: large at the window's first frame (features
    span 0..26), falling as the fresh front end's noise estimate settles.
    """
    spec = FrontendSpec(
        FrontendKind.MICRO, window_stride_ms=20, micro=MicroParams(state=MicroState.CONTINUOUS)
    )
    signal = noise(6.0, seed=9)
    stream = StreamingFrontend(spec).push(signal)
    start = 100
    fresh = compute_features(spec, signal[start * 320 : start * 320 + 16000])
    per_frame = np.abs(stream[start : start + 49] - fresh).max(axis=1)
    assert per_frame[0] > 5.0
    assert per_frame[-10:].max() < per_frame[:5].max()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"kind": FrontendKind.MFCC, "window_stride_ms": 0},
            "window_stride_ms: expected an integer from 1 to 60,000, got 0",
        ),
        (
            {"kind": FrontendKind.MFCC, "sample_rate_hz": 22050, "window_size_ms": 25},
            "window_size_ms: 25 ms is not a whole number of samples at 22050 Hz",
        ),
        (
            {"kind": FrontendKind.MFCC, "clip_duration_ms": 20},
            r"clip_duration_ms: expected at least window_size_ms \(30\), got 20",
        ),
        (
            {"kind": FrontendKind.MFCC, "mfcc": MfccParams(cepstrum_count=41)},
            r"mfcc.cepstrum_count: expected at most filter_count \(40\), got 41",
        ),
        (
            {"kind": FrontendKind.MFCC, "mfcc": MfccParams(fft_size=256)},
            "mfcc.fft_size: expected at least the window's 480 samples, got 256",
        ),
        (
            {"kind": FrontendKind.MFCC, "mfcc": MfccParams(high_freq_hz=9000.0)},
            r"mfcc.high_freq_hz: expected 0 <= low_freq_hz < high_freq_hz <= 8000 \(Nyquist\)",
        ),
        (
            {"kind": FrontendKind.MICRO, "window_stride_ms": 35},
            r"window_stride_ms: the micro front end needs a stride no longer than its window "
            r"\(30 ms\), got 35",
        ),
        (
            {"kind": FrontendKind.MICRO, "micro": MicroParams(channel_count=0)},
            "micro.channel_count: expected an integer from 1 to 1,024, got 0",
        ),
        (  # once took over 6 GB building its tables
            {"kind": FrontendKind.MFCC, "mfcc": MfccParams(filter_count=1_000_000_000)},
            "mfcc.filter_count: expected an integer from 1 to 1,024, got 1000000000",
        ),
        (
            {"kind": FrontendKind.MFCC, "clip_duration_ms": 3_600_000},
            "clip_duration_ms: expected an integer from 1 to 60,000, got 3600000",
        ),
        (
            {"kind": FrontendKind.MFCC, "sample_rate_hz": 10**30},
            "sample_rate_hz: expected an integer from 1,000 to 384,000",
        ),
    ],
)
def test_bad_specs_name_the_key(kwargs, message):
    with pytest.raises(SpecError, match=message):
        FrontendSpec(**kwargs)


def test_spec_round_trips_through_its_dict_with_every_parameter():
    spec = FrontendSpec(FrontendKind.MFCC, mfcc=MfccParams(window_function=WindowFunction.HANN))
    data = spec.to_dict()
    assert set(data["mfcc"]) == {
        "filter_count",
        "cepstrum_count",
        "fft_size",
        "low_freq_hz",
        "high_freq_hz",
        "preemphasis",
        "lifter",
        "append_energy",
        "window_function",
    }
    assert FrontendSpec.from_dict(data) == spec
    micro = FrontendSpec(FrontendKind.MICRO)
    assert FrontendSpec.from_dict(micro.to_dict()) == micro


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d.update(kind="mel"),
            "frontend.kind: expected one of mfcc, micro, tf_mfcc, tf_average, embedding, got 'mel'",
        ),
        (lambda d: d.pop("window_stride_ms"), "frontend.window_stride_ms: missing"),
        (lambda d: d.update(hop=3), "frontend.hop: unknown key"),
        (lambda d: d["mfcc"].pop("lifter"), "frontend.mfcc.lifter: missing"),
        (lambda d: d.pop("mfcc"), r"frontend.mfcc: missing \(every parameter is stated explicitly\)"),
        (
            lambda d: d["mfcc"].update(window_function="kaiser"),
            "frontend.mfcc.window_function: expected one of rectangular, hamming, hann, got 'kaiser'",
        ),
        (
            lambda d: d["mfcc"].update(append_energy="yes"),
            "frontend.mfcc.append_energy: expected true or false, got 'yes'",
        ),
        (
            lambda d: d["mfcc"].update(fft_size=512.0),
            "frontend.mfcc.fft_size: expected an integer, got 512.0",
        ),
        (
            lambda d: d.update(sample_rate_hz="16k"),
            "frontend.sample_rate_hz: expected an integer from 1,000 to 384,000, got '16k'",
        ),
    ],
)
def test_bad_spec_dicts_name_the_key(mutate, message):
    data = FrontendSpec(FrontendKind.MFCC).to_dict()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        FrontendSpec.from_dict(data)
