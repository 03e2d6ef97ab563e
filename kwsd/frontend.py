"""Audio front ends: one spec, a batch path for training and an incremental path for serving.

A :class:`FrontendSpec` fixes every number that turns int16 audio into the feature
matrix a model sees. Training computes features with :func:`compute_features` (one
whole clip); the daemon computes them with :class:`StreamingFrontend`, which only
ever computes the frames that new audio completes. Both call the same per-frame
transform, so a model can never be served features it was not trained on.

Frame ``f`` of a stream covers samples ``[f * stride, f * stride + window)``; only
complete frames exist (no zero padding at the end, unlike ``python_speech_features``'
own framing), so a clip of ``clip_samples`` has ``frame_count`` frames.

Kinds:

``mfcc``
    python_speech_features' MFCC (kwsd's own training tool).
``micro``
    The TFLite Micro front end (train.py ``--preprocess=micro``, micro_speech).
``tf_mfcc`` / ``tf_average``
    TensorFlow's speech_commands train.py ``--preprocess=mfcc`` (its default) and
    ``--preprocess=average``: the AudioSpectrogram op (periodic Hann window, FFT length the
    next power of two, squared magnitude), then the Mfcc op, or average pooling across
    frequency. Recomputed here in numpy from the C++ kernels' definitions (spectrogram.cc,
    mfcc.cc, mfcc_mel_filterbank.cc, mfcc_dct.cc); TensorFlow is never imported. Sample
    counts follow train.py's ``prepare_model_settings``, which truncates
    (``int(rate * ms / 1000)``: 30 ms at 22,050 Hz is 661 samples); the other kinds refuse
    a duration that is not a whole number of samples.

Pure module: arrays in, arrays out, no clock, no hardware.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from kwsd.embedding import EmbeddingStream
    from kwsd.microfrontend import MicroTables

log = logging.getLogger(__name__)

#: int16 full scale: samples are divided by this before any transform (TensorFlow uses 32768
#: in training; its freeze.py drifted to 32767, which kwsd does not copy).
INT16_FULL_SCALE = 32768.0

Int16Array = npt.NDArray[np.int16]
FeatureArray = npt.NDArray[np.float32]


class SpecError(ValueError):
    """A front-end spec that cannot be built: names the key and what was expected."""


class FrontendKind(enum.Enum):
    MFCC = "mfcc"
    MICRO = "micro"
    TF_MFCC = "tf_mfcc"
    TF_AVERAGE = "tf_average"
    EMBEDDING = "embedding"

    @property
    def truncates_samples(self) -> bool:
        """Whether durations become samples by truncation, as TensorFlow's train.py does."""
        return self in (FrontendKind.TF_MFCC, FrontendKind.TF_AVERAGE)


class WindowFunction(enum.Enum):
    RECTANGULAR = "rectangular"
    HAMMING = "hamming"
    HANN = "hann"

    def coefficients(self, length: int) -> npt.NDArray[np.float64]:
        if self is WindowFunction.HAMMING:
            return np.hamming(length)
        if self is WindowFunction.HANN:
            return np.hanning(length)
        return np.ones(length)


@dataclass(frozen=True)
class MfccParams:
    """Every parameter of python_speech_features' MFCC, none left to a library default.

    ``preemphasis`` is applied within each frame (``y[0] = x[0]``, ``y[n] = x[n] - a x[n-1]``),
    not across the whole signal as ``python_speech_features.mfcc`` does: that keeps each
    frame a function of its own samples only, so the streaming path equals the batch path
    exactly. With ``preemphasis = 0`` the two definitions coincide.
    """

    filter_count: int = 40
    cepstrum_count: int = 13
    fft_size: int = 512
    low_freq_hz: float = 20.0
    high_freq_hz: float = 7600.0
    preemphasis: float = 0.97
    lifter: int = 22
    append_energy: bool = True
    window_function: WindowFunction = WindowFunction.HAMMING


class MicroState(enum.Enum):
    """Where the micro front end's state (its noise estimate) starts.

    ``per_clip``: every window's frames are computed by a front end started afresh at the
    window's first sample, as train.py computes training features (one op call per clip).
    ``continuous``: one front end runs over the whole stream and is never reset, as in the
    micro_speech firmware.
    """

    PER_CLIP = "per_clip"
    CONTINUOUS = "continuous"


@dataclass(frozen=True)
class MicroParams:
    """Every parameter of the TFLite Micro front end (TensorFlow's ``audio_microfrontend``
    op, whose defaults these are except ``channel_count``), plus the output scale and where
    its state starts. Window and step are the spec's own ``window_size_ms`` /
    ``window_stride_ms``.
    """

    channel_count: int = 40
    low_freq_hz: float = 125.0
    high_freq_hz: float = 7500.0
    #: Always on in the TFLite Micro front end (the op has no switch); recorded, must be true.
    noise_reduction: bool = True
    pcan_gain_control: bool = True
    log_scale: bool = True
    #: Output = the op's uint16 value * output_scale (train.py: 10/256, features ~0..26).
    output_scale: float = 10.0 / 256.0
    smoothing_bits: int = 10
    even_smoothing: float = 0.025
    odd_smoothing: float = 0.06
    min_signal_remaining: float = 0.05
    pcan_strength: float = 0.95
    pcan_offset: float = 80.0
    gain_bits: int = 21
    scale_shift: int = 6
    state: MicroState = MicroState.PER_CLIP


#: The micro section of bundles written before ``state`` existed (pymicro-features' fixed
#: front end). Such a bundle is read as ``continuous``, the one way kwsd ever served it, with
#: the op's defaults (micro_speech's settings) for the parameters it did not record.
LEGACY_MICRO_KEYS = frozenset(
    {
        "channel_count",
        "low_freq_hz",
        "high_freq_hz",
        "noise_reduction",
        "pcan_gain_control",
        "log_scale",
        "output_scale",
        "native_step_ms",
    }
)


@dataclass(frozen=True)
class TfMfccParams:
    """TensorFlow's Mfcc op as train.py ``--preprocess=mfcc`` calls it (the op's attributes).

    train.py sets only ``dct_coefficient_count`` (its ``--feature_bin_count``, default 40);
    the other three are the op's defaults, stated here so a bundle says everything. The op
    stores the frequency limits as float32, and so does the computation here.

    The spectrogram before it has no free parameter: periodic Hann window of
    ``window_samples``, FFT length the next power of two, squared magnitude.
    """

    dct_coefficient_count: int = 40
    filterbank_channel_count: int = 40
    lower_frequency_limit_hz: float = 20.0
    upper_frequency_limit_hz: float = 4000.0


