"""tf_mfcc / tf_average: TensorFlow train.py's --preprocess=mfcc and --preprocess=average, without TensorFlow.

The comparisons run TensorFlow's own ops exactly as train.py's input_data.py does (decode_wav
of a WAV file, AudioSpectrogram, then Mfcc or tf.nn.pool) and skip where TensorFlow is not
installed. Agreement is measured per value as ``|ours - tf| <= tolerance * max(1, |tf|)``:
relative to the value, and absolute below 1 (the average front end's values are squared
magnitudes, mostly far below 1 in quiet audio). The target is 1e-4; the tests ask 1e-5, because
the largest differences measured are 1.4e-14 (tf_mfcc: the same float32 values) and 2.8e-7
(tf_average: float32 rounding of the pooled sums), and 1e-5 also catches a 32767 full scale
(freeze.py's drift), which moves tf_average's features by 6.1e-5 and tf_mfcc's by 2.7e-4.

The real speech in tests/fixtures/realspeech is from Speech Commands (Pete Warden, Google,
CC BY 4.0); its README there carries the attribution.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from training_tools import missing_tensorflow

from kwsd.audio import read_wav, write_wav
from kwsd.bundle import demo_bundle_path, make_bundle, read_bundle, write_bundle
from kwsd.frontend import (
    FrontendKind,
    FrontendSpec,
    SpecError,
    StreamingFrontend,
    TfAverageParams,
    TfMfccParams,
    compute_features,
    tf_average_matrix,
    tf_dct_matrix,
    tf_mel_filterbank,
)

SPEECH = sorted((Path(__file__).parent / "fixtures" / "realspeech").glob("*_nohash_*.wav"))
TOLERANCE = 1e-5


def tf_spec(kind, *, rate=16000, clip_ms=1000, window_ms=30, stride_ms=10, bins=40, **op_attributes):
    """A spec the way train.py's flags give it (its defaults: 16 kHz, 1000/30/10 ms, 40 bins)."""
    if kind is FrontendKind.TF_MFCC:
        params = {"tf_mfcc": TfMfccParams(dct_coefficient_count=bins, **op_attributes)}
    else:
        params = {"tf_average": TfAverageParams(feature_bin_count=bins)}
    return FrontendSpec(
        kind,
        sample_rate_hz=rate,
        clip_duration_ms=clip_ms,
        window_size_ms=window_ms,
        window_stride_ms=stride_ms,
        **params,
    )


TRAIN_PY_DEFAULT = {"rate": 16000, "clip_ms": 1000, "window_ms": 30, "stride_ms": 10, "bins": 40}
LONG_22K = {"rate": 22050, "clip_ms": 5000, "window_ms": 30, "stride_ms": 20, "bins": 40}


