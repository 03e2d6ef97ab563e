#!/usr/bin/env python3
"""Synthesise a small Speech Commands-style data set with espeak-ng and sox.

Layout (what ``tensorflow/examples/speech_commands`` and ``tools/train_demo.py`` read)::

    OUT/<word>/<voice>_nohash_<n>.wav     16 kHz mono int16, exactly 1 s, word roughly centred
    OUT/_background_noise_/<kind>.wav     long noise recordings (white, pink, brown, hum)
    OUT/voices.json                       what each synthetic voice is made of

A *voice* is one espeak-ng accent and variant (``en+m3``, ``en-us+klatt2``, ...) at one base
pitch and speed, heard through one "microphone" (a band-pass and sometimes a little reverb). Every
clip of a voice shares the ``<voice>`` part of its file name, so the Speech Commands hash
split (which hashes the name up to ``_nohash_``) keeps a voice inside one partition, as
it keeps a speaker. The repetitions ``<n>`` of a word differ in intonation (statement,
question, exclamation), a little speed and pitch jitter, level and position.

The output depends only on the arguments: every random choice comes from a generator
seeded with ``--seed`` and the clip's own coordinates, sox runs with ``-D`` (no dither),
and the noise is made with numpy. Clip generation runs over ``--jobs`` worker threads
(espeak-ng and sox are separate processes, so threads are enough).

Usage::

    python tools/synth.py --out /tmp/kws_data --voices 120 --seed 1
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

if str(Path(__file__).resolve().parent.parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from kwsd.audio import float_to_int16, write_wav
from kwsd.frontend import INT16_FULL_SCALE

log = logging.getLogger("synth")

SAMPLE_RATE_HZ = 16000
CLIP_SAMPLES = SAMPLE_RATE_HZ  # 1000 ms clips, as in Speech Commands
BACKGROUND_DIR = "_background_noise_"
BACKGROUND_SECONDS = 30
DEFAULT_WORDS = ("yes", "no", "stop", "go")
DEFAULT_UNKNOWN_WORDS = ("up", "down", "left", "right", "on", "off")

#: espeak-ng voice variants that speak English intelligibly (all used as ``en+<variant>``).
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "croak",
    "klatt",
    "klatt2",
    "klatt3",
    "klatt4",
    "klatt6",
    "whisper",
    "whisperf",
    "adam",
    "Andy",
    "belinda",
    "boris",
    "caleb",
    "david",
    "ed",
    "linda",
    "steph",
    "max",
    "paul",
    "rob",
    "robert",
    "travis",
    "victor",
    "zac",
    "quincy",
    "Annie",
    "aunty",
    "grandma",
    "grandpa",
)
#: espeak-ng pitch (0..99, default 50) and speed (words per minute, default 175) ranges.
PITCH_RANGE = (20, 80)
SPEED_RANGE_WPM = (120, 200)
#: A voice's peak level (fraction of full scale), log-uniform: close and distant talkers.
LEVEL_RANGE = (0.1, 0.9)
#: Per-repetition intonation: espeak-ng reads the punctuation.
PUNCTUATION = (".", "?", "!", ",")
#: Words are cut to this much audio so that a centred word always fits in the clip.
MAX_WORD_SAMPLES = int(0.92 * CLIP_SAMPLES)
#: Amplitude (fraction of full scale) under which a sample counts as silence when trimming.
TRIM_THRESHOLD = 0.02


class SynthError(RuntimeError):
    """espeak-ng or sox missing or failing; names the command."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak-ng variant, base pitch and speed, and a 'microphone'."""

    tag: str
    variant: str
    pitch: int
    speed_wpm: int
    highpass_hz: int
    lowpass_hz: int
    reverb_percent: int  # 0 = dry
    level: float  # peak level of the speaker's words, fraction of full scale
    accent: str = "en"  # an espeak-ng English voice: en, en-us, en-029, en-gb-scotland, ...

    def sox_effects(self) -> list[str]:
        effects = ["highpass", str(self.highpass_hz), "lowpass", str(self.lowpass_hz)]
        if self.reverb_percent:
            effects += ["reverb", str(self.reverb_percent), "50", "30"]
        return effects


#: English accents espeak-ng speaks (``--accents``); each is used as ``<accent>+<variant>``.
ACCENTS = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")


