"""Robustness augmentation: room reverberation, noise at an SNR, gain, speed, pitch, a cheap
microphone's band, and SpecAugment masks. Pure functions on float audio in [-1, 1] (or on
feature arrays), each given its random choices explicitly, so a seeded generator upstream
(:func:`tools.training.features.make_recipe`) decides everything and the same seed gives the
same output.

What each one models, and why it is done where it is:

* **Reverberation** (:func:`reverberate`): a room between the talker and a far microphone.
  Impulse responses come from a bank made once per run: simulated ones
  (:func:`simulated_rir`: a direct path, a few early reflections and an exponentially decaying
  noise tail with the drawn RT60; about a millisecond each) plus measured ones the user gives
  (``--rir_dir``, mono WAVs at the model's rate). pyroomacoustics' image-source rooms were
  measured here as the alternative: 0.5 s per impulse response (median of 10 rooms, RT60
  0.2-0.8 s), 1.4 s to import and 5.5 MB installed; for training a small keyword model the
  statistical tail is what matters, so no dependency is added.
* **Noise at an SNR** (:func:`mix_at_snr`): the noise is scaled so that the clip's power over
  the noise's power is the drawn SNR (both over the whole clip), from the data set's
  ``_background_noise_`` and the ``--noise_dir`` folders.
* **Gain** (:func:`apply_gain`): a quiet or hot microphone, clipped to [-1, 1] like a real one.
* **Speed** (:func:`change_speed`): resampling with soxr; tempo and pitch change together,
  the clip is re-centred and padded or cut to its length.
* **Pitch** (:func:`shift_pitch`): resampling, then WSOLA time-stretching back to the length,
  so the tempo is kept.
* **Band-limiting** (:func:`band_limit`): a cheap USB microphone: Butterworth high-pass
  (order 2) and low-pass (order 4) at the drawn corners.
* **SpecAugment** (:class:`SpecAugment`): masks on the features, applied per training step on
  each batch drawn from the cached pool (not baked into the pool): a mask costs nothing to
  draw, so every step sees new masks without multiplying the pool's size or its computing time,
  and the pool itself (which also calibrates the int8 model) stays what the daemon computes.

Folders given by the user are read once by :func:`load_rir_folder` / :func:`load_noise_folder`;
what cannot be used is an :class:`AugmentError` (a :class:`DatasetError`: exit 65) naming the
flag and the file. Settings out of range are an :class:`AugmentSettingError` naming the flag.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kwsd.errors import KwsdError
from kwsd.frontend import INT16_FULL_SCALE
from kwsd_tools.training.dataset import DatasetError, read_error_reason, read_samples

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
FeatureBatch = npt.NDArray[np.float32]

#: Direct-to-reverberant energy ratio of the simulated rooms, dB (near to far talker).
SIMULATED_DRR_DB_RANGE = (-3.0, 9.0)
#: Early reflections of a simulated room: how many, and the span they arrive in after the direct path.
EARLY_REFLECTIONS = 8
EARLY_REFLECTION_MS_RANGE = (2.0, 40.0)
#: A simulated tail is cut where it has decayed by this much (dB).
TAIL_DECAY_DB = 60.0
#: WSOLA frame, hop and search tolerance (ms) for the pitch shift's time-stretch.
WSOLA_FRAME_MS = 32.0
WSOLA_TOLERANCE_MS = 8.0
#: Butterworth orders of the microphone's band: a gentle high-pass, a steeper low-pass.
HIGHPASS_ORDER = 2
LOWPASS_ORDER = 4
#: Powers below this are treated as silence (no SNR scaling against a silent clip).
SILENT_POWER = 1e-12


class AugmentError(DatasetError):
    """An impulse-response or noise folder that cannot be used: names the flag and the file."""


class AugmentSettingError(ValueError):
    """An augmentation setting out of range: names the flag and what was expected."""


# --- settings parsing -----------------------------------------------------------------------


def parse_range(
    flag: str, text: str, *, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """``"A,B"`` with A <= B (and within [low, high] when given) as floats; one value means A=B."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise AugmentSettingError(f"{flag}: expected two numbers LOW,HIGH, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise AugmentSettingError(f"{flag}: expected two numbers LOW,HIGH, got {text!r}")
    a, b = values
    if a > b:
        raise AugmentSettingError(
            f"{flag}: the range is upside down ({text!r}; expected LOW,HIGH with LOW <= HIGH)"
        )
    if (low is not None and a < low) or (high is not None and b > high):
        bounds = f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}"
        raise AugmentSettingError(f"{flag}: expected values in {bounds}, got {text!r}")
    return a, b


