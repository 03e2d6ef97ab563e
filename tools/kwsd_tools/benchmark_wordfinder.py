#!/usr/bin/env python3
"""How well the word finder (:mod:`kwsd.wordfinder`) finds real people's words, in one run.

    python tools/benchmark_wordfinder.py --real_dir ../shared/realspeech

The finder serves two jobs, and both are measured on real speech, a Speech Commands-style
folder (``<word>/<speaker>_nohash_<n>.wav`` or ``.flac``, 16 kHz after conversion) with room
noise in ``_background_noise_/``:

1. ``kwsd record``: each clip (1 s, one word, as its speaker said it) is put at a random
   place in a 2 s take of room noise at the clip's own noise floor (its 10th-percentile 10 ms
   RMS), and :func:`kwsd.record.cut_word` cuts a 1 s clip from the take. Figures: the takes
   accepted, and of those the share whose clip keeps at least 95% (99%) of the original
   clip's energy (the word whole), and why the others were refused.
2. ``tools/slice.py --words``: each speaker's clips (speakers with at least 5) in one
   recording, 250-1000 ms of room noise between them, and :func:`kwsd.wordfinder.find_words`
   over it. Figures: the clips a word was found in (its energy centroid inside the clip), and
   the extra cuts (a centroid in a gap, or a second one in one clip).

Each for every ``--below_peak_db`` (``inf`` is the finder without the trim), so the settings
compare in one run on the same takes. The figures are a report: exit 0 whatever they are; 2
a bad command line; 66 ``--real_dir`` missing or without clips; 69 sox (which decodes the
clips) missing. Nothing is written: the clips' licence travels with the folder.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from kwsd.blas import use_one_blas_thread
from kwsd.dataset_layout import BACKGROUND_NOISE_DIR, speaker_of
from kwsd.record import cut_word
from kwsd.wordfinder import WordSettings, find_words

log = logging.getLogger("benchmark_wordfinder")

Int16Array = npt.NDArray[np.int16]

RATE_HZ: Final = 16000
CLIP_SAMPLES: Final = RATE_HZ
TAKE_SAMPLES: Final = 2 * RATE_HZ
MIN_CLIPS_PER_SPEAKER: Final = 5
EXIT_NO_INPUT: Final = 66
EXIT_UNAVAILABLE: Final = 69
_AUDIO_SUFFIXES: Final = (".wav", ".flac")


@dataclass(frozen=True)
class RealSet:
    clips: Int16Array  # (n, CLIP_SAMPLES)
    speakers: tuple[str, ...]
    noise: npt.NDArray[np.float64]


def decode(path: Path) -> Int16Array:
    """16 kHz mono int16 samples of any file sox reads."""
    done = subprocess.run(
        ["sox", str(path), "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(RATE_HZ), "-"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(done.stdout, "<i2").astype(np.int16)


def read_real_set(folder: Path) -> RealSet:
    files = sorted(
        p
        for p in folder.glob("*/*")
        if p.suffix.lower() in _AUDIO_SUFFIXES and p.parent.name != BACKGROUND_NOISE_DIR
    )
    noise_files = sorted(
        p for p in (folder / BACKGROUND_NOISE_DIR).glob("*") if p.suffix.lower() in _AUDIO_SUFFIXES
    )
    clips = []
    for path in files:
        samples = decode(path)[:CLIP_SAMPLES]
        clips.append(np.pad(samples, (0, CLIP_SAMPLES - len(samples))))
    noise = (
        np.concatenate([decode(p) for p in noise_files]).astype(np.float64) if noise_files else np.zeros(0)
    )
    return RealSet(np.stack(clips), tuple(speaker_of(p.name) for p in files), noise)


def floor_rms(samples: Int16Array) -> float:
    """The 10th-percentile RMS of 10 ms frames: the clip's own room level."""
    frames = samples[: len(samples) // 160 * 160].astype(np.float64).reshape(-1, 160)
    return float(np.percentile(np.sqrt((frames**2).mean(axis=1)), 10))


def room(real: RealSet, samples: int, rms: float, rng: np.random.Generator) -> Int16Array:
    """``samples`` of the real set's noise at ``rms`` (white noise where it has none)."""
    if len(real.noise) > samples:
        at = int(rng.integers(0, len(real.noise) - samples))
        part = real.noise[at : at + samples]
    else:
        part = rng.normal(0.0, 1.0, samples)
    part = part / max(float(np.sqrt(np.mean(part**2))), 1e-9) * max(rms, 1.0)
    return np.clip(np.rint(part), -32768, 32767).astype(np.int16)


def clipped(samples: Int16Array) -> bool:
    return int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= 32767)) >= 3


