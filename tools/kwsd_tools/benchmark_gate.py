"""Section 7 of tools/benchmark.py: what the audio gate (``audio.gate``) saves, and what it loses.

The mix is what a keyword listener mostly hears: a quiet room, with a word now and then.
``hours`` of room noise (every file of the real set's ``_background_noise_`` folder, end to
end, its steady one-second snippets (:data:`STEADY_SPREAD_DB`) each brought to
:data:`ROOM_NOISE_DBFS`, looped; without the folder, generated
pink-ish noise at that level), and a real spoken word every :data:`WORD_GAP_S` (uniform,
seeded) added on top at the level it was recorded: a keyword clip of a test-partition speaker
of the real set (the bundle's recorded split; every speaker when it records none), else one
of the words of demo.wav. The same audio runs through the pipeline with the gate off and on,
in the same run, and the section prints the interpreter's CPU per audio second both ways and
their ratio, the whole pipeline's, and the words each heard and the detections the gate
lost or gained.

The interpreter's CPU is the pipeline's profiled classifier stage (thread time): the invoke
with its quantising and score reading when a window runs, and the gate's test and the silence
scores when it does not; the gate's own energy tracking is shown apart.
"""

from __future__ import annotations

import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwsd.audio import read_wav
from kwsd.bundle import Bundle, demo_wav_path
from kwsd.detection import DetectionSettings
from kwsd.gate import GateSettings, describe
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.pipeline import Detection, PipelineStats, build_pipeline

#: Overall level of the room noise: a quiet room through a USB microphone at normal gain.
ROOM_NOISE_DBFS = -55.0
#: Snippets of the real noise quieter than this are dropped (scaled up, they would be
#: the clicks of int16 rounding, not noise).
QUIETEST_SNIPPET_DBFS = -90.0
#: A snippet whose 10 ms frames' energy spreads wider than this is an event, not a room.
STEADY_SPREAD_DB = 6.0
#: Gap between the starts of two words, seconds, uniform in this range ("every few minutes");
#: a mix shorter than four gaps spaces its words evenly instead.
WORD_GAP_S = (120.0, 240.0)
#: A word counts as heard when a detection comes within this long after the clip starts.
HEARD_WITHIN_MS = 2500
SEED = 7


@dataclass(frozen=True)
class Word:
    """A word put into the mix: its label (None for a demo.wav word) and where it starts and ends."""

    label: str | None
    start_ms: int
    end_ms: int
    source: str


