"""Finding single words in a recording by their energy: one finder for ``kwsd record`` and the slicer.

Frame levels are RMS in dB relative to int16 full scale (20 ms frames every 10 ms by
default); the noise floor is the recording's 10th-percentile frame level. A word is a run of
frames above ``floor + threshold - hysteresis`` that reaches ``floor + threshold`` somewhere
(it starts and ends at the lower level), trimmed at each end to the frames within
``below_peak_db`` of the run's loudest (a word in a quiet room otherwise drags its faint
breath and room tail along, and reads as longer than it is); runs closer than ``min_gap_ms``
are one word; words shorter than ``min_word_ms`` or longer than ``max_word_ms`` are dropped
and reported. Each frame stands for the hop at its centre, so a word's start and end are
within about a frame.

Pure: int16 arrays and sample counts in, values out.
"""

from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from kwsd.frontend import INT16_FULL_SCALE

log = logging.getLogger(__name__)

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

#: A level for digital silence (log of zero): below 16-bit's smallest non-zero RMS (about -97 dBFS).
MIN_LEVEL_DB: Final = -120.0
#: Hop blocks summed per call in frame_levels_db (bounds the int64 temporary to ~80 MB).
_BLOCKS_PER_CHUNK: Final = 1 << 16


@dataclass(frozen=True)
class WordSettings:
    """How :func:`find_words` finds words. Frames are ``frame_hops`` hops long."""

    hop_ms: float = 10.0
    frame_hops: int = 2  # 20 ms frames every 10 ms
    floor_percentile: float = 10.0  # the noise floor: this percentile of the frame levels
    threshold_db: float = 15.0  # a word reaches floor + threshold_db ...
    hysteresis_db: float = 6.0  # ... and lasts while above floor + threshold_db - hysteresis_db
    below_peak_db: float = 30.0  # ... trimmed at each end to the frames within this of its loudest
    min_gap_ms: float = 200.0  # runs closer than this are one word
    min_word_ms: float = 100.0  # shorter words are dropped (clicks, knocks)
    max_word_ms: float = 1000.0  # longer words are dropped (they do not fit in a clip)

    def hop_samples(self, sample_rate_hz: int) -> int:
        return max(1, round(sample_rate_hz * self.hop_ms / 1000))


class DropReason(enum.Enum):
    TOO_SHORT = "shorter than --min_word_ms"
    TOO_LONG = "longer than the clip"


@dataclass(frozen=True)
class Segment:
    """A stretch of loud audio: samples ``[start_sample, end_sample)`` of the recording."""

    start_sample: int
    end_sample: int
    centre_sample: int  # the energy centroid
    peak_db: float  # loudest frame, dBFS

    @property
    def length_samples(self) -> int:
        return self.end_sample - self.start_sample


@dataclass(frozen=True)
class WordSearch:
    """What :func:`find_words` found: words in time order, and what it dropped and why."""

    noise_floor_db: float
    loudest_db: float
    words: tuple[Segment, ...]
    dropped: tuple[tuple[Segment, DropReason], ...]


def frame_levels_db(samples: Int16Array, frame_samples: int, hop_samples: int) -> FloatArray:
    """RMS level of each frame in dB relative to int16 full scale (32768 = 0 dB).

    Frame ``i`` covers samples ``[i * hop, i * hop + frame)``; ``frame_samples`` must be a
    whole number of hops. There are ``ceil(len / hop)`` frames (at least one); frames running
    past the end count the missing samples as zeros. Digital silence is ``MIN_LEVEL_DB``.
    """
    if hop_samples <= 0 or frame_samples <= 0 or frame_samples % hop_samples:
        raise ValueError(
            f"frame_samples {frame_samples} must be a positive multiple of hop_samples {hop_samples}"
        )
    hops_per_frame = frame_samples // hop_samples
    count = max(1, math.ceil(len(samples) / hop_samples))
    block_energy = np.zeros(count + hops_per_frame - 1, np.float64)
    whole = len(samples) // hop_samples
    for first in range(0, whole, _BLOCKS_PER_CHUNK):
        last = min(whole, first + _BLOCKS_PER_CHUNK)
        blocks = samples[first * hop_samples : last * hop_samples].reshape(-1, hop_samples).astype(np.int64)
        block_energy[first:last] = np.einsum("ij,ij->i", blocks, blocks)
    if whole * hop_samples < len(samples):
        rest = samples[whole * hop_samples :].astype(np.int64)
        block_energy[whole] = float(np.dot(rest, rest))
    frame_energy = np.convolve(block_energy, np.ones(hops_per_frame), mode="valid")[:count]
    mean_square = frame_energy / (frame_samples * INT16_FULL_SCALE**2)
    with np.errstate(divide="ignore"):
        levels: FloatArray = np.maximum(10.0 * np.log10(mean_square), MIN_LEVEL_DB)
    return levels