def make_voices(count: int, seed: int, accents: Sequence[str] = ("en",)) -> list[Voice]:
    """``count`` distinct voices, a deterministic function of ``seed`` (and ``accents``).

    With the one default accent the voices are exactly those of earlier kwsd versions (the
    demo model's data); with several, each voice also draws its accent.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    voices: list[Voice] = []
    tags: set[str] = set()
    while len(voices) < count:
        # Every variant once, then random ones.
        if len(voices) < len(VARIANTS):
            variant = VARIANTS[len(voices)]
        else:
            variant = VARIANTS[int(rng.integers(len(VARIANTS)))]
        pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        speed = int(rng.integers(SPEED_RANGE_WPM[0], SPEED_RANGE_WPM[1] + 1))
        highpass = int(rng.integers(60, 300))
        lowpass = int(rng.integers(3800, 7600))
        reverb = int(rng.integers(10, 60)) if rng.random() < 0.3 else 0
        level = float(np.exp(rng.uniform(np.log(LEVEL_RANGE[0]), np.log(LEVEL_RANGE[1]))))
        accent = accents[0] if len(accents) == 1 else accents[int(rng.integers(len(accents)))]
        # The tag names the voice; it must not contain "_nohash_" (it never does: no "_").
        tag = f"{variant.lower()}-p{pitch}-s{speed}"
        if accent != "en":
            tag = f"{accent}-{tag}"
        if tag in tags:
            continue
        tags.add(tag)
        voices.append(Voice(tag, variant, pitch, speed, highpass, lowpass, reverb, level, accent))
    return voices


def check_tools() -> None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SynthError(f"{tool}: not found on PATH (apt-get install {tool})")


def espeak_version() -> str:
    """``espeak-ng 1.51`` (the synthesiser's version decides the exact audio)."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
    words = out.stdout.split()
    version = next((w for w in words if w[:1].isdigit()), "unknown")
    return f"espeak-ng {version}"


def speak(voice: Voice, text: str, pitch: int, speed_wpm: int) -> npt.NDArray[np.float64]:
    """espeak-ng -> sox (16 kHz mono, the voice's microphone), as float64 in [-1, 1)."""
    espeak = [
        "espeak-ng",
        "-v",
        f"{voice.accent}+{voice.variant}",
        "-p",
        str(pitch),
        "-s",
        str(speed_wpm),
        "--stdout",
        text,
    ]
    sox = [
        "sox",
        "-D",
        "-V1",
        "-v",
        "0.5",
        "-t",
        "wav",
        "-",
        "-t",
        "raw",
        "-r",
        str(SAMPLE_RATE_HZ),
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        "-",
        *voice.sox_effects(),
        "rate",
        "-h",
        str(SAMPLE_RATE_HZ),
    ]
    # sox reads espeak-ng's 22.05 kHz WAV at half volume (headroom for the filters), applies
    # the voice's "microphone", then resamples with its high-quality "rate" to 16 kHz raw
    # int16; -D turns dither off so the output is repeatable.
    speech = subprocess.run(espeak, capture_output=True, check=False)
    if speech.returncode != 0 or not speech.stdout:
        raise SynthError(f"{' '.join(espeak)}: failed ({speech.stderr.decode(errors='replace').strip()})")
    audio = subprocess.run(sox, input=speech.stdout, capture_output=True, check=False)
    if audio.returncode != 0:
        raise SynthError(f"{' '.join(sox)}: failed ({audio.stderr.decode(errors='replace').strip()})")
    return np.frombuffer(audio.stdout, dtype="<i2") / INT16_FULL_SCALE


def trim(audio: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Cut leading and trailing silence (anything under TRIM_THRESHOLD of the peak)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) >= TRIM_THRESHOLD * peak)
    pad = SAMPLE_RATE_HZ // 100  # keep 10 ms either side so onsets are not clipped
    return audio[max(0, loud[0] - pad) : loud[-1] + 1 + pad]


def render_clip(voice: Voice, word: str, repetition: int, seed: int) -> npt.NDArray[np.int16]:
    """One 1 s int16 clip of ``voice`` saying ``word``; a pure function of its arguments."""
    rng = np.random.default_rng([seed, _stable_id(voice.tag), _stable_id(word), repetition])
    punctuation = PUNCTUATION[repetition % len(PUNCTUATION)]
    pitch = int(np.clip(voice.pitch + rng.integers(-4, 5), 0, 99))
    speed = int(voice.speed_wpm * rng.uniform(0.93, 1.07))
    word_audio = trim(speak(voice, word + punctuation, pitch, speed))[:MAX_WORD_SAMPLES]
    if word_audio.size == 0:
        raise SynthError(f"espeak-ng produced silence for {word!r} with voice {voice.tag}")
    level = voice.level * rng.uniform(0.8, 1.2)
    word_audio = word_audio * (min(level, 0.95) / np.max(np.abs(word_audio)))
    clip = np.zeros(CLIP_SAMPLES)
    centre_start = (CLIP_SAMPLES - word_audio.size) // 2
    jitter = int(rng.integers(-SAMPLE_RATE_HZ // 16, SAMPLE_RATE_HZ // 16 + 1))  # +-62 ms
    start = int(np.clip(centre_start + jitter, 0, CLIP_SAMPLES - word_audio.size))
    clip[start : start + word_audio.size] = word_audio
    # A quiet noise floor, as any real recording has (no digitally silent frames).
    clip += rng.normal(0.0, rng.uniform(1e-4, 6e-4), CLIP_SAMPLES)
    return float_to_int16(clip)


def make_background_noise(seed: int, seconds: int = BACKGROUND_SECONDS) -> dict[str, npt.NDArray[np.int16]]:
    """White, pink, brown noise and a mains hum, seeded; RMS around 0.1 like the originals."""
    rng = np.random.default_rng([seed, 0xB6])
    n = seconds * SAMPLE_RATE_HZ
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE_HZ)
    freqs[0] = freqs[1]

    def shaped(exponent: float, rms: float) -> npt.NDArray[np.float64]:
        spectrum = np.fft.rfft(rng.normal(size=n)) / freqs ** (exponent / 2)
        x = np.fft.irfft(spectrum, n)
        scaled: npt.NDArray[np.float64] = x * (rms / np.sqrt(np.mean(x**2)))
        return scaled

    t = np.arange(n) / SAMPLE_RATE_HZ
    hum = sum(0.08 / k * np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 8))
    hum = hum + shaped(0.0, 0.01)
    return {
        "white_noise": float_to_int16(shaped(0.0, 0.1)),
        "pink_noise": float_to_int16(shaped(1.0, 0.1)),
        "brown_noise": float_to_int16(shaped(2.0, 0.1)),
        "mains_hum": float_to_int16(hum),
    }


