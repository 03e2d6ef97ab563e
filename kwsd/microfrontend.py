"""The TFLite Micro audio front end in numpy, integer for integer.

TensorFlow's ``audio_microfrontend`` op (what train.py ``--preprocess=micro`` computes) and
the micro_speech firmware run the same small fixed-point C library
(tensorflow/lite/experimental/microfrontend/lib): per frame a Hann window, a 16-bit
fixed-point real FFT (kiss_fftr), a mel-spaced triangular filterbank on the energies, an
integer square root, then noise reduction (a per-channel running noise estimate), PCAN gain
control (which divides by a power of that estimate) and an integer log. This module redoes
each step with the same integer arithmetic, so its output equals the op's, value for value,
with no TensorFlow at run time.

Split by what carries state:

* :class:`MicroTables` holds everything fixed by the parameters (window, FFT twiddles,
  filterbank weights, the PCAN gain and log look-up tables); built once per spec.
* :meth:`MicroTables.filterbank` maps frames of samples to the filterbank output. Window,
  FFT, filterbank and square root are a function of the frame alone, so a frame shared by
  many windows is computed once.
* :class:`NoiseState` is the only state: one noise estimate per channel, per *row*. A row is
  one front end; several rows advance together on the same frame, each from its own
  estimate, which is how every in-flight window of a per-clip stream is updated with one
  vectorised integer step.

Pure module: arrays in, arrays out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from kwsd.frontend import MicroParams

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]

# Fixed-point formats of the C library (window.h, filterbank.h, noise_reduction.h,
# pcan_gain_control.h, log_lut.h).
WINDOW_BITS = 12
FILTERBANK_BITS = 12
NOISE_REDUCTION_BITS = 14
PCAN_SNR_BITS = 12
PCAN_OUTPUT_BITS = 6
WIDE_DYNAMIC_FUNCTION_BITS = 32
LOG_SCALE_LOG2 = 16
LOG_SEGMENTS_LOG2 = 7
LOG_COEFF = 45426
UINT16_MAX = 0xFFFF
UINT32_MASK = 0xFFFFFFFF
#: kiss_fft's 16-bit fixed point: Q15 twiddles, products rounded back by 15 bits.
KISS_FRACBITS = 15
KISS_SAMP_MAX = 32767

# log_lut.c: the log2 correction table (kLogSegments + 1 entries, plus padding).
_LOG_LUT = np.array(
    [
        0, 224, 442, 654, 861, 1063, 1259, 1450, 1636, 1817, 1992, 2163, 2329, 2490, 2646, 2797,
        2944, 3087, 3224, 3358, 3487, 3611, 3732, 3848, 3960, 4068, 4172, 4272, 4368, 4460, 4549,
        4633, 4714, 4791, 4864, 4934, 5001, 5063, 5123, 5178, 5231, 5280, 5326, 5368, 5408, 5444,
        5477, 5507, 5533, 5557, 5578, 5595, 5610, 5622, 5631, 5637, 5640, 5641, 5638, 5633, 5626,
        5615, 5602, 5586, 5568, 5547, 5524, 5498, 5470, 5439, 5406, 5370, 5332, 5291, 5249, 5203,
        5156, 5106, 5054, 5000, 4944, 4885, 4825, 4762, 4697, 4630, 4561, 4490, 4416, 4341, 4264,
        4184, 4103, 4020, 3935, 3848, 3759, 3668, 3575, 3481, 3384, 3286, 3186, 3084, 2981, 2875,
        2768, 2659, 2549, 2437, 2323, 2207, 2090, 1971, 1851, 1729, 1605, 1480, 1353, 1224, 1094,
        963, 830, 695, 559, 421, 282, 142, 0, 0,
    ],
    dtype=np.int64,
)  # fmt: skip

#: Values entering PCAN's shrink and the log below this come from one table look-up (1 MB of
#: float32 features, built in ~20 ms); larger ones (features above ~26 at the default settings: 1e-5 of the
#: values of real speech, in under 1% of frames) are computed.
_POST_LUT_SIZE = 1 << 18


class MicroConfigError(ValueError):
    """Parameters the C library would refuse or misbehave on (kwsd.frontend turns it into SpecError)."""


def most_significant_bit(values: I64) -> I64:
    """``MostSignificantBit32/64``: 0 for 0, else floor(log2(v)) + 1 (exact for v < 2**53)."""
    _, exponent = np.frexp(values.astype(np.float64))
    return exponent.astype(np.int64)


def _wrap16(values: I64) -> I64:
    """Store into an int16 as C does (two's complement wrap), kept as int64."""
    return values.astype(np.int16).astype(np.int64)


def _sround(values: I64) -> I64:
    return _wrap16((values + (1 << (KISS_FRACBITS - 1))) >> KISS_FRACBITS)


# --------------------------------------------------------------------------------------
# The fixed-point FFT (kiss_fft with FIXED_POINT=16, through kiss_fftr for real input).


def _kiss_factors(n: int) -> list[int]:
    """kf_factor: radix 4 first, then 2, then odd primes."""
    factors: list[int] = []
    p = 4
    floor_sqrt = math.floor(math.sqrt(n))
    while n > 1:
        while n % p:
            p = 2 if p == 4 else 3 if p == 2 else p + 2
            if p > floor_sqrt:
                p = n
        n //= p
        factors.append(p)
    return factors


def _kiss_twiddle(phase: npt.NDArray[np.float64]) -> tuple[I64, I64]:
    """kf_cexp in fixed point: floor(0.5 + 32767 * cos/sin(phase))."""
    real = np.floor(0.5 + KISS_SAMP_MAX * np.cos(phase)).astype(np.int64)
    imag = np.floor(0.5 + KISS_SAMP_MAX * np.sin(phase)).astype(np.int64)
    return real, imag


@dataclass(frozen=True)
class _Stage:
    """One level of kf_work's recursion: ``butterflies`` kf_bfly calls' worth of butterflies
    (groups x m), each on ``radix`` legs."""

    gather: npt.NDArray[np.intp]  # (butterflies * 2 * radix,) flat indices into the last output
    butterflies: int
    radix: int
    fixdiv: float  # C_FIXDIV's (32767 // radix) / 32768
    #: (butterflies, radix) complex: the legs' twiddles divided by 32768, for C_MUL as one
    #: complex product (exact: Q15 integers times integers below 2**16, sums below 2**31);
    #: None when every twiddle is 1 (C_MUL is then exact identity).
    twiddles: npt.NDArray[np.complex128] | None
    #: (2 radix, 2 radix): kf_bfly2/kf_bfly4's sums, legs (re, im) in, outputs (re, im) out.
    butterfly: npt.NDArray[np.float64]
    #: The next stage's C_FIXDIV factor (0 for the last stage), and the butterfly matrix times
    #: it: the sums come out already scaled for the next stage's rounding, exactly (multiples
    #: of 2**-15 below 2**17), unless a sum leaves the int16 range (checked by the caller).
    next_fixdiv: float
    butterfly_scaled: npt.NDArray[np.float64]


def _butterfly_matrix(radix: int) -> npt.NDArray[np.float64]:
    """Row vector of the legs after C_MUL (m0.r, m0.i, m1.r, ...) times this = the
    butterfly's outputs (out0.r, out0.i, out1.r, ...), forward direction."""
    if radix == 2:  # out0 = a + t, out1 = a - t
        return np.array([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, -1, 0], [0, 1, 0, -1]], np.float64)
    # kf_bfly4 with a = m0, s0 = m1, s1 = m2, s2 = m3:
    # out0 = a + s0 + s1 + s2, out2 = a - s0 + s1 - s2,
    # out1 = (a - s1) + (s0 - s2) * -i, out3 = (a - s1) - (s0 - s2) * -i.
    columns = [
        {0: 1, 2: 1, 4: 1, 6: 1},
        {1: 1, 3: 1, 5: 1, 7: 1},
        {0: 1, 4: -1, 3: 1, 7: -1},
        {1: 1, 5: -1, 2: -1, 6: 1},
        {0: 1, 2: -1, 4: 1, 6: -1},
        {1: 1, 3: -1, 5: 1, 7: -1},
        {0: 1, 4: -1, 3: -1, 7: 1},
        {1: 1, 5: -1, 2: 1, 6: -1},
    ]
    matrix = np.zeros((8, 8), np.float64)
    for out, coefficients in enumerate(columns):
        for row, value in coefficients.items():
            matrix[row, out] = value
    return matrix