def noise(seconds, rate, seed):
    """Speech-like: noise under a slow envelope, with silent stretches (as in test_frontend)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = np.clip(np.sin(2 * np.pi * 0.7 * t), 0, None) ** 2
    return (rng.standard_normal(len(t)) * 6000 * envelope).astype(np.int16)


def synthetic_clips(length, rate):
    """Named int16 signals that reach the corners: silence, 1 LSB, full scale, a sweep."""
    t = np.arange(length) / rate
    square = np.where(np.sin(2 * np.pi * 440 * t) >= 0, 32767, -32768).astype(np.int16)
    sweep = (20000 * np.sin(2 * np.pi * (50 + 0.5 * (rate / 2 - 50) * t / t[-1]) * t)).astype(np.int16)
    lsb = np.random.default_rng(1).integers(-1, 2, length).astype(np.int16)
    return {
        "silence": np.zeros(length, np.int16),
        "one_lsb": lsb,
        "full_scale_square": square,
        "sweep": sweep,
        "noise": noise(length / rate, rate, seed=2),
    }


# --------------------------------------------------------------------------------------
# Sizes: train.py's prepare_model_settings, written out again here as the reference.


def prepare_model_settings(*, rate, clip_ms, window_ms, stride_ms, bins, preprocess):
    """The numbers models.prepare_model_settings computes (tensorflow/examples/speech_commands)."""
    desired = int(rate * clip_ms / 1000)
    window = int(rate * window_ms / 1000)
    stride = int(rate * stride_ms / 1000)
    length = 0 if desired < window else 1 + int((desired - window) / stride)
    if preprocess == "average":
        fft_bin_count = 1 + (2 ** (window - 1).bit_length() / 2)
        average_window_width = math.floor(fft_bin_count / bins)  # int(math.floor(...)) there
        width = math.ceil(fft_bin_count / average_window_width)
    else:
        average_window_width = -1
        width = bins
    return desired, window, stride, length, width, average_window_width


@pytest.mark.parametrize(
    "config",
    [
        TRAIN_PY_DEFAULT,
        LONG_22K,
        {"rate": 22050, "clip_ms": 1000, "window_ms": 25, "stride_ms": 10, "bins": 13},
        {"rate": 44100, "clip_ms": 1500, "window_ms": 40, "stride_ms": 15, "bins": 32},
        {"rate": 11025, "clip_ms": 999, "window_ms": 33, "stride_ms": 7, "bins": 10},
        {"rate": 8000, "clip_ms": 1000, "window_ms": 20, "stride_ms": 30, "bins": 20},
    ],
)
@pytest.mark.parametrize("kind", [FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE])
def test_sizes_follow_prepare_model_settings(config, kind):
    spec = tf_spec(kind, **config)
    preprocess = "mfcc" if kind is FrontendKind.TF_MFCC else "average"
    desired, window, stride, length, width, average_width = prepare_model_settings(
        **config, preprocess=preprocess
    )
    assert (spec.clip_samples, spec.window_samples, spec.stride_samples) == (desired, window, stride)
    assert spec.feature_shape == (length, width)
    if kind is FrontendKind.TF_AVERAGE:
        assert spec.average_window_bins == average_width


def test_the_two_named_configurations_in_numbers():
    default_mfcc = tf_spec(FrontendKind.TF_MFCC, **TRAIN_PY_DEFAULT)
    assert (default_mfcc.window_samples, default_mfcc.stride_samples, default_mfcc.feature_shape) == (
        480,
        160,
        (98, 40),
    )
    assert (default_mfcc.fft_length_samples, default_mfcc.spectrogram_bin_count) == (512, 257)
    default_average = tf_spec(FrontendKind.TF_AVERAGE, **TRAIN_PY_DEFAULT)
    assert (default_average.average_window_bins, default_average.feature_shape) == (6, (98, 43))
    # 30 ms at 22,050 Hz is 661.5 samples: train.py truncates to 661 (20 ms is exactly 441).
    long_mfcc = tf_spec(FrontendKind.TF_MFCC, **LONG_22K)
    assert (long_mfcc.window_samples, long_mfcc.stride_samples, long_mfcc.clip_samples) == (661, 441, 110250)
    assert long_mfcc.feature_shape == (249, 40)
    long_average = tf_spec(FrontendKind.TF_AVERAGE, **LONG_22K)
    assert (long_average.fft_length_samples, long_average.spectrogram_bin_count) == (1024, 513)
    assert (long_average.average_window_bins, long_average.feature_shape) == (12, (249, 43))
    assert long_average.describe() == (
        "tf_average 22050 Hz, 5000 ms clip, 30/20 ms window/stride (661/441 samples), 249x43 features"
    )


def test_only_the_tf_kinds_truncate():
    with pytest.raises(SpecError, match="window_size_ms: 30 ms is not a whole number of samples at 22050 Hz"):
        FrontendSpec(FrontendKind.MFCC, sample_rate_hz=22050, window_size_ms=30)
    with pytest.raises(SpecError, match="fft_length_samples: only tf_mfcc and tf_average front ends have it"):
        _ = FrontendSpec(FrontendKind.MFCC).fft_length_samples
    with pytest.raises(
        SpecError, match="average_window_bins: only a tf_average front end has it, not tf_mfcc"
    ):
        _ = tf_spec(FrontendKind.TF_MFCC).average_window_bins


# --------------------------------------------------------------------------------------
# The matrices, against numbers worked out by hand from the C++ and train.py.


def test_average_pooling_matrix_places_same_padding_as_tensorflow():
    # 257 bins, width 6: 43 windows, one bin of padding, all of it after: the last window has 5 bins.
    m = tf_average_matrix(257, 6)
    assert m.shape == (257, 43)
    assert list(np.flatnonzero(m[:, 0])) == [0, 1, 2, 3, 4, 5]
    assert list(np.flatnonzero(m[:, 42])) == [252, 253, 254, 255, 256]
    assert (m[0, 0], m[256, 42]) == (1 / 6, 1 / 5)
    # 513 bins, width 12: 43 windows, 3 bins of padding, 1 before and 2 after.
    m = tf_average_matrix(513, 12)
    assert m.shape == (513, 43)
    assert list(np.flatnonzero(m[:, 0])) == list(range(11))
    assert list(np.flatnonzero(m[:, 1])) == list(range(11, 23))
    assert list(np.flatnonzero(m[:, 42])) == list(range(503, 513))
    assert (m[0, 0], m[11, 1], m[512, 42]) == (1 / 11, 1 / 12, 1 / 10)
    assert np.array_equal(np.count_nonzero(m, axis=1), np.ones(513))  # every bin in one window


def test_dct_matrix_is_tensorflows_unnormalised_one():
    d = tf_dct_matrix(40, 13)
    assert d.shape == (40, 13)
    # Coefficient 0 is scaled like the others, sqrt(2/N), not the orthonormal 1/sqrt(N).
    assert np.array_equal(d[:, 0], np.full(40, math.sqrt(2 / 40)))
    assert d[0, 1] == math.sqrt(2 / 40) * math.cos(math.pi / 40 * 0.5)


def test_mel_filterbank_uses_the_bins_tensorflow_uses():
    fb = tf_mel_filterbank(257, 16000, 40, 20.0, 4000.0)
    assert fb.shape == (257, 40)
    # 31.25 Hz per bin: bins int(1.5 + 20/31.25) = 2 to int(4000/31.25) = 128; bin 128 sits exactly
    # on the top edge and weighs 0.
    assert list(np.flatnonzero(fb.any(axis=1))) == list(range(2, 128))
    # Below the top channel's centre (3790 Hz, bin 121.3) each bin's weight is split between two
    # neighbouring channels; above it only the top channel's falling side remains.
    assert np.allclose(fb[2:122].sum(axis=1), 1.0, rtol=0, atol=1e-12)
    tail = fb[122:128].sum(axis=1)
    assert np.all(np.diff(tail) < 0) and tail[0] < 1.0
    assert np.array_equal(np.count_nonzero(fb[122:128], axis=1), np.ones(6))


# --------------------------------------------------------------------------------------
# Spec validation and the bundle.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"kind": FrontendKind.TF_MFCC, "tf_mfcc": TfMfccParams(dct_coefficient_count=41)},
            r"tf_mfcc.dct_coefficient_count: expected at most filterbank_channel_count \(40\), got 41",
        ),
        (
            {"kind": FrontendKind.TF_MFCC, "tf_mfcc": TfMfccParams(dct_coefficient_count=0)},
            "tf_mfcc.dct_coefficient_count: expected an integer from 1 to 1,024, got 0",
        ),
        (
            {"kind": FrontendKind.TF_MFCC, "sample_rate_hz": 7000},
            r"tf_mfcc.upper_frequency_limit_hz: expected 0 <= lower_frequency_limit_hz < "
            r"upper_frequency_limit_hz <= 3500 \(Nyquist at 7000 Hz\), got 20..4000",
        ),
        (
            {"kind": FrontendKind.TF_AVERAGE, "tf_average": TfAverageParams(feature_bin_count=258)},
            r"tf_average.feature_bin_count: expected at most the spectrogram's 257 bins \(a 480-sample "
            r"window\), got 258",
        ),
        (
            {
                "kind": FrontendKind.TF_MFCC,
                "sample_rate_hz": 1000,
                "window_size_ms": 1,
                "clip_duration_ms": 10,
            },
            "window_size_ms: the AudioSpectrogram op needs a window of at least 2 samples, "
            "1 ms at 1000 Hz is 1",
        ),
        (
            {  # below the 1,000 Hz any audio input accepts (1 ms would be 0 samples)
                "kind": FrontendKind.TF_MFCC,
                "sample_rate_hz": 500,
                "window_size_ms": 30,
                "window_stride_ms": 1,
            },
            "sample_rate_hz: expected an integer from 1,000 to 384,000, got 500",
        ),
        (
            {"kind": FrontendKind.TF_AVERAGE, "tf_mfcc": TfMfccParams()},
            "tf_mfcc: parameters given for a front end of kind tf_average",
        ),
    ],
)
def test_bad_tf_specs_name_the_key(kwargs, message):
    with pytest.raises(SpecError, match=message):
        FrontendSpec(**kwargs)


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        (
            FrontendKind.TF_MFCC,
            lambda d: d["tf_mfcc"].pop("upper_frequency_limit_hz"),
            r"frontend.tf_mfcc.upper_frequency_limit_hz: missing \(every parameter is stated explicitly\)",
        ),
        (
            FrontendKind.TF_MFCC,
            lambda d: d["tf_mfcc"].update(dct_coefficient_count=13.0),
            "frontend.tf_mfcc.dct_coefficient_count: expected an integer, got 13.0",
        ),
        (
            FrontendKind.TF_AVERAGE,
            lambda d: d.pop("tf_average"),
            r"frontend.tf_average: missing \(every parameter is stated explicitly\)",
        ),
        (
            FrontendKind.TF_AVERAGE,
            lambda d: d["tf_average"].update(average_window_bins=6),
            "frontend.tf_average.average_window_bins: unknown key",
        ),
    ],
)
def test_bad_tf_spec_dicts_name_the_key(kind, mutate, message):
    data = tf_spec(kind).to_dict()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        FrontendSpec.from_dict(data)


@pytest.mark.parametrize("kind", [FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE])
def test_tf_specs_round_trip_through_a_bundle_with_every_parameter(kind, tmp_path):
    spec = tf_spec(kind, **LONG_22K)
    data = spec.to_dict()
    if kind is FrontendKind.TF_MFCC:
        assert data["tf_mfcc"] == {
            "dct_coefficient_count": 40,
            "filterbank_channel_count": 40,
            "lower_frequency_limit_hz": 20.0,
            "upper_frequency_limit_hz": 4000.0,
        }
    else:
        assert data["tf_average"] == {"feature_bin_count": 40}
    demo = read_bundle(demo_bundle_path())
    bundle = make_bundle(demo.tflite, demo.labels, spec, name="tf", tool="test")
    again = read_bundle(write_bundle(bundle, tmp_path / "tf.kwsd"))
    assert again.frontend == spec
    assert again.frontend.feature_shape == (249, 40 if kind is FrontendKind.TF_MFCC else 43)


# --------------------------------------------------------------------------------------
# Streaming equals batch: both kinds are stateless per frame.


def stream_in_random_blocks(spec, samples, seed):
    rng = np.random.default_rng(seed)
    frontend = StreamingFrontend(spec)
    out, i = [], 0
    while i < len(samples):
        n = int(rng.integers(1, 3 * spec.stride_samples + 700))
        out.append(frontend.push(samples[i : i + n]))
        i += n
    return np.concatenate(out)


def largest_relative(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float((np.abs(ours - theirs) / np.maximum(1.0, np.abs(theirs))).max())


@pytest.mark.parametrize(
    "config",
    [
        TRAIN_PY_DEFAULT,
        LONG_22K,
        {"rate": 16000, "clip_ms": 1000, "window_ms": 20, "stride_ms": 30, "bins": 20},
    ],
)
@pytest.mark.parametrize("kind", [FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE])
def test_streaming_equals_batch_on_every_window(kind, config):
    spec = tf_spec(kind, **config)
    signal = noise(12.0, config["rate"], seed=5)
    frames = stream_in_random_blocks(spec, signal, seed=6)
    assert len(frames) == 1 + (len(signal) - spec.window_samples) // spec.stride_samples
    assert largest_relative(stream_in_random_blocks(spec, signal, seed=7), frames) < 1e-6
    largest = 0.0
    step = max(1, (len(frames) - spec.frame_count) // 40)  # 40 windows spread over the stream
    for start in range(0, len(frames) - spec.frame_count + 1, step):
        clip = signal[start * spec.stride_samples : start * spec.stride_samples + spec.clip_samples]
        batch = compute_features(spec, clip)
        largest = max(largest, largest_relative(frames[start : start + spec.frame_count], batch))
    # Same float64 maths per frame; only the BLAS summation order may differ with block size.
    assert largest < 1e-6


# --------------------------------------------------------------------------------------
# Against TensorFlow's own ops, as train.py runs them.


@pytest.fixture(scope="module")
def tf():
    reason = missing_tensorflow()
    if reason:
        pytest.skip(reason)
    import tensorflow

    return tensorflow


def train_py_features(tf, wav_path, spec):
    """input_data.py's graph: decode_wav (float = int16 / 32768, padded or cut), then the ops."""
    from tensorflow.python.ops import gen_audio_ops

    decoded = tf.audio.decode_wav(
        tf.io.read_file(str(wav_path)), desired_channels=1, desired_samples=spec.clip_samples
    )
    spectrogram = gen_audio_ops.audio_spectrogram(
        decoded.audio, window_size=spec.window_samples, stride=spec.stride_samples, magnitude_squared=True
    )
    if spec.kind is FrontendKind.TF_MFCC:
        p = spec.tf_mfcc
        features = gen_audio_ops.mfcc(
            spectrogram,
            decoded.sample_rate,
            upper_frequency_limit=p.upper_frequency_limit_hz,
            lower_frequency_limit=p.lower_frequency_limit_hz,
            filterbank_channel_count=p.filterbank_channel_count,
            dct_coefficient_count=p.dct_coefficient_count,
        )
    else:
        width = spec.average_window_bins
        features = tf.nn.pool(
            input=tf.expand_dims(spectrogram, -1),
            window_shape=[1, width],
            strides=[1, width],
            pooling_type="AVG",
            padding="SAME",
        )
    out = features.numpy()
    assert out.size == spec.frame_count * spec.feature_count
    return out.reshape(spec.feature_shape)