def _stable_id(text: str) -> int:
    # Python's hash() is salted per process; this is not.
    return int.from_bytes(text.encode("utf-8")[:32].ljust(32, b"\0"), "little") % (2**63)


def synthesise(
    out: Path,
    words: Sequence[str],
    unknown_words: Sequence[str],
    *,
    voice_count: int,
    repetitions: int,
    seed: int,
    jobs: int = 2,
    accents: Sequence[str] = ("en",),
) -> dict[str, object]:
    """Write the data set under ``out``; returns a summary (also saved as voices.json)."""
    check_tools()
    voices = make_voices(voice_count, seed, accents)
    all_words = list(dict.fromkeys([*words, *unknown_words]))
    tasks = [(voice, word, rep) for voice in voices for word in all_words for rep in range(repetitions)]
    for word in all_words:
        (out / word).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def job(task: tuple[Voice, str, int]) -> None:
        voice, word, rep = task
        write_wav(
            out / word / f"{voice.tag}_nohash_{rep}.wav", render_clip(voice, word, rep, seed), SAMPLE_RATE_HZ
        )

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done, _ in enumerate(pool.map(job, tasks), start=1):
            if done % 500 == 0:
                log.info("synth: %d/%d clips", done, len(tasks))
    (out / BACKGROUND_DIR).mkdir(parents=True, exist_ok=True)
    for name, samples in make_background_noise(seed).items():
        write_wav(out / BACKGROUND_DIR / f"{name}.wav", samples, SAMPLE_RATE_HZ)
    summary: dict[str, object] = {
        "generator": f"tools/synth.py ({espeak_version()} + sox)",
        "seed": seed,
        "words": list(words),
        "unknown_words": list(unknown_words),
        "repetitions": repetitions,
        "clips": len(tasks),
        "voices": [asdict(v) for v in voices],
    }
    (out / "voices.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info(
        "synth: %d clips from %d voices in %.1f s -> %s",
        len(tasks),
        len(voices),
        time.monotonic() - started,
        out,
    )
    return summary


def _word_list(text: str) -> list[str]:
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    for w in words:
        if not w.isalpha():
            raise argparse.ArgumentTypeError(f"expected comma-separated words, got {w!r}")
    return words


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--words", type=_word_list, default=list(DEFAULT_WORDS), help="wanted words (default: %(default)s)"
    )
    parser.add_argument(
        "--unknown-words",
        type=_word_list,
        default=list(DEFAULT_UNKNOWN_WORDS),
        help="other words, for the _unknown_ class (default: %(default)s)",
    )
    parser.add_argument("--voices", type=int, default=120, help="synthetic voices (default 120)")
    parser.add_argument("--repetitions", type=int, default=3, help="clips per voice and word (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng/sox pipelines")
    parser.add_argument(
        "--accents",
        default="en",
        help=f"comma-separated espeak-ng English accents, or 'all' ({', '.join(ACCENTS)}); default en",
    )
    args = parser.parse_args(argv)
    accents = (
        ACCENTS if args.accents == "all" else tuple(a.strip() for a in args.accents.split(",") if a.strip())
    )
    unknown = sorted(set(accents) - set(ACCENTS))
    if unknown or not accents:
        parser.error(
            f"--accents: unknown {', '.join(unknown) or '(none given)'}; "
            f"expected some of {', '.join(ACCENTS)}"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.voices < 1 or args.repetitions < 1:
        parser.error("--voices and --repetitions must be at least 1")
    try:
        synthesise(
            args.out,
            args.words,
            args.unknown_words,
            voice_count=args.voices,
            repetitions=args.repetitions,
            seed=args.seed,
            jobs=args.jobs,
            accents=accents,
        )
    except SynthError as err:
        print(f"synth: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