def record_task(real: RealSet, settings: dict[str, WordSettings], seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    outcomes: dict[str, collections.Counter[str]] = {name: collections.Counter() for name in settings}
    kept: dict[str, list[float]] = {name: [] for name in settings}
    takes = 0
    for clip in real.clips:
        if clipped(clip):
            continue  # refused as clipped by any setting: says nothing about finding words
        takes += 1
        offset = int(rng.integers(CLIP_SAMPLES // 10, TAKE_SAMPLES - CLIP_SAMPLES - CLIP_SAMPLES // 10 + 1))
        take = room(real, TAKE_SAMPLES, floor_rms(clip), rng)
        take[offset : offset + CLIP_SAMPLES] = clip
        energy = clip.astype(np.float64) ** 2
        windows = np.lib.stride_tricks.sliding_window_view(take, 64)
        for name, word_settings in settings.items():
            result = cut_word(take, RATE_HZ, CLIP_SAMPLES, word_settings)
            if result.clip is None:
                outcomes[name][(result.reason or "?").split(" (")[0].split(":")[0]] += 1
                continue
            outcomes[name]["accepted"] += 1
            start = int(np.flatnonzero((windows == result.clip[:64]).all(axis=1))[0])
            lo, hi = max(start, offset), min(start + CLIP_SAMPLES, offset + CLIP_SAMPLES)
            kept[name].append(float(energy[lo - offset : hi - offset].sum() / max(energy.sum(), 1.0)))
    figures = {}
    for name in settings:
        share = np.array(kept[name]) if kept[name] else np.zeros(1)
        refused = {k: v for k, v in outcomes[name].items() if k != "accepted"}
        figures[name] = {
            "takes": takes,
            "accepted": outcomes[name]["accepted"] / max(takes, 1),
            "kept_95": float(np.mean(share >= 0.95)),
            "kept_99": float(np.mean(share >= 0.99)),
            **{f"refused: {k}": v / max(takes, 1) for k, v in sorted(refused.items())},
        }
    return figures


def slicer_task(real: RealSet, settings: dict[str, WordSettings], seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[int]] = collections.defaultdict(list)
    for index, speaker in enumerate(real.speakers):
        if not clipped(real.clips[index]):
            by_speaker[speaker].append(index)
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    for indices in by_speaker.values():
        if len(indices) < MIN_CLIPS_PER_SPEAKER:
            continue
        level = float(np.median([floor_rms(real.clips[i]) for i in indices]))
        parts, spans, position = [], [], 0
        for index in indices:
            gap = int(rng.integers(RATE_HZ // 4, RATE_HZ + 1))
            parts += [room(real, gap, level, rng), real.clips[index]]
            spans.append((position + gap, position + gap + CLIP_SAMPLES))
            position += gap + CLIP_SAMPLES
        parts.append(room(real, RATE_HZ // 2, level, rng))
        recording = np.concatenate(parts)
        for name, word_settings in settings.items():
            found: set[int] = set()
            for word in find_words(recording, RATE_HZ, word_settings).words:
                inside = [j for j, (a, b) in enumerate(spans) if a <= word.centre_sample < b]
                if inside and inside[0] not in found:
                    found.add(inside[0])
                else:
                    totals[name, "extra"] += 1
            totals[name, "found"] += len(found)
            totals[name, "clips"] += len(spans)
    return {
        name: {
            "clips": totals[name, "clips"],
            "found": totals[name, "found"] / max(totals[name, "clips"], 1),
            "extra_cuts": totals[name, "extra"],
        }
        for name in settings
    }


def _below_peak_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dB values separated by commas, got {text!r}") from None
    if not values or any(math.isnan(v) or v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive dB values (or inf), got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark_wordfinder", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--real_dir", type=Path, required=True, help="Speech Commands-style folder of real clips"
    )
    parser.add_argument(
        "--below_peak_db",
        type=_below_peak_list,
        default=[math.inf, 35.0, WordSettings.below_peak_db, 25.0],
        help="finder settings compared (default: inf,35,30,25; the shipped one is "
        f"{WordSettings.below_peak_db:g})",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if shutil.which("sox") is None:
        print("benchmark_wordfinder: error: sox is not installed (apt-get install sox)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not args.real_dir.is_dir() or not any(
        p.suffix.lower() in _AUDIO_SUFFIXES
        for p in args.real_dir.glob("*/*")
        if p.parent.name != BACKGROUND_NOISE_DIR
    ):
        print(
            f"benchmark_wordfinder: error: --real_dir {args.real_dir}: "
            "no <word>/*.wav or <word>/*.flac clips",
            file=sys.stderr,
        )
        return EXIT_NO_INPUT
    use_one_blas_thread()
    real = read_real_set(args.real_dir)
    settings = {
        f"below_peak_db={b:g}" + (" (shipped)" if b == WordSettings.below_peak_db else ""): WordSettings(
            below_peak_db=b
        )
        for b in args.below_peak_db
    }
    record = record_task(real, settings, args.seed)
    print(f"kwsd record: one real word in a 2 s take of room noise at the clip's own floor ({args.real_dir})")
    for name, f in record.items():
        refused = ", ".join(
            f"{k[len('refused: ') :]} {100 * v:.1f}%" for k, v in f.items() if k.startswith("refused")
        )
        print(
            f"  {name:28s} accepted {100 * f['accepted']:5.1f}% of {f['takes']:.0f} takes; "
            f"clips keeping >=95% of the word {100 * f['kept_95']:5.1f}%, >=99% {100 * f['kept_99']:5.1f}%; "
            f"refused: {refused or 'none'}"
        )
    slicer = slicer_task(real, settings, args.seed + 1)
    print(
        f"slicer --words: each speaker's clips (>= {MIN_CLIPS_PER_SPEAKER}) in a recording, 250-1000 ms gaps"
    )
    for name, f in slicer.items():
        print(
            f"  {name:28s} words found in {100 * f['found']:5.1f}% of {f['clips']:.0f} clips; "
            f"extra or duplicate cuts {f['extra_cuts']:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