def compare_on_file(tf, spec, wav_path):
    ours = compute_features(spec, read_wav(wav_path, spec.sample_rate_hz))
    theirs = train_py_features(tf, wav_path, spec)
    assert ours.shape == theirs.shape == spec.feature_shape
    return largest_relative(ours, theirs)


@pytest.mark.parametrize("kind", [FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE])
def test_equals_tensorflow_on_real_speech_at_train_py_defaults(tf, kind, tmp_path):
    spec = tf_spec(kind, **TRAIN_PY_DEFAULT)
    assert len(SPEECH) == 5
    largest = max(compare_on_file(tf, spec, path) for path in SPEECH)
    # A clip shorter than the clip length: decode_wav pads with zeros, fit_to_clip likewise.
    short = tmp_path / "short.wav"
    write_wav(short, read_wav(SPEECH[0], 16000)[:9000], 16000)
    largest = max(largest, compare_on_file(tf, spec, short))
    # Measured: tf_mfcc 0 (the same float32 values), tf_average 1.8e-7 (float32 rounding).
    assert largest <= TOLERANCE


@pytest.mark.parametrize("kind", [FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE])
def test_equals_tensorflow_on_real_speech_at_22050_hz_5_s(tf, kind, tmp_path):
    spec = tf_spec(kind, **LONG_22K)
    # The four clips end to end, resampled to 22,050 Hz by kwsd's reader (4 s: decode_wav pads
    # the last second), and the same clips cut to 5 s from a loop of them.
    joined = np.concatenate([read_wav(path, 22050) for path in SPEECH])
    padded, looped = tmp_path / "padded.wav", tmp_path / "looped.wav"
    write_wav(padded, joined, 22050)
    write_wav(looped, np.tile(joined, 2)[: spec.clip_samples + 5000], 22050)
    largest = max(compare_on_file(tf, spec, padded), compare_on_file(tf, spec, looped))
    # Measured: tf_mfcc 1.4e-14, tf_average 2.2e-7.
    assert largest <= TOLERANCE