def check_probability(flag: str, value: float) -> float:
    if not (0.0 <= value <= 1.0):
        raise AugmentSettingError(f"{flag}: expected a probability from 0 to 1, got {value:g}")
    return value


# --- the transforms -------------------------------------------------------------------------


def mix_at_snr(clip: FloatArray, noise: FloatArray, snr_db: float) -> FloatArray:
    """``clip + k * noise`` with k such that power(clip) / power(k * noise) is ``snr_db``.

    Powers are means of squares over the whole arrays (same length). A silent clip or silent
    noise returns the clip unchanged. Not clipped (the caller clips once at the end).
    """
    clip_power = float(np.mean(clip**2))
    noise_power = float(np.mean(noise**2))
    if clip_power < SILENT_POWER or noise_power < SILENT_POWER:
        return clip.copy()
    scale = math.sqrt(clip_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return clip + noise * scale


def apply_gain(audio: FloatArray, gain_db: float) -> FloatArray:
    """``audio * 10**(gain_db / 20)``, clipped to [-1, 1] (a microphone's full scale)."""
    clipped: FloatArray = np.clip(audio * 10.0 ** (gain_db / 20.0), -1.0, 1.0)
    return clipped


def fit_centred(audio: FloatArray, samples: int) -> FloatArray:
    """Cut equally from both ends or pad zeros equally at both ends to ``samples``."""
    if len(audio) > samples:
        start = (len(audio) - samples) // 2
        return audio[start : start + samples]
    if len(audio) < samples:
        before = (samples - len(audio)) // 2
        return np.concatenate((np.zeros(before), audio, np.zeros(samples - len(audio) - before)))
    return audio


def change_speed(audio: FloatArray, factor: float, sample_rate_hz: int) -> FloatArray:
    """Play ``audio`` ``factor`` times faster (tempo and pitch), re-centred to its length."""
    if factor == 1.0:
        return audio
    import soxr

    faster = soxr.resample(audio, sample_rate_hz * factor, sample_rate_hz, quality="HQ")
    return fit_centred(np.asarray(faster, np.float64), len(audio))


def time_stretch(audio: FloatArray, samples: int, sample_rate_hz: int) -> FloatArray:
    """WSOLA: ``audio`` stretched (or squeezed) to ``samples`` samples at the same pitch."""
    frame = int(sample_rate_hz * WSOLA_FRAME_MS / 1000)
    hop = frame // 2
    tolerance = int(sample_rate_hz * WSOLA_TOLERANCE_MS / 1000)
    if len(audio) < frame + 2 * tolerance + hop or samples < frame:
        return fit_centred(audio, samples)
    ratio = len(audio) / samples  # analysis step per synthesis step
    window = np.hanning(frame)
    padded = np.concatenate((np.zeros(tolerance), audio, np.zeros(frame + 2 * tolerance + hop)))
    out = np.zeros(samples + frame)
    norm = np.zeros(samples + frame)
    previous = tolerance  # where the last copied frame started in padded
    for k, start in enumerate(range(0, samples, hop)):
        nominal = tolerance + round(start * ratio)
        if k == 0:
            pick = nominal
        else:
            # The natural continuation of the last frame, matched within +/- tolerance.
            natural = padded[previous + hop : previous + hop + frame]
            region = padded[nominal - tolerance : nominal + tolerance + frame]
            scores = np.correlate(region, natural, mode="valid")
            pick = nominal - tolerance + int(np.argmax(scores))
        out[start : start + frame] += padded[pick : pick + frame] * window
        norm[start : start + frame] += window
        previous = pick
    norm[norm < 1e-3] = 1.0
    return (out / norm)[:samples]


def shift_pitch(audio: FloatArray, semitones: float, sample_rate_hz: int) -> FloatArray:
    """Pitch up by ``semitones`` (down when negative), same length and tempo: resample, then
    WSOLA-stretch back."""
    if semitones == 0.0:
        return audio
    import soxr

    ratio = 2.0 ** (semitones / 12.0)
    higher = np.asarray(
        soxr.resample(audio, sample_rate_hz * ratio, sample_rate_hz, quality="HQ"), np.float64
    )
    return time_stretch(higher, len(audio), sample_rate_hz)


def band_limit(audio: FloatArray, highpass_hz: float, lowpass_hz: float, sample_rate_hz: int) -> FloatArray:
    """High-pass at ``highpass_hz`` and low-pass at ``lowpass_hz`` (Butterworth; 0 skips one;
    a low-pass at or above Nyquist is skipped)."""
    from scipy import signal

    out = audio
    if highpass_hz > 0:
        sos = signal.butter(HIGHPASS_ORDER, highpass_hz, "highpass", fs=sample_rate_hz, output="sos")
        out = signal.sosfilt(sos, out)
    if 0 < lowpass_hz < sample_rate_hz / 2:
        sos = signal.butter(LOWPASS_ORDER, lowpass_hz, "lowpass", fs=sample_rate_hz, output="sos")
        out = signal.sosfilt(sos, out)
    return np.asarray(out, np.float64)


def reverberate(audio: FloatArray, rir: FloatArray) -> FloatArray:
    """``audio`` convolved with ``rir`` (direct path at index 0), cut to its length and scaled
    back to its power (a room changes the sound's colour and decay, not the talker's level)."""
    from scipy import signal

    wet = signal.fftconvolve(audio, rir)[: len(audio)]
    power, wet_power = float(np.mean(audio**2)), float(np.mean(wet**2))
    if power < SILENT_POWER or wet_power < SILENT_POWER:
        return audio.copy()
    return np.asarray(wet * math.sqrt(power / wet_power), np.float64)


def simulated_rir(rt60_ms: float, sample_rate_hz: int, rng: np.random.Generator) -> FloatArray:
    """A room impulse response: unit direct path at 0, ``EARLY_REFLECTIONS`` sparse reflections
    and a Gaussian tail whose energy decays by 60 dB in ``rt60_ms``, scaled to a direct-to-
    reverberant ratio drawn from ``SIMULATED_DRR_DB_RANGE``. Cut after ``TAIL_DECAY_DB``."""
    rt60_s = rt60_ms / 1000.0
    length = max(2, int(sample_rate_hz * rt60_s * TAIL_DECAY_DB / 60.0))
    t = np.arange(length) / sample_rate_hz
    envelope = 10.0 ** (-3.0 * t / rt60_s)  # amplitude: -60 dB of energy at rt60
    tail = rng.standard_normal(length) * envelope
    tail[0] = 0.0
    early = rng.uniform(*EARLY_REFLECTION_MS_RANGE, EARLY_REFLECTIONS) * sample_rate_hz / 1000.0
    for position in early.astype(int):
        if 0 < position < length:
            tail[position] += rng.choice((-1.0, 1.0)) * rng.uniform(0.3, 0.8) * envelope[position]
    drr_db = rng.uniform(*SIMULATED_DRR_DB_RANGE)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / max(float(np.sum(tail**2)), SILENT_POWER))
    tail[0] = 1.0
    return tail