def noise_floor_db(levels_db: FloatArray, percentile: float = 10.0) -> float:
    """The noise floor: the ``percentile``-th percentile of the frame levels, in dBFS."""
    if levels_db.size == 0:
        return MIN_LEVEL_DB
    return float(np.percentile(levels_db, percentile))


def energy_centroid(samples: Int16Array, start_sample: int, end_sample: int) -> int:
    """The sample index of the energy centroid of ``samples[start:end]`` (its middle if silent)."""
    segment = samples[start_sample:end_sample].astype(np.float64)
    energy = segment * segment
    total = float(energy.sum())
    if total == 0.0:
        return (start_sample + end_sample) // 2
    return start_sample + round(float(np.dot(np.arange(len(segment)), energy)) / total)


def find_words(samples: Int16Array, sample_rate_hz: int, settings: WordSettings | None = None) -> WordSearch:
    """Single words in a recording, found by frame energy over its own noise floor (see module doc).

    Each frame stands for the hop at its centre, so a word's ``start_sample`` and
    ``end_sample`` are the edges of the hops whose frames were loud (the first and last frame
    of the file stand for their whole span).
    """
    settings = settings or WordSettings()
    hop = settings.hop_samples(sample_rate_hz)
    frame = hop * settings.frame_hops
    n = len(samples)
    levels = frame_levels_db(samples, frame, hop)
    floor = noise_floor_db(levels, settings.floor_percentile)
    on_db = floor + settings.threshold_db
    off_db = on_db - settings.hysteresis_db
    lead = (frame - hop) // 2  # a frame's centre hop starts this far into it

    spans: list[list[int]] = []  # [start_sample, end_sample, first_frame, last_frame]
    for run_first, run_last in _runs(levels > off_db):
        run = levels[run_first : run_last + 1]
        near_peak = np.flatnonzero(run > run.max() - settings.below_peak_db)
        first, last = run_first + int(near_peak[0]), run_first + int(near_peak[-1])
        start = 0 if first == 0 else first * hop + lead
        end = n if last == len(levels) - 1 else min(n, last * hop + lead + hop)
        if spans and start - spans[-1][1] < settings.min_gap_ms * sample_rate_hz / 1000:
            spans[-1][1], spans[-1][3] = end, last
        else:
            spans.append([start, end, first, last])

    words: list[Segment] = []
    dropped: list[tuple[Segment, DropReason]] = []
    for start, end, first, last in spans:
        peak = float(levels[first : last + 1].max())
        if peak <= on_db:
            continue
        segment = Segment(start, end, energy_centroid(samples, start, end), peak)
        length_ms = segment.length_samples * 1000 / sample_rate_hz
        if length_ms < settings.min_word_ms:
            dropped.append((segment, DropReason.TOO_SHORT))
        elif length_ms > settings.max_word_ms:
            dropped.append((segment, DropReason.TOO_LONG))
        else:
            words.append(segment)
    return WordSearch(floor, float(levels.max()), tuple(words), tuple(dropped))


def _runs(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(first, last) indices, inclusive, of each run of True."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]
