"""The audio gate (``audio.gate``): skip the interpreter on windows with nothing in them.

A cheap energy check in front of the classifier, off by default. The audio is cut into
:data:`GATE_FRAME_MS` frames on a grid fixed from the stream's first sample (``rate // 100``
samples each), and each frame's energy is taken in dBFS: ``10 * log10(mean((x / 32768) ** 2))``.

The noise floor follows that energy as a minimum tracker: a frame quieter than the floor
brings it down at once, and otherwise the floor rises by ``floor_rise_db_per_s`` of audio
(linearly in dB), so a one-second word lifts it by a fraction of a dB while a steady loud
noise (a fan switched on) becomes the new floor after ``(level - floor) / floor_rise_db_per_s``
seconds. It never goes below ``floor_min_dbfs``: in digital silence a click of a few bits must
not open the gate. It starts at the first frame's energy.

A frame is *loud* when its energy is more than ``margin_db`` above the floor as it stood
before that frame. The window that ends at sample ``E`` is *open*, and the model runs on it,
when a loud frame ends in ``(E - span - hangover, E]``: ``span`` is the audio the window's
features cover (a word anywhere in the model's clip keeps the gate open, so every window that
holds part of a word is classified exactly as without the gate) and ``hangover_ms`` goes on
after the word has left the clip, so that the smoother's averaging window sees the word's
decline as it would without the gate. Frames after ``E`` are never looked at, so the decision,
like everything in the pipeline, does not depend on the block sizes the audio came in.

A closed window is not classified: the smoother is fed 1.0 for ``_silence_`` and 0 for every
other label, which is why a model without a ``_silence_`` label cannot be gated.

The cost: a word less than ``margin_db`` above the floor is never heard, and a long stretch of
steady sound (a television) raises the floor until only what stands out of it opens the gate.

Pure: int16 samples in, decisions out, no clock. Single-threaded (the pipeline's thread).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

#: Length of one energy frame.
GATE_FRAME_MS = 10
#: Energy of an all-zero frame (log of 0 is not a number).
ZERO_FRAME_DBFS = -120.0

#: Accepted ranges of each setting (inclusive), used by config validation and the class.
MARGIN_DB_RANGE = (1.0, 60.0)
HANGOVER_MS_RANGE = (0, 10_000)
FLOOR_MIN_DBFS_RANGE = (-120.0, -20.0)
FLOOR_RISE_DB_PER_S_RANGE = (0.1, 60.0)


class GateError(ValueError):
    """Gate settings out of range, or a model the gate cannot serve (the message names which)."""


@dataclass(frozen=True)
class GateSettings:
    """``audio.gate``. Defaults were chosen on the demo audio and real speech (README, "Audio gate")."""

    enabled: bool = False
    #: A frame this much above the noise floor is loud.
    margin_db: float = 12.0
    #: Windows stay open this long after the last loud frame has left the clip.
    hangover_ms: int = 250
    #: The floor never goes below this.
    floor_min_dbfs: float = -70.0
    #: How fast the floor climbs towards a louder steady sound.
    floor_rise_db_per_s: float = 3.0

    def __post_init__(self) -> None:
        for name, span in (
            ("margin_db", MARGIN_DB_RANGE),
            ("hangover_ms", HANGOVER_MS_RANGE),
            ("floor_min_dbfs", FLOOR_MIN_DBFS_RANGE),
            ("floor_rise_db_per_s", FLOOR_RISE_DB_PER_S_RANGE),
        ):
            value = getattr(self, name)
            if not span[0] <= value <= span[1]:
                raise GateError(f"{name}: expected {span[0]:g}..{span[1]:g}, got {value!r}")


class EnergyGate:
    """The gate's state over one stream: feed every sample with :meth:`push`, then ask
    :meth:`is_open` for window ends at or before the samples pushed. Asking does not change the
    state, so several models' windows may ask in any order; a window not yet asked about must
    end after the samples pushed before the last push, less a clip (each model classifies every
    window its frames complete after each push)."""

    def __init__(self, settings: GateSettings, *, sample_rate_hz: int, span_samples: int) -> None:
        self.settings = settings
        self.frame_samples = max(1, sample_rate_hz * GATE_FRAME_MS // 1000)
        self._rise_db_per_frame = settings.floor_rise_db_per_s * self.frame_samples / sample_rate_hz
        self._reach_samples = span_samples + settings.hangover_ms * sample_rate_hz // 1000
        self._span_samples = span_samples
        self._partial = np.zeros(0, np.int16)  # the start of the next frame
        self._frames_done = 0
        #: The noise floor in dBFS (None before the first frame).
        self.floor_dbfs: float | None = None
        #: End sample (exclusive, absolute) of each loud frame that may still open a window.
        self._loud_ends: deque[int] = deque()

    def push(self, samples: npt.NDArray[np.int16]) -> None:
        """Take the next samples of the stream (any number)."""
        if len(self._partial):
            samples = np.concatenate((self._partial, samples))
        size = self.frame_samples
        count = len(samples) // size
        if len(samples) != count * size:
            self._partial = samples[count * size :].copy()
        elif len(self._partial):
            self._partial = self._partial[:0]
        if not count:
            return
        # Loud frames no window still to be asked about can reach.
        horizon = self._frames_done * size - self._span_samples - self._reach_samples
        loud = self._loud_ends
        while loud and loud[0] <= horizon:
            loud.popleft()
        # Sums of squares in float64 (exact for int16 frames of up to 2**22 samples); the rest
        # per frame in plain Python, which for the daemon's two frames a block beats numpy's
        # per-call overhead.
        frames = samples[: count * size].reshape(count, size).astype(np.float64)
        sums = np.einsum("ij,ij->i", frames, frames).tolist()
        scale = 1.0 / (size * 32768.0 * 32768.0)
        settings = self.settings
        floor = self.floor_dbfs
        floor_min, margin, rise = settings.floor_min_dbfs, settings.margin_db, self._rise_db_per_frame
        end = self._frames_done * size
        for total in sums:
            end += size
            energy = 10.0 * math.log10(total * scale) if total else ZERO_FRAME_DBFS
            energy = max(energy, ZERO_FRAME_DBFS)
            if floor is None:
                floor = max(energy, floor_min)
            if energy > floor + margin:
                self._loud_ends.append(end)
            floor = max(energy, floor_min) if energy < floor else floor + rise
        self.floor_dbfs = floor
        self._frames_done += count

    def is_open(self, end_sample: int) -> bool:
        """Whether the window that ends at ``end_sample`` (exclusive, absolute) holds a loud frame
        or ends within the hangover after one."""
        loud = self._loud_ends
        first = bisect.bisect_right(loud, end_sample - self._reach_samples)
        return first < len(loud) and loud[first] <= end_sample


def silence_scores(labels: tuple[str, ...] | list[str], silence_label: str) -> npt.NDArray[np.float32]:
    """What a closed window feeds the smoother: 1.0 for ``silence_label``, 0 elsewhere."""
    scores = np.zeros(len(labels), np.float32)
    scores[list(labels).index(silence_label)] = 1.0
    return scores


def describe(settings: GateSettings) -> str:
    """One line for logs: ``gate on (margin 9 dB, hangover 500 ms, ...)``."""
    if not settings.enabled:
        return "gate off"
    return (
        f"gate on (margin {settings.margin_db:g} dB, hangover {settings.hangover_ms} ms, "
        f"floor >= {settings.floor_min_dbfs:g} dBFS rising {settings.floor_rise_db_per_s:g} dB/s)"
    )