def decay_time_ms(rir: FloatArray, sample_rate_hz: int) -> float:
    """RT60 of an impulse response by Schroeder backward integration: the -5..-25 dB slope
    extrapolated to -60 dB (T20)."""
    energy = np.cumsum((rir**2)[::-1])[::-1]
    curve = 10.0 * np.log10(np.maximum(energy / energy[0], 1e-30))
    start, end = int(np.argmax(curve <= -5.0)), int(np.argmax(curve <= -25.0))
    if end <= start:
        return 0.0
    slope_db_per_s = float(curve[end] - curve[start]) / ((end - start) / sample_rate_hz)
    return -60.0 / slope_db_per_s * 1000.0


# --- SpecAugment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecAugment:
    """Time and frequency masks on feature batches ``[n, frames, features]``.

    Each input gets ``time_masks`` masks of width uniform in [1, ``time_mask_frames``] frames
    and ``freq_masks`` masks of width uniform in [1, ``freq_mask_bins``] features, at uniform
    positions (they may overlap); masked values become ``fill`` (per feature: the training
    pool's mean, which is 0 after the model's normalisation, as in the SpecAugment paper).
    """

    time_masks: int = 0
    time_mask_frames: int = 5
    freq_masks: int = 0
    freq_mask_bins: int = 2

    @property
    def active(self) -> bool:
        return self.time_masks > 0 or self.freq_masks > 0

    def apply(
        self, batch: FeatureBatch, fill: npt.NDArray[np.float32], rng: np.random.Generator
    ) -> FeatureBatch:
        """A masked copy of ``batch``; ``fill``: one value per feature."""
        out = batch.copy()
        n, frames, features = out.shape
        for axis, count, widest, size in (
            (1, self.time_masks, self.time_mask_frames, frames),
            (2, self.freq_masks, self.freq_mask_bins, features),
        ):
            if count <= 0 or widest <= 0:
                continue
            widths = rng.integers(1, min(widest, size) + 1, (n, count))
            starts = rng.integers(0, size - widths + 1)
            for i in range(n):
                for width, start in zip(widths[i], starts[i], strict=True):
                    if axis == 1:
                        out[i, start : start + width, :] = fill
                    else:
                        out[i, :, start : start + width] = fill[start : start + width]
        return out


