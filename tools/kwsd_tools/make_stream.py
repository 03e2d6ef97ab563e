#!/usr/bin/env python3
"""Make a long test WAV and its ground truth, as TensorFlow's generate_streaming_test_wav does.

From a Speech Commands-style folder (the layout tools/train.py reads), with the reference's
behaviour and defaults:

* the audio is ``--duration_s`` long (600 s); it holds ``floor(duration / (clip + gap))`` words,
  word k in the slot starting at ``k * (clip_duration_ms + word_gap_ms)`` (3000 ms), its clip
  starting uniformly in the first ``word_gap_ms`` (2000 ms) of the slot;
* each word is ``_unknown_`` with probability ``--unknown_percentage`` (30%), else one of the
  wanted words, uniformly; its clip is a random file of that word from the *test partition*,
  split as the trainer splits (:func:`tools.training.dataset.split_files`: validation_list.txt
  and testing_list.txt when there, else the hash of the name before ``_nohash_`` with
  ``--validation_percentage`` and ``--testing_percentage``). Unknown words are drawn from every
  test-partition file of the other folders (the reference draws from the trainer's sample of
  them, 10% of the wanted count; the whole partition gives more variety). Clips are padded or cut
  to the clip length and mixed in at full volume with 500-sample ramps at both ends;
* background noise from ``_background_noise_``: every ``clip_duration_ms`` a 1.5 s segment of a
  random noise file at a random offset, at a volume uniform in [0, ``--background_volume``)
  (0.1), with 250 ms cross-fade ramps. With ``--snr_db`` instead, the noise (segments at volume
  1) is scaled under each word so that the word's clip (its 1 s, ramps included) has that
  signal-to-noise ratio against the noise under it; the gain moves linearly between words;
* ``--background_only``: the same noise and no words, with an empty truth file (for false
  accepts);
* the truth file has one ``label, time_ms`` line per word, the start of its clip in ms with six
  decimals (``yes, 1234.562500``), ``_unknown_`` for other words.

Every random choice comes from one numpy generator seeded with ``--seed``: the same folder and
arguments give the same files. Importable without TensorFlow.

Usage::

    python tools/make_stream.py --data_dir /tmp/kws_data --wanted_words yes,no,stop,go \
        --output_audio_file /tmp/stream.wav          # and /tmp/stream.txt
    python tools/make_stream.py --data_dir /tmp/kws_data --background_only --duration_s 3600 \
        --output_audio_file /tmp/noise.wav
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kwsd.audio import float_to_int16, write_wav
from kwsd.blas import use_one_blas_thread
from kwsd.dataset_layout import BACKGROUND_NOISE_DIR
from kwsd.errors import KwsdError
from kwsd.evaluate import format_truth
from kwsd.frontend import INT16_FULL_SCALE
from kwsd.labels import UNKNOWN_LABEL
from kwsd_tools.training.dataset import (
    DatasetError,
    DatasetSettings,
    read_clip,
    read_samples,
    scan_data_dir,
    split_files,
)

log = logging.getLogger("make_stream")

FloatArray = npt.NDArray[np.float64]

#: The reference's numbers.
DEFAULT_WANTED_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
WORD_RAMP_SAMPLES = 500
BACKGROUND_CROSSOVER_MS = 500


@dataclass(frozen=True)
class StreamSettings:
    sample_rate_hz: int = 16000
    clip_duration_ms: int = 1000
    duration_s: float = 600.0
    word_gap_ms: int = 2000
    unknown_percentage: float = 30.0
    background_volume: float = 0.1
    snr_db: float | None = None
    background_only: bool = False
    #: Labels spoken in this order, slot after slot (repeated), instead of drawn at random.
    sequence: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (self.sample_rate_hz > 0, "sample_rate", "> 0", self.sample_rate_hz),
            (self.clip_duration_ms > 0, "clip_duration_ms", "> 0", self.clip_duration_ms),
            (self.duration_s > 0 and math.isfinite(self.duration_s), "duration_s", "> 0", self.duration_s),
            (self.word_gap_ms > 0, "word_gap_ms", "> 0", self.word_gap_ms),
            (0 <= self.unknown_percentage <= 100, "unknown_percentage", "0..100", self.unknown_percentage),
            (self.background_volume >= 0, "background_volume", ">= 0", self.background_volume),
            (
                self.snr_db is None or math.isfinite(self.snr_db),
                "snr_db",
                "a finite number of dB",
                self.snr_db,
            ),
        ]
        for ok, name, expected, value in checks:
            if not ok:
                raise ValueError(f"--{name}: expected {expected}, got {value}")
        if self.snr_db is not None and self.background_only:
            raise ValueError(
                "--snr_db: needs words to measure against; --background_only uses --background_volume"
            )

    @property
    def total_samples(self) -> int:
        return round(self.duration_s * self.sample_rate_hz)

    @property
    def clip_samples(self) -> int:
        return self.clip_duration_ms * self.sample_rate_hz // 1000


@dataclass(frozen=True)
class Word:
    label: str  # the ground-truth label: a wanted word or _unknown_
    path: str  # the clip, relative to the data folder
    start_sample: int

    def start_ms(self, sample_rate_hz: int) -> float:
        return self.start_sample * 1000 / sample_rate_hz


@dataclass(frozen=True)
class Stream:
    audio: npt.NDArray[np.int16]
    words: list[Word]
    noise_files: list[str]
    settings: StreamSettings

    def truth(self) -> list[tuple[str, float]]:
        return [(w.label, w.start_ms(self.settings.sample_rate_hz)) for w in self.words]


def mix_in(
    track: FloatArray,
    offset: int,
    sample: FloatArray,
    sample_offset: int,
    duration: int,
    *,
    volume: float,
    ramp_in: int,
    ramp_out: int,
) -> None:
    """The reference's mix_in_audio_sample: add ``sample[sample_offset:]`` (at most ``duration``
    samples, cut at the track's end) at ``offset`` times ``volume``, with linear ramps."""
    end = min(offset + duration, len(track), offset + len(sample) - sample_offset)
    count = end - offset
    if count <= 0:
        return
    i = np.arange(count, dtype=np.float64)
    envelope = np.ones(count)
    if ramp_out > 0:
        envelope = np.where(i > duration - ramp_out, (duration - i) / ramp_out, envelope)
    if ramp_in > 0:  # the reference's if/elif: the ramp in wins where both apply
        envelope = np.where(i < ramp_in, i / ramp_in, envelope)
    track[offset:end] += sample[sample_offset : sample_offset + count] * envelope * volume