class KissFftr:
    """kiss_fftr (forward, 16-bit fixed point) on many frames at once, bit for bit.

    ``fft_size`` must be a power of two (the front end rounds its window up to one), so
    the half-size complex FFT needs only kiss_fft's radix-4 and radix-2 butterflies.

    The recursion is unrolled into stages, innermost first. A stage gathers each
    butterfly's legs into one row, rounds them as C_FIXDIV does, multiplies by the twiddles
    and rounds as C_MUL does, then forms the sums with one small matrix product. Values are
    float64 but always exact: integers, or integers times 2**-15 below 2**30 before a
    rounding. Every sum the C stores into an int16 is wrapped like it (checked per stage;
    outside +-32767 only for near-full-scale input).
    """

    def __init__(self, fft_size: int) -> None:
        if fft_size < 8 or fft_size & (fft_size - 1):
            raise MicroConfigError(f"FFT size: expected a power of two >= 8, got {fft_size}")
        self.fft_size = fft_size
        n = fft_size // 2
        factors = _kiss_factors(n)
        assert all(p in (2, 4) for p in factors)
        levels = []
        fstride = 1
        for p in factors:
            levels.append((p, fstride, n // (fstride * p)))
            fstride *= p
        tw_real, tw_imag = _kiss_twiddle(-2 * np.pi * np.arange(n) / n)
        order = self._leaf_order(n, factors, 1)

        def input_flat(pos: npt.NDArray[np.int64], c: int) -> npt.NDArray[np.int64]:
            # kiss_fftr reads the real input as n complex values: sample 2i real, 2i+1 imag.
            return 2 * order[pos] + c

        def output_flat(p: int, m: int) -> Any:
            def flat(pos: npt.NDArray[np.int64], c: int) -> npt.NDArray[np.int64]:
                group, rest = pos // (p * m), pos % (p * m)
                leg, k = rest // m, rest % m
                return (group * m + k) * 2 * p + 2 * leg + c

            return flat

        previous: Any = input_flat
        stages: list[tuple[npt.NDArray[np.intp], int, int, npt.NDArray[np.complex128] | None]] = []
        for p, groups, m in reversed(levels):
            butterfly = np.arange(groups * m)
            group, k = butterfly // m, butterfly % m
            leg = np.arange(p)
            # Kiss's Fout index of each butterfly's legs, then where the last stage left it.
            pos = group[:, None] * p * m + leg[None, :] * m + k[:, None]
            gather = np.stack([previous(pos, 0), previous(pos, 1)], axis=-1).reshape(-1)
            twiddles = None
            if m > 1:
                index = leg[None, :] * k[:, None] * groups
                twiddles = (tw_real[index] + 1j * tw_imag[index]) / 32768.0
            stages.append((gather, len(butterfly), p, twiddles))
            previous = output_flat(p, m)
        self._stages: list[_Stage] = []
        for i, (gather, butterflies, p, twiddles) in enumerate(stages):
            matrix = _butterfly_matrix(p)
            following = _fixdiv_factor(stages[i + 1][2]) if i + 1 < len(stages) else 0.0
            stage = _Stage(
                gather, butterflies, p, _fixdiv_factor(p), twiddles, matrix, following, matrix * following
            )
            self._stages.append(stage)
        half = n // 2
        k = np.arange(1, half + 1)
        self._split_gather = np.stack(
            [previous(k, 0), previous(k, 1), previous(n - k, 0), previous(n - k, 1)], axis=-1
        ).reshape(-1)
        self._half = half
        sr, si = _kiss_twiddle(-np.pi * ((np.arange(half) + 1) / n + 0.5))
        self._super_twiddles = (sr + 1j * si)[:, None] / 32768.0
        # (fpk.r, fpk.i, fpnk.r, fpnk.i) -> (f1.r, f1.i, f2.r, f2.i): f1 = fpk + fpnk, f2 = fpk - fpnk
        self._sum_difference = np.array(
            [[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, -1, 0], [0, 1, 0, -1]], np.float64
        )
        # (f1.r, f1.i, tw.r, tw.i) -> (f1.r + tw.r, f1.i + tw.i, f1.r - tw.r, tw.i - f1.i)
        self._halves = np.array([[1, 0, 1, 0], [0, 1, 0, -1], [1, 0, -1, 0], [0, 1, 0, 1]], np.float64)
        self._conjugate = np.array([1, 1, 1, -1], np.float64)
        #: Bins of :meth:`__call__`'s output, in order: for k = 1..n/2, k (re, im) then n - k
        #: (re, im). Bin n/2 comes twice; kiss_fftr writes the second copy last.
        self.bins = np.stack([k, k, n - k, n - k], axis=-1).reshape(-1)

    @staticmethod
    def _leaf_order(n: int, factors: list[int], fstride: int) -> npt.NDArray[np.intp]:
        p, rest = factors[0], factors[1:]
        m = n // p
        if m == 1:
            return np.arange(p, dtype=np.intp) * fstride
        sub = KissFftr._leaf_order(m, rest, fstride * p)
        return np.concatenate([sub + q * fstride for q in range(p)])

    def __call__(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
        """``samples``: (frames, fft_size) int16. Returns (frames, fft_size // 4, 4): the
        real and imaginary parts of bins k and n - k for k = 1..n/2 (:attr:`bins`), exactly
        as kiss_fftr leaves them. DC and Nyquist are not returned (the front end never uses
        them)."""
        frames = samples.shape[0]
        values: npt.NDArray[Any] = samples
        scaled = False  # whether values already carry this stage's C_FIXDIV factor, unrounded
        for stage in self._stages:
            width = 2 * stage.radix
            legs = values.take(stage.gather, axis=1).reshape(frames, stage.butterflies, width)
            if not scaled:
                legs = legs * stage.fixdiv  # C_FIXDIV: round(x * (32767 // radix) / 32768)
            legs += 0.5
            np.floor(legs, out=legs)
            if stage.twiddles is not None:
                product = legs.view(np.complex128) * stage.twiddles  # C_MUL, rounded back from Q15
                legs = product.view(np.float64)
                legs += 0.5
                np.floor(legs, out=legs)
            rows = legs.reshape(-1, width)
            if not stage.next_fixdiv:
                values = _wrap16_float((rows @ stage.butterfly).reshape(frames, -1))
                continue
            values = (rows @ stage.butterfly_scaled).reshape(frames, -1)
            scaled = True
            if values.size and np.abs(values).max() > KISS_SAMP_MAX * stage.next_fixdiv:
                # A sum left the int16 range (near full-scale input only): store it into an
                # int16 as the C does, then scale.
                values = _wrap16_float((rows @ stage.butterfly).reshape(frames, -1))
                values *= stage.next_fixdiv
        both = values.take(self._split_gather, axis=1).reshape(frames, self._half, 4)
        both *= self._conjugate  # fpnk = conj(Z[n - k]), stored in an int16
        both[both == 32768] = -32768
        both *= (KISS_SAMP_MAX // 2) / 32768.0  # C_FIXDIV(.., 2)
        both += 0.5
        np.floor(both, out=both)
        # f1, f2: int16 stores that cannot overflow (C_FIXDIV by 2 maps int16 into
        # -16384..16383, so f1 is in -32768..32766 and f2 in -32767..32767).
        f = both @ self._sum_difference
        f2 = f[..., 2:]
        tw = (f2.view(np.complex128) * self._super_twiddles).view(np.float64)  # C_MUL by the super twiddles
        tw += 0.5
        np.floor(tw, out=tw)
        tw = _wrap16_float(tw)
        out = np.concatenate((f[..., :2], tw), axis=-1) @ self._halves
        out *= 0.5  # HALF_OF: an arithmetic shift, so floor
        np.floor(out, out=out)
        return out


def _wrap16_float(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Integer-valued floats stored into an int16 as C does (rare: only near full scale)."""
    if values.size and np.abs(values).max() > 32767:
        return (values + 32768) % 65536 - 32768
    return values


def _fixdiv_factor(radix: int) -> float:
    """C_FIXDIV's factor: (32767 // radix) / 32768."""
    return (KISS_SAMP_MAX // radix) / 32768.0


def _fixdiv(values: I64, divisor: int) -> I64:
    """C_FIXDIV: multiply by (32767 // divisor) in Q15, rounded."""
    return _sround(values * (KISS_SAMP_MAX // divisor))


# --------------------------------------------------------------------------------------
# Tables fixed by the parameters (the *_util.c PopulateState functions).


def _freq_to_mel(freq: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """FreqToMel(float): computed in double, returned as float."""
    hz = np.asarray(freq, dtype=np.float32).astype(np.float64)
    return (1127.0 * np.log1p(hz / 700.0)).astype(np.float32)


def _window_coefficients(size: int) -> I64:
    arg = np.float32(np.pi * 2.0 / float(np.float32(size)))
    i = np.arange(size, dtype=np.float64)
    value = (0.5 - 0.5 * np.cos(np.float64(arg) * (i + 0.5))).astype(np.float32)
    return np.floor(value.astype(np.float64) * (1 << WINDOW_BITS) + 0.5).astype(np.int64)


@dataclass(frozen=True)
class _Filterbank:
    start_index: int
    end_index: int
    #: (end_index - start_index, channels) float64: weight of each energy bin in each
    #: channel (work[c + 1]: the channel's rising weights plus the previous one's falling
    #: "unweights"). Products and sums stay below 2**53, so a float matmul is exact.
    matrix: npt.NDArray[np.float64]


def _filterbank(
    channels: int, low_hz: float, high_hz: float, sample_rate_hz: int, spectrum_size: int
) -> _Filterbank:
    f32 = np.float32
    bands = channels + 1
    mel_low = _freq_to_mel(low_hz)[()]
    mel_high = _freq_to_mel(high_hz)[()]
    mel_spacing = f32(f32(mel_high - mel_low) / f32(bands))
    centers = [f32(mel_low + f32(mel_spacing * f32(i + 1))) for i in range(bands)]
    hz_per_bin = f32(0.5 * sample_rate_hz / float(f32(f32(spectrum_size) - f32(1))))
    start_index = int(1.5 + float(f32(f32(low_hz) / hz_per_bin)))

    def mel_of_bin(index: int) -> np.float32:
        return f32(_freq_to_mel(f32(f32(index) * hz_per_bin))[()])

    weights: dict[tuple[int, int], int] = {}  # (bin, work index) -> weight
    end_index = 0
    band_start = start_index
    for band in range(bands):
        index = band_start
        while mel_of_bin(index) <= centers[band]:
            index += 1
        denominator = f32(centers[band] - (mel_low if band == 0 else centers[band - 1]))
        for b in range(band_start, index):
            weight = f32(f32(centers[band] - mel_of_bin(b)) / denominator)
            w = math.floor(float(f32(weight * f32(1 << FILTERBANK_BITS))) + 0.5)
            u = math.floor((1.0 - float(weight)) * (1 << FILTERBANK_BITS) + 0.5)
            weights[(b, band)] = weights.get((b, band), 0) + w
            weights[(b, band + 1)] = weights.get((b, band + 1), 0) + u
        end_index = max(end_index, index)
        band_start = index
    if end_index >= spectrum_size:
        raise MicroConfigError(
            f"the filterbank reaches FFT bin {end_index}, above the spectrum's {spectrum_size} bins"
        )
    matrix = np.zeros((end_index - start_index, channels), np.float64)
    for (b, work), w in weights.items():
        # work[0] (band 0's rising half) and work[channels + 1] are never output.
        if 1 <= work <= channels:
            matrix[b - start_index, work - 1] += w
    return _Filterbank(start_index, end_index, matrix)


def _pcan_gain(
    x: npt.NDArray[np.uint64], input_bits: int, gain_bits: int, offset: float, strength: float
) -> I64:
    """PcanGainLookupFunction, in float32 as the C does."""
    f32 = np.float32
    x_float = (x.astype(np.float32) / f32(2.0**input_bits)).astype(np.float32)
    with np.errstate(over="ignore"):
        gain = f32(2.0**gain_bits) * np.power(x_float + f32(offset), -f32(strength))
    gain = gain.astype(np.float32)
    return np.where(gain > 0x7FFF, 0x7FFF, np.trunc(gain + f32(0.5))).astype(np.int64)


def _wide_dynamic_lut(input_bits: int, gain_bits: int, offset: float, strength: float) -> I64:
    """PcanGainControlPopulateState's gain_lut (kWideDynamicFunctionLUTSize entries)."""
    lut = np.zeros(4 * WIDE_DYNAMIC_FUNCTION_BITS - 3, np.int64)
    lut[0:2] = _pcan_gain(np.array([0, 1], np.uint64), input_bits, gain_bits, offset, strength)
    for interval in range(2, WIDE_DYNAMIC_FUNCTION_BITS + 1):
        x0 = 1 << (interval - 1)
        x1 = x0 + (x0 >> 1)
        x2 = x0 + (x0 - 1) if interval == WIDE_DYNAMIC_FUNCTION_BITS else 2 * x0
        y0, y1, y2 = _pcan_gain(np.array([x0, x1, x2], np.uint64), input_bits, gain_bits, offset, strength)
        diff1, diff2 = int(y1 - y0), int(y2 - y0)
        a1 = 4 * diff1 - diff2
        a2 = diff2 - a1
        base = 4 * interval - 6
        lut[base : base + 3] = _wrap16(np.array([y0, a1, a2], np.int64))
    return lut


#: 15 - MostSignificantBit32(max_abs) for every int16 max_abs (negative: the C's wrapped
#: abs(-32768), which never raises the maximum, indexes from the end and is never used).
_INPUT_SHIFT = (15 - np.frexp(np.arange(1 << 15, dtype=np.float64))[1]).astype(np.int32)


def _wrap32(values: I64) -> I64:
    return values.astype(np.int32).astype(np.int64)


def _wide_dynamic_function(x: I64, lut: I64) -> I64:
    """WideDynamicFunction(x, lut) for uint32 x (vectorised)."""
    interval = most_significant_bit(x)
    base = np.clip(4 * interval - 6, 0, len(lut) - 3)
    up = np.left_shift(x, np.clip(11 - interval, 0, None))
    down = np.right_shift(x, np.clip(interval - 11, 0, None))
    frac = np.where(interval < 11, up, down) & 0x3FF
    result = _wrap32((lut[base + 2] * frac) >> 5)
    result = _wrap32(result + lut[base + 1] * 32)
    result = _wrap32(result * frac)
    result = (result + (1 << 14)) >> 15
    result = _wrap16(result + lut[base])
    small = x <= 2
    return np.where(small, lut[np.minimum(x, 2)], result)


def _log_scale(values: I64, correction_bits: int, scale_shift: int) -> I64:
    """LogScaleApply with logging on: uint32 values -> uint16 outputs (vectorised)."""
    shifted = values << max(correction_bits, 0) & UINT32_MASK
    values = shifted >> max(-correction_bits, 0)
    out = np.zeros(values.shape, np.int64)
    big = values > 1
    x = values[big]
    integer = most_significant_bit(x) - 1
    frac = x - (np.int64(1) << integer)
    frac = np.where(
        integer < LOG_SCALE_LOG2,
        frac << np.clip(LOG_SCALE_LOG2 - integer, 0, None),
        frac >> np.clip(integer - LOG_SCALE_LOG2, 0, None),
    )
    frac = _wrap32(frac)
    base_seg = frac >> (LOG_SCALE_LOG2 - LOG_SEGMENTS_LOG2)
    seg_unit = (1 << LOG_SCALE_LOG2) >> LOG_SEGMENTS_LOG2
    c0 = _LOG_LUT[base_seg]
    c1 = _LOG_LUT[base_seg + 1]
    rel_pos = _wrap32((c1 - c0) * (frac - seg_unit * base_seg)) >> LOG_SCALE_LOG2
    fraction = (frac + c0 + rel_pos) & UINT32_MASK
    log2 = ((integer << LOG_SCALE_LOG2) + fraction) & UINT32_MASK
    rounding = (1 << LOG_SCALE_LOG2) // 2
    loge = ((LOG_COEFF * log2 + rounding) >> LOG_SCALE_LOG2) & UINT32_MASK
    scaled = ((((loge << scale_shift) & UINT32_MASK) + rounding) & UINT32_MASK) >> LOG_SCALE_LOG2
    out[big] = scaled
    return np.minimum(out, UINT16_MAX)


def _pcan_shrink(snr: I64) -> I64:
    quadratic = (snr * snr) >> (2 + 2 * PCAN_SNR_BITS - PCAN_OUTPUT_BITS)
    linear = (snr >> (PCAN_SNR_BITS - PCAN_OUTPUT_BITS)) - (1 << PCAN_OUTPUT_BITS)
    return np.where(snr < (2 << PCAN_SNR_BITS), quadratic, linear & UINT32_MASK)


# --------------------------------------------------------------------------------------


class MicroTables:
    """Everything the parameters fix, computed once (FrontendPopulateState).

    ``window_samples`` and ``step_samples`` are the op's ``window_size * rate // 1000``
    and ``window_step * rate // 1000``.
    """

    def __init__(
        self, params: MicroParams, sample_rate_hz: int, window_samples: int, step_samples: int
    ) -> None:
        if step_samples > window_samples:
            raise MicroConfigError(
                f"a step of {step_samples} samples is longer than the {window_samples}-sample window "
                "(the C library's window buffer cannot skip samples)"
            )
        self.params = params
        self.channels = params.channel_count
        self.window_samples = window_samples
        self.step_samples = step_samples
        self.window = _window_coefficients(window_samples).astype(np.int32)
        fft_size = 1
        while fft_size < window_samples:
            fft_size <<= 1
        self.fft = KissFftr(fft_size)
        self.fft_size = fft_size
        self.filterbank_tables = _filterbank(
            params.channel_count, params.low_freq_hz, params.high_freq_hz, sample_rate_hz, fft_size // 2 + 1
        )
        fb = self.filterbank_tables
        by_bin = np.zeros((fft_size // 2 + 1, self.channels), np.float64)
        by_bin[fb.start_index : fb.end_index] = fb.matrix
        # Rows in the order the FFT returns its bins and parts, so that the squared parts
        # times this matrix are the filterbank's energy sums: bin n/2 comes twice, and its
        # first copy (before kiss_fftr overwrites it) gets no weight.
        self._fft_matrix = by_bin[self.fft.bins]
        self._fft_matrix[len(self.fft.bins) - 4 : len(self.fft.bins) - 2] = 0
        # NoiseReductionPopulateState: float config * 2**14, truncated into uint16.
        scale = np.float32(1 << NOISE_REDUCTION_BITS)
        self.smoothing_bits = params.smoothing_bits
        even = int(np.float32(params.even_smoothing) * scale)
        odd = int(np.float32(params.odd_smoothing) * scale)
        self.min_signal_remaining = int(np.float32(params.min_signal_remaining) * scale)
        smoothing = np.where(np.arange(self.channels) % 2 == 0, even, odd).astype(np.int64)
        self.smoothing = smoothing
        self.one_minus_smoothing = (1 << NOISE_REDUCTION_BITS) - smoothing
        self.correction_bits = int(fft_size).bit_length() - 1 - FILTERBANK_BITS // 2
        self.pcan = params.pcan_gain_control
        self.log = params.log_scale
        self.scale_shift = params.scale_shift
        self.snr_shift = params.gain_bits - self.correction_bits - PCAN_SNR_BITS
        if self.pcan:
            if self.snr_shift < 0:
                raise MicroConfigError(
                    f"gain_bits {params.gain_bits} is too small for a {fft_size}-point FFT "
                    f"(needs at least {self.correction_bits + PCAN_SNR_BITS})"
                )
            input_bits = self.smoothing_bits - self.correction_bits
            self.wide_lut = _wide_dynamic_lut(
                input_bits, params.gain_bits, params.pcan_offset, params.pcan_strength
            )
            self.gain_table = self._gain_table()
            if (self.gain_table < 0).any():
                raise MicroConfigError("the PCAN parameters give a negative gain")
        self.output_scale = np.float32(params.output_scale)
        #: The feature (the op's uint16 output times output_scale, in float32) for each value
        #: entering PCAN's shrink below _POST_LUT_SIZE: shrink, log and scale in one look-up.
        self.feature_table = np.multiply(
            self._post(np.arange(_POST_LUT_SIZE, dtype=np.int64)), self.output_scale, dtype=np.float32
        )

    # Stateless per frame ------------------------------------------------------------

    def filterbank(self, frames: npt.NDArray[np.int16]) -> I64:
        """(n, window_samples) int16 frames -> (n, channels) filterbank values (uint32 range),
        after the square root and the scale-down by the frame's input shift."""
        windowed = (frames * self.window) >> WINDOW_BITS  # int32 products, stored as int16
        windowed = windowed.astype(np.int16)
        max_abs = np.abs(windowed).max(axis=1, initial=0)  # abs(-32768) stays negative, as in C
        shift = _INPUT_SHIFT[max_abs][:, None]
        fft_in = np.zeros((len(frames), self.fft_size), np.int16)
        np.left_shift(windowed, shift, out=fft_in[:, : self.window_samples], dtype=np.int32, casting="unsafe")
        spectrum = self.fft(fft_in)
        spectrum *= spectrum
        # (Both parts at -32768, an energy of 2**31, would turn negative in the C's int32;
        # not reachable through HALF_OF's sums in practice, and not emulated.)
        work = spectrum.reshape(len(frames), -1) @ self._fft_matrix
        scaled: I64 = _sqrt_round(work).astype(np.int64) >> shift
        return scaled

    # Stateful: noise reduction, then PCAN and log -------------------------------------

    def _gain_table(self) -> I64:
        """WideDynamicFunction for every (msb, top 10 bits) of a uint32: indexed by
        :func:`_gain_key`, so a look-up replaces the piecewise quadratic per value."""
        index = np.arange(33 * 1024, dtype=np.int64)
        interval, frac = index // 1024, index % 1024
        x = np.where(
            interval >= 11,
            (1024 + frac) << np.clip(interval - 11, 0, None),
            (1024 + frac) >> np.clip(11 - interval, 0, None),
        )
        x[interval == 0] = 0  # only index 0 (an estimate of 0) is reachable there
        return _wide_dynamic_function(x, self.wide_lut)

    def _post(self, values: I64) -> I64:
        """What follows the gain multiply: PCAN's shrink (if on) and the log (if on)."""
        if self.pcan:
            values = _pcan_shrink(values)
        if self.log:
            return _log_scale(values, self.correction_bits, self.scale_shift)
        return np.minimum(values, UINT16_MAX)


#: An integer x times this, seen as float64 bits >> 42, is msb(x) * 1024 + the 10 bits after
#: the leading one (0 for 0): exact for x < 2**53, and never subnormal.
_KEY_SCALE = 2.0**-1022


def _gain_key(estimate: I64) -> npt.NDArray[np.int64]:
    """Index into MicroTables.gain_table for each estimate."""
    scaled = np.multiply(estimate, _KEY_SCALE, dtype=np.float64)
    key = scaled.view(np.int64)
    key >>= 42
    return key


def _sqrt_round(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """FilterbankSqrt's Sqrt64 on integer-valued floats: the integer square root rounded to
    nearest, as the C computes it (its 32-bit shortcut never rounds 65535 up)."""
    root = np.sqrt(values)
    np.floor(root, out=root)
    if values.size and values.max() >= 2.0**52:
        # Above 2**52 the float square root may land on the next integer: correct it (the
        # filterbank sums stay far below this at the usual sizes).
        root -= root * root > values
        root += (root + 1) * (root + 1) <= values
    up = values - root * root > root
    if (root == 0xFFFF).any():
        up &= ~((values < 2.0**32) & (root == 0xFFFF))
    rounded: npt.NDArray[np.float64] = root + up
    return rounded


class NoiseState:
    """Noise-reduction estimates for ``rows`` independent front ends (rows, channels).

    :meth:`run` advances every row through frames of filterbank values (the same frames for
    all rows) and returns each row's outputs; a row can be started afresh at any frame (a
    front end's state after FrontendReset is all zeros).
    """

    def __init__(self, tables: MicroTables, rows: int) -> None:
        self.tables = tables
        self.estimate = np.zeros((rows, tables.channels), np.int64)

    def reset_rows(self, rows: slice | npt.NDArray[np.intp] | int) -> None:
        self.estimate[rows] = 0

    def run(self, signal: I64, fresh: dict[int, int] | None = None) -> npt.NDArray[np.float32]:
        """``signal``: (frames, channels) filterbank values. Returns (frames, rows, channels)
        float32 features (the op's uint16 output times ``output_scale``) and leaves every
        row's estimates after the last frame.
        ``fresh`` maps a frame's index in ``signal`` to a row that starts afresh at it.

        Only the estimate is a recurrence, three in-place numpy operations over all rows per
        frame; everything that follows it (the noise subtraction, PCAN's gain and the log) is
        a function of each frame's estimate and signal, computed once for all frames and rows
        together, so the number of numpy calls barely grows with the frames in one call.
        """
        t = self.tables
        frames, rows = len(signal), len(self.estimate)
        scaled_up = (signal << t.smoothing_bits) & UINT32_MASK
        drive = scaled_up * t.smoothing
        estimates = np.empty((frames, rows, t.channels), np.int64)
        previous = self.estimate
        for i in range(frames):
            estimate = estimates[i]
            np.multiply(previous, t.one_minus_smoothing, out=estimate)
            estimate += drive[i]
            estimate >>= NOISE_REDUCTION_BITS
            if fresh is not None and i in fresh:
                # From an estimate of 0: (0 * (1 - smoothing) + drive) >> bits. Set after the
                # step, so the row's estimate of the frame before (the window that held the
                # row then may still need it) is left as it was.
                estimate[fresh[i]] = drive[i] >> NOISE_REDUCTION_BITS
            previous = estimate
        if frames:
            self.estimate[...] = previous
        floor = (signal * t.min_signal_remaining) >> NOISE_REDUCTION_BITS
        # (scaled_up - min(estimate, scaled_up)) >> bits, floored: a negative difference
        # shifts to a negative number, which the floor (>= 0) replaces, as the C's clamp does.
        out = np.subtract(scaled_up[:, None, :], estimates)
        out >>= t.smoothing_bits
        np.maximum(out, floor[:, None, :], out=out)
        if t.pcan:
            # Gain table index: msb and the next 10 bits, read off the float64 exponent and
            # mantissa of estimate * 2**-1022 (see _KEY_SCALE). Into the estimates' own
            # memory: they are not needed after this.
            key = np.multiply(estimates, _KEY_SCALE).view(np.int64)
            key >>= 42
            out *= np.take(t.gain_table, key, out=estimates)
            out >>= t.snr_shift  # (the C's uint32 wrap is applied where it can matter: below)
        return _feature_lookup(t, out, np.empty(out.shape, np.float32))


def _feature_lookup(t: MicroTables, values: I64, out: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """PCAN's shrink, the log and the output scale for each value: one look-up, except above
    the table (loud frames far above the noise estimate), where the C's arithmetic is redone
    for those."""
    table = t.feature_table
    if values.size and values.max() >= len(table):
        big = values >= len(table)
        np.take(table, np.where(big, 0, values), out=out)
        out[big] = np.multiply(t._post(values[big] & UINT32_MASK), t.output_scale, dtype=np.float32)
        return out
    return np.take(table, values, out=out)