@dataclass(frozen=True)
class TfAverageParams:
    """train.py ``--preprocess=average``: the spectrogram average-pooled across frequency.

    ``feature_bin_count`` is train.py's flag; the pooling width and the number of features
    that result are derived from it as ``prepare_model_settings`` does
    (:attr:`FrontendSpec.average_window_bins`, :attr:`FrontendSpec.feature_count`): at a
    480-sample window, 40 gives a width of 6 bins and 43 features, not 40.
    """

    feature_bin_count: int = 40


@dataclass(frozen=True)
class EmbeddingParams:
    """A frozen speech embedding as openWakeWord computes it: a mel model, then an embedding
    model on every ``mel_frames`` mel frames, every ``window_stride_ms`` of the spec.

    The contract kwsd relies on (checked on openWakeWord's models, and what any replacement
    must keep): the mel model takes ``[1, L]`` float32 samples (int16 values, unscaled) and
    from ``L = n * mel stride + mel window`` samples returns at least ``n`` frames of
    ``mel_bins``, frame ``i`` a function of samples ``[i * stride, i * stride + window)``
    only; its frames are used as ``x * mel_scale + mel_offset``; the embedding model takes
    ``[1, mel_frames, mel_bins, 1]`` and returns ``embedding_size`` values. So a frame of the
    spec is computable once ``mel_frames * mel_stride_ms + mel_window_ms`` of audio have
    arrived: the spec's ``window_size_ms``.

    ``mel_model`` and ``embedding_model`` are the models' bytes: not part of the spec's
    identity (their sha256s are) and not written in its dict; a bundle carries them as
    members and :meth:`FrontendSpec.with_embedding_models` attaches them.
    """

    mel_model_sha256: str = ""
    embedding_model_sha256: str = ""
    mel_bins: int = 32
    mel_stride_ms: int = 10
    mel_window_ms: int = 30
    mel_frames: int = 76
    mel_scale: float = 0.1
    mel_offset: float = 2.0
    embedding_size: int = 96
    mel_model: bytes = field(default=b"", compare=False, repr=False)
    embedding_model: bytes = field(default=b"", compare=False, repr=False)

    @property
    def loaded(self) -> bool:
        return bool(self.mel_model) and bool(self.embedding_model)


#: TensorFlow's Mfcc op floors filterbank energies here before the log (mfcc.cc).
TF_FILTERBANK_FLOOR = 1e-12