def _decode(path: Path, rate_hz: int) -> np.ndarray:
    """Any file sox reads, as mono int16 at ``rate_hz`` (the real set is FLAC)."""
    if path.suffix.lower() == ".wav":
        return read_wav(path, rate_hz)
    done = subprocess.run(
        ["sox", str(path), "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(rate_hz), "-"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(done.stdout, "<i2").astype(np.int16)


def _real_words(bundle: Bundle, real_dir: Path) -> tuple[list[tuple[str, Path]], str]:
    """(label, file) of every keyword clip of a test-partition speaker, and how they were chosen."""
    keywords = [label for label in bundle.labels if label not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    files = [
        (label, path)
        for label in keywords
        for path in sorted((real_dir / label).glob("*"))
        if path.suffix.lower() in (".wav", ".flac")
    ]
    split = (bundle.provenance.get("dataset") or {}).get("split")
    if not isinstance(split, dict) or "testing_percentage" not in split:
        return files, "every speaker (the bundle records no split)"
    from kwsd_tools.training.dataset import which_set

    validation, testing = split["validation_percentage"], split["testing_percentage"]
    chosen = [
        (label, path) for label, path in files if which_set(path.name, validation, testing) == "testing"
    ]
    return chosen, f"test-partition speakers of the bundle's split ({testing:g}% testing)"


def _demo_words(rate_hz: int) -> list[np.ndarray]:
    """demo.wav cut at its silences (at least 300 ms under -60 dBFS) into its words."""
    audio = read_wav(demo_wav_path(), rate_hz)
    frame = rate_hz // 100
    count = len(audio) // frame
    power = (audio[: count * frame].reshape(count, frame).astype(np.float64) / 32768.0) ** 2
    loud = 10 * np.log10(power.mean(axis=1) + 1e-12) > -60.0
    words, start, quiet = [], None, 0
    for index, is_loud in enumerate(loud.tolist()):
        if is_loud:
            start = index if start is None else start
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet >= 30:
                end = index - quiet + 1
                words.append(audio[max(0, (start - 10) * frame) : (end + 10) * frame])
                start, quiet = None, 0
    return [word for word in words if len(word) >= rate_hz // 4]


def _room_noise(
    real_dir: Path, rate_hz: int, samples: int, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    noise_files = sorted(
        p for p in (real_dir / "_background_noise_").glob("*") if p.suffix.lower() in (".wav", ".flac")
    )
    if noise_files:
        noise = np.concatenate([_decode(p, rate_hz) for p in noise_files]).astype(np.float64)
        # The real set's noise is one-second snippets at random volumes (Speech Commands' test
        # silence items), 40 dB apart from one second to the next, and some are events (dishes,
        # a person miaowing) that the gate should open for. A quiet room is steady: the steady
        # snippets are kept, each brought to the same level.
        seconds = noise[: len(noise) // rate_hz * rate_hz].reshape(-1, rate_hz) / 32768.0
        rms = np.sqrt(np.mean(seconds**2, axis=1))
        frame = rate_hz // 100
        frames = seconds[:, : 100 * frame].reshape(len(seconds), 100, frame)
        energies = 10 * np.log10(np.mean(frames**2, axis=2) + 1e-30)
        spread = np.percentile(energies, 95, axis=1) - np.percentile(energies, 5, axis=1)
        steady = (spread < STEADY_SPREAD_DB) & (rms > 10 ** (QUIETEST_SNIPPET_DBFS / 20))
        noise = (seconds[steady] / rms[steady, None]).reshape(-1)
        what = (
            f"the {int(steady.sum())} steady one-second snippets of {len(seconds)} in "
            f"{real_dir / '_background_noise_'} (10 ms energy within {STEADY_SPREAD_DB:g} dB, 5th to "
            "95th percentile), each at the same level, looped"
        )
    else:
        white = rng.standard_normal(min(samples, 60 * rate_hz))
        # Pink-ish: white noise through a one-pole low-pass, plus a little of the white.
        pink = np.empty_like(white)
        state = 0.0
        for index, value in enumerate(white.tolist()):
            state = 0.97 * state + value
            pink[index] = state
        noise = pink + 3.0 * white
        what = "generated pink-ish noise looped"
    noise = np.tile(noise, samples // len(noise) + 1)[:samples]
    rms = np.sqrt(np.mean(noise**2))
    return noise * (32768.0 * 10 ** (ROOM_NOISE_DBFS / 20) / rms), what


def make_mix(bundle: Bundle, *, hours: float, real_dir: Path) -> tuple[np.ndarray, list[Word], str]:
    """The quiet-room mix (int16 at the bundle's rate), its words, and a line saying what it is."""
    rate = bundle.frontend.sample_rate_hz
    samples = int(hours * 3600 * rate)
    rng = np.random.default_rng(SEED)
    pick = random.Random(SEED)
    mix, noise_note = _room_noise(real_dir, rate, samples, rng)
    real, how = _real_words(bundle, real_dir) if real_dir.is_dir() else ([], "")
    if real:
        word_note = f"{len(real)} keyword clips of {real_dir}, {how}"
    else:
        demo = _demo_words(rate)
        word_note = f"the {len(demo)} words of demo.wav ({real_dir} has no keyword clips)"
    duration_s = samples / rate
    low, high = WORD_GAP_S
    if duration_s < 4 * low:  # a short mix (a test): four words evenly spaced
        low = high = duration_s / 4
    words: list[Word] = []
    at_s = pick.uniform(low, high) / 2
    while at_s + 2.0 < duration_s:
        if real:
            label, path = pick.choice(real)
            clip, source = _decode(path, rate), f"{label}/{path.name}"
        else:
            label, index = None, pick.randrange(len(demo))
            clip, source = demo[index], f"demo.wav word {index + 1}"
        start = int(at_s * rate)
        clip = clip[: samples - start]
        mix[start : start + len(clip)] += clip
        words.append(Word(label, start * 1000 // rate, (start + len(clip)) * 1000 // rate, source))
        at_s += pick.uniform(low, high)
    audio = np.clip(np.round(mix), -32768, 32767).astype(np.int16)
    return audio, words, f"{noise_note} at {ROOM_NOISE_DBFS:g} dBFS; words: {word_note}"


def _run(
    bundle: Bundle, settings: DetectionSettings, audio: np.ndarray, block: int, gate: GateSettings | None
) -> tuple[list[Detection], PipelineStats]:
    pipeline = build_pipeline(bundle, settings, profile=True, gate=gate)
    detections: list[Detection] = []
    for start in range(0, len(audio), block):
        detections += pipeline.feed(audio[start : start + block])
    return detections, pipeline.stats


def _heard(words: list[Word], detections: list[Detection]) -> list[bool]:
    """For each word, whether a detection of it (of any keyword for a demo.wav word) came in time."""
    heard = []
    for word in words:
        heard.append(
            any(
                word.start_ms <= d.audio_time_ms <= word.start_ms + HEARD_WITHIN_MS
                and (d.label == word.label if word.label else d.label not in (SILENCE_LABEL, UNKNOWN_LABEL))
                for d in detections
            )
        )
    return heard


def gate_cost(
    bundle: Bundle, settings: DetectionSettings, *, hours: float, real_dir: Path, block_ms: int
) -> dict[str, Any]:
    """Section 7, printed; returns its figures."""
    rate = bundle.frontend.sample_rate_hz
    gate = GateSettings(enabled=True)
    audio, words, note = make_mix(bundle, hours=hours, real_dir=real_dir)
    audio_s = len(audio) / rate
    block = rate * block_ms // 1000
    print()
    print(
        f"7. audio gate ({describe(gate)}) over {audio_s / 3600:.2f} h of quiet room with {len(words)} words"
    )
    print(f"   ({note}; blocks of {block_ms} ms)")
    off, off_stats = _run(bundle, settings, audio, block, None)
    on, on_stats = _run(bundle, settings, audio, block, gate)

    def ms_per_s(ns: int) -> float:
        return ns / 1e6 / audio_s

    def events(detections: list[Detection]) -> list[tuple[str, int]]:
        return [(d.label, d.audio_time_ms) for d in detections]

    lost = [e for e in events(off) if e not in events(on)]
    gained = [e for e in events(on) if e not in events(off)]
    heard_off, heard_on = _heard(words, off), _heard(words, on)
    interp_off, interp_on = ms_per_s(off_stats.classifier_ns), ms_per_s(on_stats.classifier_ns)
    ratio = interp_off / interp_on if interp_on else float("inf")
    ran = on_stats.windows - on_stats.gate_skipped
    print(
        f"   interpreter CPU per audio second: gate off {interp_off:.3f} ms, on {interp_on:.3f} ms: "
        f"{ratio:.1f} x less (target >= 5 x) {'OK' if ratio >= 5 else 'UNDER'}; the model ran on "
        f"{ran} of {on_stats.windows} windows ({ran / on_stats.windows:.1%})"
    )
    print(
        f"   whole pipeline: off {ms_per_s(off_stats.total_ns):.3f} ms, "
        f"on {ms_per_s(on_stats.total_ns):.3f} ms "
        f"per audio second (front end {ms_per_s(off_stats.frontend_ns):.3f} / "
        f"{ms_per_s(on_stats.frontend_ns):.3f}, both computing every frame; the gate itself "
        f"{ms_per_s(on_stats.gate_ns):.3f})"
    )
    missed = [
        w.source for w, off_ok, on_ok in zip(words, heard_off, heard_on, strict=True) if off_ok and not on_ok
    ]
    print(
        f"   words heard: gate off {sum(heard_off)} of {len(words)}, on {sum(heard_on)} of {len(words)} "
        f"(lost to the gate: {', '.join(missed) or 'none'}; target none) {'OK' if not missed else 'MISSED'}"
    )
    lost_note = f" {lost[:10]}" if lost else ""
    gained_note = f" {gained[:10]}" if gained else ""
    print(
        f"   detections: off {len(off)}, on {len(on)}; lost {len(lost)}{lost_note}, "
        f"gained {len(gained)}{gained_note}"
    )
    return {
        "audio_s": round(audio_s, 1),
        "words": len(words),
        "interpreter_off_ms": round(interp_off, 4),
        "interpreter_on_ms": round(interp_on, 4),
        "interpreter_ratio": round(ratio, 2),
        "total_off_ms": round(ms_per_s(off_stats.total_ns), 4),
        "total_on_ms": round(ms_per_s(on_stats.total_ns), 4),
        "gate_ms": round(ms_per_s(on_stats.gate_ns), 4),
        "windows": on_stats.windows,
        "windows_skipped": on_stats.gate_skipped,
        "words_heard_off": sum(heard_off),
        "words_heard_on": sum(heard_on),
        "detections_off": len(off),
        "detections_on": len(on),
        "detections_lost": len(lost),
        "detections_gained": len(gained),
    }