def background_track(
    noise: dict[str, FloatArray], settings: StreamSettings, rng: np.random.Generator, *, unit_volume: bool
) -> FloatArray:
    """The reference's background: a random segment of a random file every clip duration,
    1.5 s long with 250 ms cross-fades, each at a volume uniform in [0, background_volume)
    (or 1 with ``unit_volume``, to be scaled for an SNR)."""
    total = settings.total_samples
    track = np.zeros(total)
    if not noise:
        return track
    names = sorted(noise)
    rate = settings.sample_rate_hz
    segment = (settings.clip_duration_ms + BACKGROUND_CROSSOVER_MS) * rate // 1000
    stride = settings.clip_samples
    ramp = (BACKGROUND_CROSSOVER_MS // 2) * rate // 1000
    for k in range(math.ceil(total / stride)):
        samples = noise[names[int(rng.integers(len(names)))]]
        offset = int(rng.integers(0, max(1, len(samples) - settings.clip_samples)))
        volume = 1.0 if unit_volume else float(rng.uniform(0, settings.background_volume))
        mix_in(track, k * stride, samples, offset, segment, volume=volume, ramp_in=ramp, ramp_out=ramp)
    return track


def plan_words(
    pools: dict[str, list[str]],
    wanted: Sequence[str],
    settings: StreamSettings,
    rng: np.random.Generator,
) -> list[Word]:
    """The reference's word choices: one per slot, start uniform in the gap, unknown with
    ``unknown_percentage`` (or the labels of ``settings.sequence`` in turn); ``pools``: label (a
    wanted word or _unknown_) -> its files."""
    rate = settings.sample_rate_hz
    stride = (settings.clip_duration_ms + settings.word_gap_ms) * rate // 1000
    gap = settings.word_gap_ms * rate // 1000
    words: list[Word] = []
    for k in range(settings.total_samples // stride):
        start = k * stride + int(rng.integers(gap))
        if settings.sequence:
            label = settings.sequence[k % len(settings.sequence)]
        else:
            unknown = int(rng.integers(100)) < settings.unknown_percentage
            label = UNKNOWN_LABEL if unknown else wanted[int(rng.integers(len(wanted)))]
        pool = pools.get(label, [])
        if not pool:
            if label == UNKNOWN_LABEL:
                raise DatasetError(
                    "the partition used has no files of other words for _unknown_ "
                    "(give --unknown_percentage 0, or add folders of other words)"
                )
            raise DatasetError(f"the partition used has no clips of {label!r}")
        words.append(Word(label, pool[int(rng.integers(len(pool)))], start))
    return words


def make_stream(
    pools: dict[str, list[str]],
    wanted: Sequence[str],
    clip: Callable[[str], FloatArray],
    noise: dict[str, FloatArray],
    settings: StreamSettings,
    *,
    seed: int,
) -> Stream:
    """The stream from word pools (label -> files), a clip reader (file -> float samples of
    exactly one clip) and noise (name -> float samples). Noise draws come first, then the
    words, as in the reference."""
    rng = np.random.default_rng(seed)
    snr = settings.snr_db
    track = background_track(noise, settings, rng, unit_volume=snr is not None)
    if settings.background_only:
        return Stream(float_to_int16(np.clip(track, -1.0, 1.0)), [], sorted(noise), settings)
    words = plan_words(pools, wanted, settings, rng)
    n = settings.clip_samples
    speech = np.zeros_like(track)
    gains: list[tuple[int, float]] = []
    for word in words:
        one = np.zeros(n)
        mix_in(
            one, 0, clip(word.path), 0, n, volume=1.0, ramp_in=WORD_RAMP_SAMPLES, ramp_out=WORD_RAMP_SAMPLES
        )
        end = min(word.start_sample + n, len(speech))
        speech[word.start_sample : end] += one[: end - word.start_sample]
        if snr is not None and noise:
            under = track[word.start_sample : end]
            noise_power = float(np.mean(under**2)) if len(under) else 0.0
            word_power = float(np.mean(one[: end - word.start_sample] ** 2))
            if noise_power <= 0.0:
                raise DatasetError("--snr_db: the background noise is digital silence under a word")
            gain = math.sqrt(word_power / (noise_power * 10 ** (snr / 10))) if word_power > 0 else 0.0
            gains.append((word.start_sample, gain))
            gains.append((end - 1, gain))
    if snr is not None and gains:
        at, value = zip(*gains, strict=True)
        track = track * np.interp(np.arange(len(track)), at, value)
    audio = float_to_int16(np.clip(speech + track, -1.0, 1.0))
    return Stream(audio, words, sorted(noise), settings)


def test_partition_pools(
    data_dir: Path, wanted: Sequence[str], data_settings: DatasetSettings, partition: str = "testing"
) -> tuple[dict[str, list[str]], list[str]]:
    """label -> the partition's files (wanted words by folder, every other folder as _unknown_),
    and the noise file names; split as the trainer splits. ``partition``: ``testing`` (the
    reference's choice), or ``validation`` for a stream to tune detection settings on without
    touching the test speakers."""
    scan = scan_data_dir(data_dir)
    split, rule = split_files(data_dir, data_settings, [rel for _, rel in scan.files])
    log.info("%s: %s", data_dir, rule)
    pools: dict[str, list[str]] = {}
    for label, rel in scan.files:
        if split[rel] != partition:
            continue
        pools.setdefault(label if label in wanted else UNKNOWN_LABEL, []).append(rel)
    return pools, list(scan.noise or [])


def generate(
    data_dir: Path,
    wanted: Sequence[str],
    settings: StreamSettings,
    *,
    seed: int,
    validation_percentage: float = 10.0,
    testing_percentage: float = 10.0,
    partition: str = "testing",
) -> Stream:
    """Read what the stream needs from ``data_dir`` (only the clips it uses) and make it."""
    data_settings = DatasetSettings(
        sample_rate_hz=settings.sample_rate_hz,
        clip_duration_ms=settings.clip_duration_ms,
        wanted_words=tuple(wanted),
        validation_percentage=validation_percentage,
        testing_percentage=testing_percentage,
    )
    pools, noise_names = test_partition_pools(data_dir, wanted, data_settings, partition)
    missing = [w for w in wanted if not pools.get(w)]
    if missing and not settings.background_only:
        raise DatasetError(f"{data_dir}: the {partition} partition has no clips of {', '.join(missing)}")
    noise: dict[str, FloatArray] = {}
    if settings.background_only or settings.background_volume > 0 or settings.snr_db is not None:
        for name in noise_names:
            samples, _ = read_samples(data_dir / BACKGROUND_NOISE_DIR / name, settings.sample_rate_hz)
            if len(samples) < settings.clip_samples:
                raise DatasetError(
                    f"{data_dir / BACKGROUND_NOISE_DIR / name}: shorter than one clip "
                    f"({settings.clip_duration_ms} ms)"
                )
            noise[name] = samples / INT16_FULL_SCALE
        if not noise:
            if settings.background_only or settings.snr_db is not None:
                raise DatasetError(
                    f"{data_dir / BACKGROUND_NOISE_DIR}: no background noise files "
                    "(--background_only and --snr_db need them)"
                )
            log.warning("%s: no background noise: the words are on digital silence", data_dir)
    cache: dict[str, FloatArray] = {}

    def clip(rel: str) -> FloatArray:
        if rel not in cache:
            samples, _ = read_clip(data_dir / rel, settings.sample_rate_hz)
            fitted = np.zeros(settings.clip_samples)
            fitted[: min(len(samples), settings.clip_samples)] = (
                samples[: settings.clip_samples] / INT16_FULL_SCALE
            )
            cache[rel] = fitted
        return cache[rel]

    return make_stream(pools, wanted, clip, noise, settings, seed=seed)


def _word_list(text: str) -> tuple[str, ...]:
    words = tuple(w.strip().lower() for w in text.split(",") if w.strip())
    if not words:
        raise argparse.ArgumentTypeError("expected a comma-separated list of words")
    return words


def main(argv: Sequence[str] | None = None) -> int:
    use_one_blas_thread()  # many tiny per-clip products (kwsd/blas.py)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True, help="a Speech Commands-style folder")
    parser.add_argument("--output_audio_file", type=Path, required=True, metavar="OUT.wav")
    parser.add_argument(
        "--output_labels_file", type=Path, metavar="OUT.txt", help="the ground truth (default: OUT.txt)"
    )
    parser.add_argument("--wanted_words", type=_word_list, default=DEFAULT_WANTED_WORDS)
    parser.add_argument("--duration_s", "--test_duration_seconds", type=float, default=600.0)
    parser.add_argument("--word_gap_ms", type=int, default=2000, help="slot length minus clip length")
    parser.add_argument("--clip_duration_ms", type=int, default=1000)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--unknown_percentage", type=float, default=30.0)
    parser.add_argument("--background_volume", type=float, default=0.1, help="noise volume up to this")
    parser.add_argument(
        "--snr_db", type=float, help="instead of a volume: noise scaled to this SNR against each word"
    )
    parser.add_argument(
        "--background_only", action="store_true", help="noise only, empty truth (for false accepts)"
    )
    parser.add_argument("--validation_percentage", type=float, default=10.0)
    parser.add_argument("--testing_percentage", type=float, default=10.0)
    parser.add_argument(
        "--sequence",
        type=_word_list,
        default=(),
        help="labels to speak in this order, one per slot, repeated (wanted words or _unknown_), "
        "instead of drawing them at random: a scripted stream such as a demo",
    )
    parser.add_argument(
        "--partition",
        choices=("testing", "validation"),
        default="testing",
        help="whose clips: the test partition's (default), or the validation partition's (to tune "
        "detection settings on speakers the test never uses)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("kwsd.audio").setLevel(logging.WARNING)
    try:
        settings = StreamSettings(
            sample_rate_hz=args.sample_rate,
            clip_duration_ms=args.clip_duration_ms,
            duration_s=args.duration_s,
            word_gap_ms=args.word_gap_ms,
            unknown_percentage=args.unknown_percentage,
            background_volume=args.background_volume,
            snr_db=args.snr_db,
            background_only=args.background_only,
            sequence=args.sequence,
        )
        strange = sorted(set(args.sequence) - {*args.wanted_words, UNKNOWN_LABEL})
        if strange:
            raise ValueError(
                f"--sequence: {', '.join(strange)} is neither a --wanted_words word nor {UNKNOWN_LABEL}"
            )
    except ValueError as err:
        parser.error(str(err))
    labels_file = args.output_labels_file or args.output_audio_file.with_suffix(".txt")
    try:
        stream = generate(
            args.data_dir,
            args.wanted_words,
            settings,
            seed=args.seed,
            validation_percentage=args.validation_percentage,
            testing_percentage=args.testing_percentage,
            partition=args.partition,
        )
        write_wav(args.output_audio_file, stream.audio, settings.sample_rate_hz)
        labels_file.write_text(format_truth(stream.truth()))
    except (KwsdError, OSError) as err:
        print(f"make_stream: error: {err}", file=sys.stderr)
        return 1
    unknown = sum(w.label == UNKNOWN_LABEL for w in stream.words)
    noise = (
        f"snr {settings.snr_db:g} dB"
        if settings.snr_db is not None
        else f"volume up to {settings.background_volume:g}"
    )
    print(
        f"wrote {args.output_audio_file} ({len(stream.audio) / settings.sample_rate_hz:.1f} s, "
        f"{len(stream.words)} words, {unknown} of them {UNKNOWN_LABEL}; noise "
        f"{', '.join(stream.noise_files) or 'none'} at {noise}) and {labels_file}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