# --- the user's folders -----------------------------------------------------------------------


def _wavs(flag: str, folder: Path) -> list[Path]:
    if not folder.is_dir():
        what = "no such folder" if not folder.exists() else "not a folder"
        raise AugmentError(f"{flag} {folder}: {what}")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() == ".wav" and not p.name.startswith(".")
    )


def load_rir_folder(folder: Path, sample_rate_hz: int, *, flag: str = "--rir_dir") -> dict[str, FloatArray]:
    """Measured impulse responses: every ``.wav`` under ``folder``, which must be mono at
    ``sample_rate_hz`` (an impulse response is not resampled behind the user's back: its
    timing is the measurement). Each is trimmed to start at its peak (the direct path, so the
    word is not delayed) and scaled to a unit peak. Name -> samples."""
    from kwsd.audio import open_audio

    paths = _wavs(flag, folder)
    if not paths:
        raise AugmentError(
            f"{flag} {folder}: no .wav impulse responses in it (expected mono {sample_rate_hz} Hz WAVs)"
        )
    rirs: dict[str, FloatArray] = {}
    for path in paths:
        try:
            with open_audio(path, sample_rate_hz) as reader:
                info = reader.info
                if info.channels != 1 or info.sample_rate_hz != sample_rate_hz:
                    raise AugmentError(
                        f"{flag} {path}: {info.describe()}, expected mono at {sample_rate_hz} Hz "
                        f"(--sample_rate); convert it: sox {path} -c 1 -r {sample_rate_hz} OUT.wav"
                    )
                samples = np.concatenate([np.zeros(0, np.int16), *reader.blocks(1 << 20)])
        except (KwsdError, OSError) as err:
            if isinstance(err, AugmentError):
                raise
            raise AugmentError(f"{flag} {path}: {read_error_reason(err, path)}") from None
        values = samples / INT16_FULL_SCALE
        if not len(values) or float(np.max(np.abs(values))) == 0.0:
            raise AugmentError(f"{flag} {path}: silent or empty, not an impulse response")
        peak = int(np.argmax(np.abs(values)))
        rir = values[peak:]
        rirs[path.relative_to(folder).as_posix()] = rir / rir[0]
    return rirs