@pytest.mark.parametrize("config", [TRAIN_PY_DEFAULT, LONG_22K])
@pytest.mark.parametrize("kind", [FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE])
def test_equals_tensorflow_on_synthetic_audio(tf, kind, config, tmp_path):
    spec = tf_spec(kind, **config)
    largest = {}
    for name, clip in synthetic_clips(spec.clip_samples, spec.sample_rate_hz).items():
        path = tmp_path / f"{name}.wav"
        write_wav(path, clip, spec.sample_rate_hz)
        largest[name] = compare_on_file(tf, spec, path)
    # Measured, both configurations: tf_mfcc at most 3e-8 (the sweep), tf_average at most 2.8e-7.
    assert max(largest.values()) <= TOLERANCE, largest


def test_silence_gives_tensorflows_floor_exactly(tf, tmp_path):
    spec = tf_spec(FrontendKind.TF_MFCC, **TRAIN_PY_DEFAULT)
    ours = compute_features(spec, np.zeros(16000, np.int16))
    # Every filterbank energy floored at 1e-12: c0 = 40 * sqrt(2/40) * ln(1e-12), the rest 0.
    expected = np.zeros((98, 40), np.float32)
    expected[:, 0] = np.float32(40 * math.sqrt(2 / 40) * math.log(1e-12))
    assert np.allclose(ours, expected, rtol=0, atol=1e-5)
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(16000, np.int16), 16000)
    assert np.allclose(train_py_features(tf, path, spec), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("rate", "op_attributes"),
    [
        # Every Mfcc op attribute away from its default; 3800.3 is not a float32 value.
        (
            16000,
            {
                "filterbank_channel_count": 26,
                "lower_frequency_limit_hz": 300.0,
                "upper_frequency_limit_hz": 3800.3,
            },
        ),
        # More channels than an 8 kHz, 256-point FFT can fill: TensorFlow logs and leaves some
        # channels empty (at the floor); so does kwsd.
        (8000, {"filterbank_channel_count": 80, "upper_frequency_limit_hz": 4000.0}),
    ],
)
def test_equals_tensorflow_with_other_mfcc_op_attributes(tf, rate, op_attributes, tmp_path):
    spec = tf_spec(FrontendKind.TF_MFCC, rate=rate, bins=13, **op_attributes)
    path = tmp_path / "noise.wav"
    write_wav(path, noise(1.0, rate, seed=9), rate)
    assert compare_on_file(tf, spec, path) <= TOLERANCE