@dataclass(frozen=True)
class FrontendSpec:
    """Everything that turns int16 audio at ``sample_rate_hz`` into a model's input matrix."""

    kind: FrontendKind
    sample_rate_hz: int = 16000
    clip_duration_ms: int = 1000
    window_size_ms: int = 30
    window_stride_ms: int = 20
    mfcc: MfccParams | None = None
    micro: MicroParams | None = None
    tf_mfcc: TfMfccParams | None = None
    tf_average: TfAverageParams | None = None
    embedding: EmbeddingParams | None = None
    _derived: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_positive_int("sample_rate_hz", self.sample_rate_hz)
        _check_positive_int("clip_duration_ms", self.clip_duration_ms)
        _check_positive_int("window_size_ms", self.window_size_ms)
        _check_positive_int("window_stride_ms", self.window_stride_ms)
        self._derived["window_samples"] = self._samples("window_size_ms", self.window_size_ms)
        self._derived["stride_samples"] = self._samples("window_stride_ms", self.window_stride_ms)
        self._derived["clip_samples"] = self._samples("clip_duration_ms", self.clip_duration_ms)
        if self.clip_samples < self.window_samples:
            raise SpecError(
                f"clip_duration_ms: expected at least window_size_ms ({self.window_size_ms}), "
                f"got {self.clip_duration_ms}"
            )
        # Exactly one parameter section, the one named like the kind; a missing one takes defaults.
        for other in FrontendKind:
            if other is not self.kind and getattr(self, other.value) is not None:
                raise SpecError(f"{other.value}: parameters given for a front end of kind {self.kind.value}")
        if getattr(self, self.kind.value) is None:
            object.__setattr__(self, self.kind.value, _PARAMS_CLASSES[self.kind]())
        if self.kind is FrontendKind.MFCC:
            self._check_mfcc()
        elif self.kind is FrontendKind.MICRO:
            self._check_micro()
        elif self.kind is FrontendKind.EMBEDDING:
            self._check_embedding()
        else:
            self._check_tf()

    # Derived sizes: the only place they are computed.

    @property
    def window_samples(self) -> int:
        return self._derived["window_samples"]

    @property
    def stride_samples(self) -> int:
        return self._derived["stride_samples"]

    @property
    def clip_samples(self) -> int:
        return self._derived["clip_samples"]

    @property
    def frame_count(self) -> int:
        """Complete frames in one clip: ``1 + (clip - window) // stride`` (49 at 1000/30/20)."""
        return 1 + (self.clip_samples - self.window_samples) // self.stride_samples

    @property
    def feature_count(self) -> int:
        if self.mfcc is not None:
            return self.mfcc.cepstrum_count
        if self.micro is not None:
            return self.micro.channel_count
        if self.tf_mfcc is not None:
            return self.tf_mfcc.dct_coefficient_count
        if self.embedding is not None:
            return self.embedding.embedding_size
        # train.py's fingerprint_width: ceil(spectrogram bins / pooling width).
        return -(-self.spectrogram_bin_count // self.average_window_bins)

    @property
    def fft_length_samples(self) -> int:
        """tf_* kinds: the AudioSpectrogram op's FFT length, the window rounded up to a power of two."""
        self._require_tf("fft_length_samples")
        return 1 << (self.window_samples - 1).bit_length()

    @property
    def spectrogram_bin_count(self) -> int:
        """tf_* kinds: frequency bins per spectrogram frame, ``1 + fft_length_samples / 2`` (257 at 480)."""
        return 1 + self.fft_length_samples // 2

    @property
    def average_window_bins(self) -> int:
        """tf_average: bins averaged into one feature, train.py's ``average_window_width``.

        ``floor(spectrogram_bin_count / feature_bin_count)`` (6 at a 480-sample window and 40).
        """
        if self.tf_average is None:
            raise SpecError(f"average_window_bins: only a tf_average front end has it, not {self.kind.value}")
        return self.spectrogram_bin_count // self.tf_average.feature_bin_count

    def _require_tf(self, name: str) -> None:
        if not self.kind.truncates_samples:
            raise SpecError(f"{name}: only tf_mfcc and tf_average front ends have it, not {self.kind.value}")

    @property
    def feature_shape(self) -> tuple[int, int]:
        return (self.frame_count, self.feature_count)

    @property
    def span_samples(self) -> int:
        """Samples the frames of one clip actually cover (<= clip_samples)."""
        return (self.frame_count - 1) * self.stride_samples + self.window_samples

    def frame_end_sample(self, frame_index: int) -> int:
        """Sample index (exclusive) at the end of frame ``frame_index`` of a stream."""
        return frame_index * self.stride_samples + self.window_samples

    def frame_end_ms(self, frame_index: int) -> int:
        """Audio time (ms, floor) of the end of frame ``frame_index`` of a stream."""
        return self.frame_end_sample(frame_index) * 1000 // self.sample_rate_hz

    def describe(self) -> str:
        samples = ""
        if self.kind.truncates_samples:
            samples = f" ({self.window_samples}/{self.stride_samples} samples)"
        return (
            f"{self.kind.value} {self.sample_rate_hz} Hz, {self.clip_duration_ms} ms clip, "
            f"{self.window_size_ms}/{self.window_stride_ms} ms window/stride{samples}, "
            f"{self.frame_count}x{self.feature_count} features"
            + (f", state {self.micro.state.value}" if self.micro is not None else "")
        )

    # Serialisation (the bundle's frontend section).

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "sample_rate_hz": self.sample_rate_hz,
            "clip_duration_ms": self.clip_duration_ms,
            "window_size_ms": self.window_size_ms,
            "window_stride_ms": self.window_stride_ms,
        }
        if self.mfcc is not None:
            params = asdict(self.mfcc)
            params["window_function"] = self.mfcc.window_function.value
            out["mfcc"] = params
        if self.micro is not None:
            micro = asdict(self.micro)
            micro["state"] = self.micro.state.value
            out["micro"] = micro
        if self.tf_mfcc is not None:
            out["tf_mfcc"] = asdict(self.tf_mfcc)
        if self.tf_average is not None:
            out["tf_average"] = asdict(self.tf_average)
        if self.embedding is not None:
            out["embedding"] = {
                f.name: getattr(self.embedding, f.name) for f in fields(EmbeddingParams) if f.compare
            }
        return out

    def with_embedding_models(self, mel_model: bytes, embedding_model: bytes) -> FrontendSpec:
        """This ``embedding`` spec with its feature models' bytes, which must be the files its
        sha256s name (``embedding.<key>`` in the error otherwise)."""
        if self.embedding is None:
            raise SpecError(
                f"embedding: only an embedding front end has feature models, not {self.kind.value}"
            )
        for key, data in (("mel_model", mel_model), ("embedding_model", embedding_model)):
            digest = hashlib.sha256(data).hexdigest()
            expected = getattr(self.embedding, f"{key}_sha256")
            if digest != expected:
                raise SpecError(
                    f"embedding.{key}_sha256: the file given has sha256 {digest[:16]}..., "
                    f"the spec names {expected[:16]}..."
                )
        params = replace(self.embedding, mel_model=mel_model, embedding_model=embedding_model)
        return replace(self, embedding=params)

    @classmethod
    def from_dict(cls, data: Any, where: str = "frontend") -> FrontendSpec:
        """Build a spec from its dict form; every problem names its key under ``where``."""
        if not isinstance(data, dict):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        known = {
            "kind",
            "sample_rate_hz",
            "clip_duration_ms",
            "window_size_ms",
            "window_stride_ms",
            *(k.value for k in FrontendKind),
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{where}.{unknown[0]}: unknown key (expected one of {sorted(known)})")
        try:
            kind = FrontendKind(data.get("kind"))
        except ValueError:
            choices = ", ".join(k.value for k in FrontendKind)
            raise SpecError(f"{where}.kind: expected one of {choices}, got {data.get('kind')!r}") from None
        kwargs: dict[str, Any] = {"kind": kind}
        for key in ("sample_rate_hz", "clip_duration_ms", "window_size_ms", "window_stride_ms"):
            if key not in data:
                raise SpecError(f"{where}.{key}: missing")
            kwargs[key] = data[key]
        # Every parameter is stated in the dict: a missing section is not filled with today's defaults,
        # which would silently change what an old bundle means if a default ever changed.
        if kind.value not in data:
            raise SpecError(f"{where}.{kind.value}: missing (every parameter is stated explicitly)")
        for section, params_class in _PARAMS_CLASSES.items():
            if section.value in data:
                section_data = data[section.value]
                if section is FrontendKind.MICRO:
                    section_data = _upgrade_micro(section_data, f"{where}.micro")
                kwargs[section.value] = _params_from_dict(
                    params_class, section_data, f"{where}.{section.value}"
                )
        try:
            return cls(**kwargs)
        except SpecError as err:
            raise SpecError(f"{where}.{err}") from None

    # Validation helpers.

    def _samples(self, key: str, ms: int) -> int:
        if self.kind.truncates_samples:
            # train.py's int(rate * ms / 1000): for integers this is exactly the floor division.
            return self.sample_rate_hz * ms // 1000
        exact = self.sample_rate_hz * ms / 1000
        if exact != int(exact):
            raise SpecError(f"{key}: {ms} ms is not a whole number of samples at {self.sample_rate_hz} Hz")
        return int(exact)

    def _check_mfcc(self) -> None:
        p = self.mfcc
        assert p is not None
        _check_positive_int("mfcc.filter_count", p.filter_count)
        _check_positive_int("mfcc.cepstrum_count", p.cepstrum_count)
        _check_positive_int("mfcc.fft_size", p.fft_size)
        if p.cepstrum_count > p.filter_count:
            raise SpecError(
                f"mfcc.cepstrum_count: expected at most filter_count ({p.filter_count}), "
                f"got {p.cepstrum_count}"
            )
        if p.fft_size < self.window_samples:
            raise SpecError(
                f"mfcc.fft_size: expected at least the window's {self.window_samples} samples, "
                f"got {p.fft_size}"
            )
        nyquist = self.sample_rate_hz / 2
        if not 0 <= p.low_freq_hz < p.high_freq_hz <= nyquist:
            raise SpecError(
                f"mfcc.high_freq_hz: expected 0 <= low_freq_hz < high_freq_hz <= {nyquist:g} "
                f"(Nyquist), got {p.low_freq_hz:g}..{p.high_freq_hz:g}"
            )
        if not 0 <= p.preemphasis < 1:
            raise SpecError(f"mfcc.preemphasis: expected 0 <= value < 1, got {p.preemphasis}")
        if not isinstance(p.window_function, WindowFunction):
            raise SpecError(f"mfcc.window_function: expected a WindowFunction, got {p.window_function!r}")

    def _check_micro(self) -> None:
        from kwsd.microfrontend import MicroConfigError

        p = self.micro
        assert p is not None
        _check_positive_int("micro.channel_count", p.channel_count)
        nyquist = self.sample_rate_hz / 2
        if not 0 <= p.low_freq_hz < p.high_freq_hz <= nyquist:
            raise SpecError(
                f"micro.high_freq_hz: expected 0 <= low_freq_hz < high_freq_hz <= {nyquist:g} "
                f"(Nyquist), got {p.low_freq_hz:g}..{p.high_freq_hz:g}"
            )
        if not p.noise_reduction:
            raise SpecError("micro.noise_reduction: the TFLite Micro front end always applies it, got false")
        if not p.output_scale > 0:
            raise SpecError(f"micro.output_scale: expected a positive number, got {p.output_scale}")
        for key in ("even_smoothing", "odd_smoothing", "min_signal_remaining"):
            value = getattr(p, key)
            if not 0 <= value <= 1:
                raise SpecError(f"micro.{key}: expected 0..1, got {value}")
        if not 0 <= p.smoothing_bits <= 16:
            raise SpecError(f"micro.smoothing_bits: expected 0..16, got {p.smoothing_bits}")
        if not 0 <= p.scale_shift <= 16:
            raise SpecError(f"micro.scale_shift: expected 0..16, got {p.scale_shift}")
        for key in ("pcan_strength", "pcan_offset"):
            if not getattr(p, key) > 0:
                raise SpecError(f"micro.{key}: expected a positive number, got {getattr(p, key)}")
        if not 0 < p.gain_bits <= 31:
            raise SpecError(f"micro.gain_bits: expected 1..31, got {p.gain_bits}")
        if not isinstance(p.state, MicroState):
            raise SpecError(f"micro.state: expected a MicroState, got {p.state!r}")
        if self.window_stride_ms > self.window_size_ms:
            raise SpecError(
                f"window_stride_ms: the micro front end needs a stride no longer than its window "
                f"({self.window_size_ms} ms), got {self.window_stride_ms}"
            )
        try:
            micro_tables(self)
        except MicroConfigError as err:
            raise SpecError(f"micro: {err}") from None

    def _check_embedding(self) -> None:
        p = self.embedding
        assert p is not None
        for key in ("mel_model_sha256", "embedding_model_sha256"):
            value = getattr(p, key)
            if not isinstance(value, str) or len(value) != 64 or set(value) - set("0123456789abcdef"):
                raise SpecError(f"embedding.{key}: expected 64 lowercase hex digits, got {value!r}")
        for key in ("mel_bins", "mel_stride_ms", "mel_window_ms", "mel_frames", "embedding_size"):
            _check_positive_int(f"embedding.{key}", getattr(p, key))
        if not p.mel_scale > 0:
            raise SpecError(f"embedding.mel_scale: expected a positive number, got {p.mel_scale}")
        self._samples("embedding.mel_stride_ms", p.mel_stride_ms)
        self._samples("embedding.mel_window_ms", p.mel_window_ms)
        needed_ms = p.mel_frames * p.mel_stride_ms + p.mel_window_ms
        if self.window_size_ms != needed_ms:
            raise SpecError(
                f"window_size_ms: an embedding of {p.mel_frames} mel frames every {p.mel_stride_ms} ms "
                f"(a {p.mel_window_ms} ms window) needs {needed_ms} ms of audio, got {self.window_size_ms}"
            )
        if self.window_stride_ms % p.mel_stride_ms:
            raise SpecError(
                f"window_stride_ms: expected a multiple of embedding.mel_stride_ms ({p.mel_stride_ms}), "
                f"got {self.window_stride_ms}"
            )

    @property
    def mel_step_frames(self) -> int:
        """embedding: mel frames between two embeddings (8 at 80 ms)."""
        if self.embedding is None:
            raise SpecError(f"mel_step_frames: only an embedding front end has it, not {self.kind.value}")
        return self.window_stride_ms // self.embedding.mel_stride_ms

    def _check_tf(self) -> None:
        # What TensorFlow's ops refuse (or, where noted, silently get wrong) is refused here.
        if self.window_samples < 2:
            raise SpecError(
                f"window_size_ms: the AudioSpectrogram op needs a window of at least 2 samples, "
                f"{self.window_size_ms} ms at {self.sample_rate_hz} Hz is {self.window_samples}"
            )
        if self.stride_samples < 1:
            raise SpecError(
                f"window_stride_ms: {self.window_stride_ms} ms at {self.sample_rate_hz} Hz is 0 samples"
            )
        if self.tf_average is not None:
            p = self.tf_average
            _check_positive_int("tf_average.feature_bin_count", p.feature_bin_count)
            if p.feature_bin_count > self.spectrogram_bin_count:
                # train.py would divide by a pooling width of 0.
                raise SpecError(
                    f"tf_average.feature_bin_count: expected at most the spectrogram's "
                    f"{self.spectrogram_bin_count} bins (a {self.window_samples}-sample window), "
                    f"got {p.feature_bin_count}"
                )
            return
        q = self.tf_mfcc
        assert q is not None
        _check_positive_int("tf_mfcc.dct_coefficient_count", q.dct_coefficient_count)
        _check_positive_int("tf_mfcc.filterbank_channel_count", q.filterbank_channel_count)
        if q.dct_coefficient_count > q.filterbank_channel_count:
            raise SpecError(
                f"tf_mfcc.dct_coefficient_count: expected at most filterbank_channel_count "
                f"({q.filterbank_channel_count}), got {q.dct_coefficient_count}"
            )
        nyquist = self.sample_rate_hz / 2
        # Above Nyquist the op does not fail: it logs and returns zeros. Refused here instead.
        if not 0 <= q.lower_frequency_limit_hz < q.upper_frequency_limit_hz <= nyquist:
            raise SpecError(
                f"tf_mfcc.upper_frequency_limit_hz: expected 0 <= lower_frequency_limit_hz < "
                f"upper_frequency_limit_hz <= {nyquist:g} (Nyquist at {self.sample_rate_hz} Hz), "
                f"got {q.lower_frequency_limit_hz:g}..{q.upper_frequency_limit_hz:g}"
            )


_PARAMS_CLASSES: dict[FrontendKind, type[Any]] = {
    FrontendKind.MFCC: MfccParams,
    FrontendKind.MICRO: MicroParams,
    FrontendKind.TF_MFCC: TfMfccParams,
    FrontendKind.TF_AVERAGE: TfAverageParams,
    FrontendKind.EMBEDDING: EmbeddingParams,
}


def micro_tables(spec: FrontendSpec) -> MicroTables:
    """The micro front end's fixed tables for ``spec`` (built once per set of parameters)."""
    from kwsd.microfrontend import MicroTables

    assert spec.micro is not None
    sizes = (spec.sample_rate_hz, spec.window_samples, spec.stride_samples)
    key = (replace(spec.micro, state=MicroState.PER_CLIP), *sizes)
    tables = _MICRO_TABLES.get(key)
    if tables is None:
        tables = _MICRO_TABLES[key] = MicroTables(spec.micro, *sizes)
    return tables


_MICRO_TABLES: dict[tuple[MicroParams, int, int, int], MicroTables] = {}


def _upgrade_micro(data: Any, where: str) -> Any:
    """A pre-``state`` micro section -> today's, read as ``continuous`` (see LEGACY_MICRO_KEYS)."""
    if not isinstance(data, dict) or "state" in data or set(data) != LEGACY_MICRO_KEYS:
        return data
    if data["native_step_ms"] != 10:
        raise SpecError(
            f"{where}.native_step_ms: expected 10 (pymicro-features' step), got {data['native_step_ms']!r}"
        )
    defaults = asdict(MicroParams())
    upgraded = {key: value for key, value in data.items() if key != "native_step_ms"}
    for key in set(defaults) - LEGACY_MICRO_KEYS:
        upgraded[key] = defaults[key]
    upgraded["state"] = MicroState.CONTINUOUS.value
    log.info("%s: a front end recorded before micro.state existed: read as continuous", where)
    return upgraded


def _check_positive_int(key: str, value: object) -> None:
    """A positive integer no larger than :data:`SPEC_RANGES` allows for ``key`` (a bundle.json
    saying ``filter_count: 1000000000`` would otherwise take gigabytes to build its tables)."""
    low, high = SPEC_RANGES.get(key, (1, None))
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        expected = f"an integer from {low:,} to {high:,}" if high is not None else "a positive integer"
        raise SpecError(f"{key}: expected {expected}, got {value!r}")


#: Bounds on a spec's integers: wide enough for any keyword or sound model (a crying detector
#: on 5 s clips at 22.05 kHz), narrow enough that no table or buffer outgrows a Pi.
SPEC_RANGES: dict[str, tuple[int, int | None]] = {
    "sample_rate_hz": (1_000, 384_000),
    "clip_duration_ms": (1, 60_000),
    "window_size_ms": (1, 60_000),
    "window_stride_ms": (1, 60_000),
    "mfcc.filter_count": (1, 1_024),
    "mfcc.cepstrum_count": (1, 1_024),
    "mfcc.fft_size": (1, 1 << 20),
    "micro.channel_count": (1, 1_024),
    "tf_average.feature_bin_count": (1, 1_024),
    "tf_mfcc.dct_coefficient_count": (1, 1_024),
    "tf_mfcc.filterbank_channel_count": (1, 1_024),
}


def _params_from_dict(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    # Fields outside the spec's identity (an embedding's model bytes) are never in the dict.
    stated = {name for name, f in cls.__dataclass_fields__.items() if f.compare}
    unknown = sorted(set(data) - stated)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown key (expected one of {sorted(stated)})")
    missing = sorted(stated - set(data))
    if missing:
        raise SpecError(f"{where}.{missing[0]}: missing (every parameter is stated explicitly)")
    kwargs = dict(data)
    for name, value in data.items():
        default = getattr(cls(), name)
        if isinstance(default, enum.Enum):
            try:
                kwargs[name] = type(default)(value)
            except ValueError:
                choices = ", ".join(str(w.value) for w in type(default))
                raise SpecError(f"{where}.{name}: expected one of {choices}, got {value!r}") from None
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise SpecError(f"{where}.{name}: expected a string, got {value!r}")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise SpecError(f"{where}.{name}: expected true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpecError(f"{where}.{name}: expected an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpecError(f"{where}.{name}: expected a number, got {value!r}")
            kwargs[name] = float(value)
    return cls(**kwargs)


# --------------------------------------------------------------------------------------
# The transforms. One per kind; each maps complete frames to features.


class _MfccTransform:
    """python_speech_features' MFCC on a block of frames, with everything precomputed.

    Uses the library's own filterbank and lifter. The daemon feeds one 20 ms frame at a time,
    where numpy's cost per call outweighs the arithmetic, so the work is folded into few
    calls: preemphasis into the window (``w[n] x[n] - a w[n] x[n-1]``), the power spectrum
    and its division by the FFT size into the filterbank (which reads the interleaved real
    and imaginary parts, each row twice), and the frame energy into one more filterbank
    column. A frame costs about a third of ``python_speech_features.mfcc``'s steps (which
    also rebuilds its filterbank on every call: ~280 us).
    """

    def __init__(self, spec: FrontendSpec) -> None:
        import python_speech_features as psf  # heavy-ish (scipy); imported when first used
        from scipy.fftpack import dct

        p = spec.mfcc
        assert p is not None
        self._params = p
        window = p.window_function.coefficients(spec.window_samples)
        self._window = window
        self._window_preemphasis = window[1:] * p.preemphasis
        filterbank_t = psf.get_filterbanks(
            p.filter_count, p.fft_size, spec.sample_rate_hz, p.low_freq_hz, p.high_freq_hz
        ).T
        # (bins, filters + 1): the filters, then all ones (the frame energy), over fft_size;
        # each row twice, for the real and the imaginary part of that bin.
        bank = np.hstack((filterbank_t, np.ones((len(filterbank_t), 1)))) / p.fft_size
        self._bank = np.repeat(bank, 2, axis=0)
        # DCT-II (orthonormal) of the log filterbank energies as a matrix, then the lifter.
        eye = np.eye(p.filter_count)
        dct_matrix = dct(eye, type=2, axis=1, norm="ortho")[:, : p.cepstrum_count]
        lift = psf.lifter(np.ones((1, p.cepstrum_count)), p.lifter)[0]
        self._dct_lift = dct_matrix * lift
        self._eps = np.finfo(float).eps

    def __call__(self, frames: npt.NDArray[np.float64]) -> FeatureArray:
        """``frames``: (n, window_samples) float64 in [-1, 1); returns (n, cepstrum_count)."""
        p = self._params
        windowed = frames * self._window
        if p.preemphasis:
            windowed[:, 1:] -= frames[:, :-1] * self._window_preemphasis
        spectrum = np.fft.rfft(windowed, p.fft_size).view(np.float64)  # re, im, re, im, ...
        spectrum *= spectrum
        energies = spectrum @ self._bank  # (n, filters + 1): filterbank energies, frame energy
        np.maximum(energies, self._eps, out=energies)
        np.log(energies, out=energies)
        features: npt.NDArray[np.float64] = energies[:, :-1] @ self._dct_lift
        if p.append_energy:
            features[:, 0] = energies[:, -1]
        return features.astype(np.float32)


class _TfSpectrogram:
    """TensorFlow's AudioSpectrogram op (``magnitude_squared=True``) on a block of frames.

    spectrogram.cc: each frame times a periodic Hann window ``0.5 - 0.5 cos(2 pi i / N)``,
    zero-padded to the next power of two, real FFT in double precision, ``re^2 + im^2``;
    the op returns float32, and that rounding is kept, because the Mfcc op and train.py's
    pooling read those float32 values.
    """

    def __init__(self, spec: FrontendSpec) -> None:
        n = spec.window_samples
        self._window = 0.5 - 0.5 * np.cos((2 * np.pi * np.arange(n)) / n)
        self._fft_length = spec.fft_length_samples

    def __call__(self, frames: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``frames``: (n, window_samples); returns (n, spectrogram_bin_count) squared magnitudes."""
        spectrum = np.fft.rfft(frames * self._window, self._fft_length)
        power = spectrum.real**2 + spectrum.imag**2
        rounded: npt.NDArray[np.float64] = power.astype(np.float32).astype(np.float64)
        return rounded


def tf_mel_filterbank(
    bin_count: int, sample_rate_hz: int, channel_count: int, lower_hz: float, upper_hz: float
) -> npt.NDArray[np.float64]:
    """TensorFlow's MfccMelFilterbank as a (bin_count, channel_count) matrix.

    mfcc_mel_filterbank.cc: ``channel_count + 1`` centres evenly spaced on the mel scale
    ``1127 ln(1 + f / 700)`` from ``lower_hz`` (exclusive) to ``upper_hz``; bins from
    ``int(1.5 + lower / hz_per_bin)`` to ``int(upper / hz_per_bin)`` (DC always excluded),
    where ``hz_per_bin = rate / 2 / (bin_count - 1)``; each bin gives weight ``w`` to the
    channel whose centre is just below it and ``1 - w`` to the next, ``w`` falling linearly
    in mel from 1 at that centre to 0 at the next. The op applies it to the square root of
    the squared magnitude, i.e. to magnitudes. Channels too narrow to hold a bin stay zero
    (the op only logs that), and so they do here.
    """
    # The op's attributes are float32: use the values it sees.
    lower_hz = float(np.float32(lower_hz))
    upper_hz = float(np.float32(upper_hz))

    def mel(freq_hz: float) -> float:
        return 1127.0 * math.log1p(freq_hz / 700.0)

    mel_low = mel(lower_hz)
    spacing = (mel(upper_hz) - mel_low) / (channel_count + 1)
    centres = [mel_low + spacing * (i + 1) for i in range(channel_count + 1)]
    hz_per_bin = 0.5 * sample_rate_hz / (bin_count - 1)
    start = int(1.5 + lower_hz / hz_per_bin)
    end = min(int(upper_hz / hz_per_bin), bin_count - 1)
    matrix = np.zeros((bin_count, channel_count))
    channel = 0
    for i in range(start, end + 1):
        bin_mel = mel(i * hz_per_bin)
        while channel < channel_count and centres[channel] < bin_mel:
            channel += 1
        below = channel - 1  # the channel this bin is on the falling side of; -1: none
        if below >= 0:
            weight = (centres[below + 1] - bin_mel) / (centres[below + 1] - centres[below])
            matrix[i, below] = weight
        else:
            weight = (centres[0] - bin_mel) / (centres[0] - mel_low)
        if below + 1 < channel_count:
            matrix[i, below + 1] = 1.0 - weight
    return matrix


def tf_dct_matrix(input_count: int, coefficient_count: int) -> npt.NDArray[np.float64]:
    """TensorFlow's MfccDct as an (input_count, coefficient_count) matrix.

    mfcc_dct.cc: ``sqrt(2 / N) cos(pi i (j + 0.5) / N)``, the same scale for every ``i``
    (coefficient 0 included, so not the orthonormal DCT-II).
    """
    j = np.arange(input_count)[:, None]
    i = np.arange(coefficient_count)[None, :]
    scale = math.sqrt(2.0 / input_count)
    matrix: npt.NDArray[np.float64] = scale * np.cos(i * (np.pi / input_count) * (j + 0.5))
    return matrix


def tf_average_matrix(bin_count: int, width_bins: int) -> npt.NDArray[np.float64]:
    """train.py's ``tf.nn.pool(..., [1, width], strides [1, width], 'AVG', 'SAME')`` across bins.

    SAME padding gives ``ceil(bin_count / width)`` outputs; the padding, ``pad_total =
    outputs * width - bin_count``, goes ``pad_total // 2`` before and the rest after, and an
    average counts only real bins (TensorFlow's average pooling excludes padding).
    """
    outputs = -(-bin_count // width_bins)
    before = max(outputs * width_bins - bin_count, 0) // 2
    matrix = np.zeros((bin_count, outputs))
    for k in range(outputs):
        low = max(k * width_bins - before, 0)
        high = min(k * width_bins - before + width_bins, bin_count)
        matrix[low:high, k] = 1.0 / (high - low)
    return matrix


class _TfMfccTransform:
    """train.py ``--preprocess=mfcc``: AudioSpectrogram then Mfcc, one rfft and two products per block.

    mfcc.cc: filterbank on magnitudes (the square root of the spectrogram), floor at
    ``TF_FILTERBANK_FLOOR``, natural log, DCT; float32 out.
    """

    def __init__(self, spec: FrontendSpec) -> None:
        p = spec.tf_mfcc
        assert p is not None
        self._spectrogram = _TfSpectrogram(spec)
        self._filterbank = tf_mel_filterbank(
            spec.spectrogram_bin_count,
            spec.sample_rate_hz,
            p.filterbank_channel_count,
            p.lower_frequency_limit_hz,
            p.upper_frequency_limit_hz,
        )
        empty = np.flatnonzero(self._filterbank.sum(axis=0) < 0.5)
        if empty.size:
            # The op logs the same ("Missing N bands ... in mel-frequency design") and goes on.
            log.warning(
                "tf_mfcc: %d of %d mel channels (from channel %d) get almost no FFT bins at a %d-point FFT; "
                "TensorFlow computes them the same way",
                empty.size,
                p.filterbank_channel_count,
                empty[0],
                spec.fft_length_samples,
            )
        self._dct = tf_dct_matrix(p.filterbank_channel_count, p.dct_coefficient_count)

    def __call__(self, frames: npt.NDArray[np.float64]) -> FeatureArray:
        """``frames``: (n, window_samples) float64 in [-1, 1); returns (n, dct_coefficient_count)."""
        energies = np.sqrt(self._spectrogram(frames)) @ self._filterbank
        np.maximum(energies, TF_FILTERBANK_FLOOR, out=energies)
        features: npt.NDArray[np.float64] = np.log(energies) @ self._dct
        return features.astype(np.float32)


class _TfAverageTransform:
    """train.py ``--preprocess=average``: AudioSpectrogram, then average pooling across frequency."""

    def __init__(self, spec: FrontendSpec) -> None:
        self._spectrogram = _TfSpectrogram(spec)
        self._pool = tf_average_matrix(spec.spectrogram_bin_count, spec.average_window_bins)

    def __call__(self, frames: npt.NDArray[np.float64]) -> FeatureArray:
        """``frames``: (n, window_samples) float64 in [-1, 1); returns (n, feature_count)."""
        pooled: npt.NDArray[np.float64] = self._spectrogram(frames) @ self._pool
        return pooled.astype(np.float32)


#: A stateless transform: complete frames (n, window_samples) float64 -> (n, feature_count).
_FrameTransform = _MfccTransform | _TfMfccTransform | _TfAverageTransform


def _frame_matrix(samples: Int16Array, count: int, spec: FrontendSpec) -> npt.NDArray[np.float64]:
    """(count, window) float64 view-copy of the first ``count`` frames of ``samples``."""
    starts = np.arange(count) * spec.stride_samples
    index = starts[:, None] + np.arange(spec.window_samples)[None, :]
    frames: npt.NDArray[np.float64] = samples[index].astype(np.float64) / INT16_FULL_SCALE
    return frames


def fit_to_clip(samples: Int16Array, spec: FrontendSpec) -> Int16Array:
    """Pad with zeros or cut at the end to exactly ``clip_samples`` (train.py's rule).

    ``embedding``: at the start instead, so a short clip ends where the window ends, as
    openWakeWord places a word in its 2 s window and as the stream shows it to the model
    the moment it is complete.
    """
    samples = np.asarray(samples, dtype=np.int16)
    at_start = spec.kind is FrontendKind.EMBEDDING
    if len(samples) >= spec.clip_samples:
        return samples[len(samples) - spec.clip_samples :] if at_start else samples[: spec.clip_samples]
    pad = np.zeros(spec.clip_samples - len(samples), np.int16)
    return np.concatenate((pad, samples) if at_start else (samples, pad))


def compute_features(spec: FrontendSpec, clip: Int16Array) -> FeatureArray:
    """Batch path: the (frame_count, feature_count) float32 features of one clip.

    ``clip`` is mono int16 at ``spec.sample_rate_hz``, padded or cut to the clip length.
    Training and ``kwsd label-wav`` use this; the stream path must agree with it. The micro
    front end starts afresh on the clip (train.py's features, and ``per_clip``'s meaning).
    """
    clip = fit_to_clip(clip, spec)
    if spec.kind is FrontendKind.EMBEDDING:
        from kwsd.embedding import clip_embeddings

        return clip_embeddings(spec, clip)
    if spec.kind is not FrontendKind.MICRO:
        transform = _frame_transform(spec)
        return transform(_frame_matrix(clip, spec.frame_count, spec))
    frontend = StreamingFrontend(spec)
    return frontend.push(clip)[: spec.frame_count]


_TRANSFORMS: dict[FrontendSpec, _FrameTransform] = {}


def _frame_transform(spec: FrontendSpec) -> _FrameTransform:
    # Cached per spec: building a filterbank costs ~0.3 ms, a clip's features less.
    transform = _TRANSFORMS.get(spec)
    if transform is None:
        if spec.kind is FrontendKind.MFCC:
            transform = _MfccTransform(spec)
        elif spec.kind is FrontendKind.TF_MFCC:
            transform = _TfMfccTransform(spec)
        else:
            assert spec.kind is FrontendKind.TF_AVERAGE, spec.kind
            transform = _TfAverageTransform(spec)
        _TRANSFORMS[spec] = transform
    return transform


class StreamingFrontend:
    """Incremental path: push audio in blocks of any size, get back only the new frames.

    Keeps only the samples the next frame still needs. Frame ``k`` returned (counting
    from 0 since construction or :meth:`reset`) covers stream samples
    ``[k * stride, k * stride + window)``.

    For ``mfcc``, ``tf_mfcc`` and ``tf_average`` every frame depends on its own samples
    only, so this equals :func:`compute_features` on the same samples. The ``micro`` front
    end is stateful (noise reduction and PCAN adapt over time): here one front end runs from
    construction or the last :meth:`reset`, which is ``continuous``'s meaning, and also what
    ``per_clip`` means for the first window (so :func:`compute_features` uses it). A stream
    of ``per_clip`` windows is :class:`PerClipMicroFrontend`'s job. An ``embedding`` frame
    depends on its own samples only too; :class:`kwsd.embedding.EmbeddingStream` computes
    each mel frame once and each embedding from the kept mel frames.

    Not thread-safe: one listener thread owns it.
    """

    def __init__(self, spec: FrontendSpec) -> None:
        self.spec = spec
        self.frames_emitted = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._skip_samples = 0
        # Sample index of every frame of a push (row k: frame k's samples), grown on demand:
        # framing a push is then one indexing operation.
        self._frame_index = np.zeros((0, spec.window_samples), np.intp)
        self._transform: _FrameTransform | None = None
        self._embedding: EmbeddingStream | None = None
        if spec.kind is FrontendKind.EMBEDDING:
            from kwsd.embedding import EmbeddingStream

            self._embedding = EmbeddingStream(spec)
        elif spec.kind is not FrontendKind.MICRO:
            self._transform = _frame_transform(spec)
        else:
            from kwsd.microfrontend import NoiseState

            self._tables = micro_tables(spec)
            self._noise = NoiseState(self._tables, 1)

    def reset(self) -> None:
        self.frames_emitted = 0
        self._pending = np.zeros(0, dtype=np.int16)
        self._skip_samples = 0
        if self._embedding is not None:
            self._embedding.reset()
        elif self._transform is None:
            self._noise.reset_rows(slice(None))

    def push(self, samples: Int16Array) -> FeatureArray:
        """Feed mono int16 samples; returns the (n_new, feature_count) frames they complete."""
        if self._embedding is not None:
            embeddings = self._embedding.push(samples)
            self.frames_emitted += len(embeddings)
            return embeddings
        frames = self.take_frames(samples)
        if not len(frames):
            return np.zeros((0, self.spec.feature_count), np.float32)
        self.frames_emitted += len(frames)
        if self._transform is not None:
            return self._transform(frames.astype(np.float64) / INT16_FULL_SCALE)
        features: FeatureArray = self._noise.run(self._tables.filterbank(frames))[:, 0]
        return features

    def take_frames(self, samples: Int16Array) -> Int16Array:
        """Framing only: the (n, window_samples) int16 frames that ``samples`` complete,
        after the samples kept from earlier pushes; keeps what the next frame needs."""
        spec = self.spec
        samples = np.asarray(samples, dtype=np.int16)
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        if self._skip_samples:
            # A stride longer than the window leaves samples between frames that no frame uses.
            dropped = min(self._skip_samples, len(samples))
            samples = samples[dropped:]
            self._skip_samples -= dropped
        if len(samples) < spec.window_samples:
            self._pending = samples
            return np.zeros((0, spec.window_samples), np.int16)
        count = 1 + (len(samples) - spec.window_samples) // spec.stride_samples
        if count > len(self._frame_index):
            starts = np.arange(count) * spec.stride_samples
            self._frame_index = starts[:, None] + np.arange(spec.window_samples)[None, :]
        frames: Int16Array = samples[self._frame_index[:count]]
        next_start = count * spec.stride_samples
        self._pending = samples[next_start:].copy()
        self._skip_samples = max(0, next_start - len(samples))
        return frames


class PerClipMicroFrontend:
    """Incremental ``per_clip`` path: the windows of a stream, each as a fresh front end
    starting at its first sample would compute it (what :func:`compute_features` gives on
    that window's samples), at about the cost of one stream.

    Window, FFT and filterbank depend on a frame alone, so each frame's filterbank output is
    computed once and kept for the windows that share it. The only state is the noise
    estimate, so every window in flight has one row of estimates, and the frames of a push
    advance all rows together (:meth:`kwsd.microfrontend.NoiseState.run`: per frame three
    integer operations over all rows, then the rest for all frames and rows at once).

    Windows are named by their end frame (exclusive): window ``e`` covers frames
    ``[e - frame_count, e)``. :meth:`schedule` says which windows will be asked for (every
    ``hop_frames`` from ``next_end``); those are computed as their frames arrive. Any other
    window whose frames are still kept is computed on request from the kept filterbank
    outputs (after a schedule change, for instance).

    Not thread-safe: one listener thread owns it.
    """

    def __init__(self, spec: FrontendSpec, *, max_push_samples: int | None = None) -> None:
        from kwsd.microfrontend import NoiseState

        if spec.micro is None:
            raise SpecError(f"kind: PerClipMicroFrontend needs a micro front end, got {spec.kind.value}")
        self.spec = spec
        self._tables = micro_tables(spec)
        self._framing = StreamingFrontend(spec)  # only its framing is used
        self.frames_total = 0
        count = spec.frame_count
        channels = self._tables.channels
        # Frames are advanced in steps of at most the largest push (a longer push is split).
        self._step_frames = (max_push_samples or spec.sample_rate_hz) // spec.stride_samples + 1
        # Filterbank outputs of the last frames: enough for any window that ends within one
        # step, plus one whole window before it.
        self._kept = 2 * count + self._step_frames
        self._filterbank = np.zeros((self._kept, channels), np.int64)
        self._hop = 1
        self._next_start = 0
        # One row per window in flight: at most one starts per frame, each lasts frame_count
        # frames. Every row's features of the last frames, by frame: a window's frames are read
        # off when it ends, after its row may already be serving the next window.
        self._slots = count + 1
        self._noise = NoiseState(self._tables, self._slots)
        self._feature_frames = count + self._step_frames
        self._features = np.zeros((self._slots, self._feature_frames, channels), np.float32)
        self._free = list(range(self._slots))
        self._ending: dict[int, tuple[int, int]] = {}  # last frame -> (slot, start frame)
        self._window_frames = np.arange(count)
        self._done: dict[int, FeatureArray] = {}
        self.schedule(count, 1)

    def schedule(self, next_end: int, hop_frames: int) -> None:
        """Windows ending at ``next_end + k * hop_frames`` (k >= 0) will be asked for."""
        if hop_frames <= 0:
            raise ValueError(f"hop_frames: expected a positive integer, got {hop_frames}")
        start = next_end - self.spec.frame_count
        if start < self.frames_total:  # already begun: computed on request instead
            start += -(-(self.frames_total - start) // hop_frames) * hop_frames
        self._next_start, self._hop = start, hop_frames

    def push(self, samples: Int16Array) -> int:
        """Feed mono int16 samples; returns the number of frames seen so far."""
        frames = self._framing.take_frames(samples)
        if not len(frames):
            return self.frames_total
        filterbank = self._tables.filterbank(frames)
        for offset in range(0, len(filterbank), self._step_frames):
            self._advance(filterbank[offset : offset + self._step_frames])
        return self.frames_total

    def _advance(self, filterbank: npt.NDArray[np.int64]) -> None:
        """Every window in flight through the next frames (at most ``_step_frames``)."""
        count = self.spec.frame_count
        first = self.frames_total
        positions = np.arange(first, first + len(filterbank))
        self._filterbank[positions % self._kept] = filterbank
        fresh: dict[int, int] = {}  # frame (within this step) -> row starting afresh there
        ended: list[tuple[int, int, int]] = []  # (last frame, row, start frame)
        for f in range(first, first + len(filterbank)):
            if f == self._next_start:
                slot = self._free.pop()
                fresh[f - first] = slot  # FrontendReset
                self._ending[f + count - 1] = (slot, f)
                self._next_start += self._hop
            done = self._ending.pop(f, None)
            if done is not None:
                ended.append((f, *done))
                self._free.append(done[0])
        # Every row runs, in use or not: one operation for all is cheaper than choosing.
        features = self._noise.run(filterbank, fresh)
        self._features[:, positions % self._feature_frames] = features.transpose(1, 0, 2)
        for last, slot, start in ended:
            frames = (start + self._window_frames) % self._feature_frames
            self._done[last + 1] = self._features[slot].take(frames, axis=0)
        self.frames_total = first + len(filterbank)

    def discard(self, end_frame: int) -> None:
        """Drop the windows ending at or before ``end_frame`` unread (the audio gate skipped it)."""
        for stale in [e for e in self._done if e <= end_frame]:
            del self._done[stale]

    def window(self, end_frame: int) -> FeatureArray:
        """The (frame_count, feature_count) float32 features of the window ending at
        ``end_frame`` (exclusive), computed as if the front end started at its first frame."""
        count = self.spec.frame_count
        for stale in [e for e in self._done if e < end_frame]:
            del self._done[stale]
        done = self._done.pop(end_frame, None)
        if done is not None:
            return done
        start = end_frame - count
        if start < 0 or end_frame > self.frames_total or start < self.frames_total - self._kept:
            raise ValueError(
                f"window ending at frame {end_frame}: frames {max(0, self.frames_total - self._kept)}.."
                f"{self.frames_total} are available"
            )
        from kwsd.microfrontend import NoiseState

        filterbank = self._filterbank[(start + self._window_frames) % self._kept]
        features: FeatureArray = NoiseState(self._tables, 1).run(filterbank)[:, 0]
        return features