def load_noise_folder(
    folder: Path, sample_rate_hz: int, clip_samples: int, *, flag: str = "--noise_dir"
) -> dict[str, FloatArray]:
    """Noise recordings: every ``.wav`` under ``folder`` (any rate and channels: converted by
    kwsd's reader), each at least one clip long and not silent. Name -> samples in [-1, 1)."""
    paths = _wavs(flag, folder)
    if not paths:
        raise AugmentError(
            f"{flag} {folder}: no usable noise in it (expected .wav recordings of at least one clip)"
        )
    noise: dict[str, FloatArray] = {}
    for path in paths:
        try:
            samples, _ = read_samples(path, sample_rate_hz)
        except (KwsdError, OSError) as err:
            raise AugmentError(f"{flag} {path}: {read_error_reason(err, path)}") from None
        if len(samples) < clip_samples:
            length_ms = len(samples) * 1000 / sample_rate_hz
            raise AugmentError(
                f"{flag} {path}: {length_ms:.0f} ms of noise, shorter than one clip "
                f"({clip_samples * 1000 // sample_rate_hz} ms)"
            )
        if not np.any(samples):
            raise AugmentError(f"{flag} {path}: digital silence, not noise")
        noise[f"{folder.name}/{path.relative_to(folder).as_posix()}"] = samples / INT16_FULL_SCALE
    return noise


@dataclass
class AugmentAssets:
    """What recipes refer to by index or name: the run's impulse-response bank (simulated, then
    measured) and the user's noise recordings. Made once per run by :func:`make_assets`."""

    rirs: list[FloatArray]
    rir_names: list[str]
    noise: dict[str, FloatArray]

    def fingerprint(self) -> list[str]:
        """What the feature cache key must depend on."""
        return [
            f"rir\0{n}\0{len(r)}\0{float(np.sum(r)):.9g}"
            for n, r in zip(self.rir_names, self.rirs, strict=True)
        ] + [f"noise\0{n}\0{len(a)}\0{float(np.sum(a)):.9g}" for n, a in sorted(self.noise.items())]


def make_assets(
    *,
    sample_rate_hz: int,
    clip_samples: int,
    seed: int,
    simulated_rir_count: int,
    rt60_ms_range: tuple[float, float],
    rir_dirs: Sequence[str] = (),
    noise_dirs: Sequence[str] = (),
) -> AugmentAssets:
    """The bank: ``simulated_rir_count`` rooms with RT60 uniform in ``rt60_ms_range`` (seeded by
    ``seed``), then every measured one from ``rir_dirs``; and the noise of ``noise_dirs``."""
    rng = np.random.default_rng([seed, 0x5249])
    rirs: list[FloatArray] = []
    names: list[str] = []
    for k in range(simulated_rir_count):
        rt60 = float(rng.uniform(*rt60_ms_range))
        rirs.append(simulated_rir(rt60, sample_rate_hz, rng))
        names.append(f"simulated/{k}:rt60={rt60:.0f}ms")
    for folder in rir_dirs:
        for name, rir in load_rir_folder(Path(folder), sample_rate_hz).items():
            rirs.append(rir)
            names.append(f"{Path(folder).name}/{name}")
    noise: dict[str, FloatArray] = {}
    for folder in noise_dirs:
        noise.update(load_noise_folder(Path(folder), sample_rate_hz, clip_samples))
    return AugmentAssets(rirs, names, noise)
