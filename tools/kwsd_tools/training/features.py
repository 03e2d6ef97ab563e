"""Features for training: kwsd's own front end on (augmented) audio, computed once and cached.

Why not compute features at every step, as train.py does? Because that is where its time
goes (85% of a tiny_conv step). Why not augment the features instead of the audio (shift
frames, add noise spectra)? Because then the model would learn from features the daemon never
computes: the front end is not linear (log, DCT, noise reduction), and a shift by a fraction
of a frame has no feature-space equivalent. So augmentation is done on the *audio* exactly as
train.py does it, and the features of each augmented clip are computed by
:func:`kwsd.frontend.compute_features`, the daemon's code:

* validation and testing: one rendering per item, no shift, no noise (silence items: noise at
  a volume in [0, 1), as in train.py);
* training: ``copies`` renderings per item, each with its own time shift (uniform in
  [-shift, shift) samples) and, with probability ``background_frequency``, noise at a volume in
  [0, ``background_volume``); silence items always get noise at a volume in [0, 1). A batch is
  drawn from this pool, so each step sees fresh combinations of items while every input is
  exactly what the daemon would compute from that audio.

kwsd's robustness augmentation (:mod:`tools.training.augment`; off unless the
:class:`Augmentation` asks for it) is done on the audio in the same pass, drawn after train.py's
choices so that with it off the pool is exactly train.py's: speed and pitch perturbation, room
reverberation, noise at an SNR (in place of train.py's volume mix for that copy), band-limiting
and gain. SpecAugment masks are not in the pool: the trainer draws them per batch.

Everything is computed with a seeded generator, in parallel over processes, and cached on disk
(``<cache_dir>/<key>.npz``, the key a hash of the front end, the data set's files, sizes and
modification times (and a capture's window, from its sidecar), the augmentation settings and
its impulse responses and noise, the seed and the number of copies): a second run, a resumed
run and the export reuse it. A partition with no items (a capture set's validation and testing)
gives an empty set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kwsd.audio import float_to_int16
from kwsd.dataset_layout import BACKGROUND_NOISE_DIR
from kwsd.frontend import FrontendSpec, compute_features
from kwsd.labels import SILENCE_LABEL
from kwsd_tools.training import augment
from kwsd_tools.training.augment import AugmentAssets

if TYPE_CHECKING:
    from kwsd_tools.training.dataset import Dataset, DatasetSettings, Item

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
FeatureBatch = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Augmentation:
    """train.py's augmentation flags, then kwsd's robustness ones (all off by default here:
    with them off the pool is exactly train.py's; tools/train.py's defaults are in its --help).

    Ranges are ``(low, high)``, drawn uniformly; a probability of 0, a speed range of (1, 1)
    and pitch or gain ranges of (0, 0) switch that augmentation off.
    """

    background_volume: float = 0.1
    background_frequency: float = 0.8
    time_shift_ms: int = 100
    #: Share of speech copies convolved with an impulse response from the run's bank.
    reverb_probability: float = 0.0
    rt60_ms_range: tuple[float, float] = (200.0, 800.0)
    simulated_rir_count: int = 0
    rir_dirs: tuple[str, ...] = ()
    #: Share of speech copies mixed with noise at an SNR (instead of train.py's volume rule).
    noise_probability: float = 0.0
    snr_db_range: tuple[float, float] = (0.0, 20.0)
    noise_dirs: tuple[str, ...] = ()
    gain_db_range: tuple[float, float] = (0.0, 0.0)
    speed_range: tuple[float, float] = (1.0, 1.0)
    pitch_semitones_range: tuple[float, float] = (0.0, 0.0)
    #: Share of copies (speech and silence) band-limited like a cheap microphone.
    bandlimit_probability: float = 0.0
    highpass_hz_range: tuple[float, float] = (100.0, 300.0)
    lowpass_hz_range: tuple[float, float] = (3000.0, 7000.0)

    def __post_init__(self) -> None:
        # Read back from a checkpoint's JSON record, tuples arrive as lists.
        for name, value in vars(self).items():
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))


@dataclass(frozen=True)
class Recipe:
    """How one input's audio is made: ``clip(shift(clip) + noise[offset:offset+n] * volume, -1, 1)``.

    Silence items have no clip (zeros). A positive shift pads zeros at the start, a negative
    one at the end (train.py's rule).
    """

    label_index: int
    path: str | None
    shift_samples: int = 0
    noise: str | None = None
    noise_offset: int = 0
    noise_volume: float = 0.0
    # kwsd's robustness augmentation, applied in this order around train.py's steps:
    # speed, pitch, [shift], reverb, noise at an SNR, [background mix], band, gain.
    speed: float = 1.0
    pitch_semitones: float = 0.0
    rir: int = -1  # index in the run's AugmentAssets.rirs; -1: none
    snr_noise: str | None = None  # a key of noise_pool()
    snr_noise_offset: int = 0
    snr_db: float = 0.0
    highpass_hz: float = 0.0
    lowpass_hz: float = 0.0
    gain_db: float = 0.0


def make_recipe(
    item: Item,
    label_index: int,
    dataset: Dataset,
    augmentation: Augmentation,
    rng: np.random.Generator,
    *,
    augment: bool,
    assets: AugmentAssets | None = None,
) -> Recipe:
    """train.py's get_data choices for one item, then kwsd's robustness choices (drawn after
    train.py's, and only for the augmentations that are on: with them off, the same seed gives
    exactly the recipes it gave before they existed)."""
    spec_rate = dataset.settings.sample_rate_hz
    clip_samples = spec_rate * dataset.settings.clip_duration_ms // 1000
    shift = 0
    if augment and augmentation.time_shift_ms > 0:
        limit = spec_rate * augmentation.time_shift_ms // 1000
        shift = int(rng.integers(-limit, limit))  # uniform in [-limit, limit)
        if dataset.settings.align_end:
            # A clip that ends the window moves earlier only: a later one would lose its end.
            shift = -abs(shift)
    is_silence = item.label == SILENCE_LABEL
    if not dataset.noise or not (augment or is_silence):
        recipe = Recipe(label_index, item.path, shift)
    else:
        names = sorted(dataset.noise)
        name = names[int(rng.integers(len(names)))]
        offset = int(rng.integers(0, len(dataset.noise[name]) - clip_samples + 1))
        if is_silence:
            volume = float(rng.uniform(0.0, 1.0))
        elif rng.uniform(0.0, 1.0) < augmentation.background_frequency:
            volume = float(rng.uniform(0.0, augmentation.background_volume))
        else:
            volume = 0.0
        recipe = Recipe(label_index, item.path, shift, name, offset, volume)
    if not augment:
        return recipe
    return _robust_choices(
        recipe,
        is_silence,
        dataset=dataset,
        augmentation=augmentation,
        rng=rng,
        assets=assets,
        clip_samples=clip_samples,
    )


def _robust_choices(
    recipe: Recipe,
    is_silence: bool,
    *,
    dataset: Dataset,
    augmentation: Augmentation,
    rng: np.random.Generator,
    assets: AugmentAssets | None,
    clip_samples: int,
) -> Recipe:
    a = augmentation
    changes: dict[str, Any] = {}
    if not is_silence:  # what happens to a talker: silence items are noise alone
        if a.speed_range != (1.0, 1.0):
            changes["speed"] = float(rng.uniform(*a.speed_range))
        if a.pitch_semitones_range != (0.0, 0.0):
            changes["pitch_semitones"] = float(rng.uniform(*a.pitch_semitones_range))
        has_rirs = assets is not None and bool(assets.rirs)
        if a.reverb_probability > 0 and has_rirs and rng.uniform() < a.reverb_probability:
            assert assets is not None
            changes["rir"] = int(rng.integers(len(assets.rirs)))
        pool = noise_pool(dataset, assets)
        if a.noise_probability > 0 and pool and rng.uniform() < a.noise_probability:
            names = sorted(pool)
            name = names[int(rng.integers(len(names)))]
            changes["snr_noise"] = name
            changes["snr_noise_offset"] = int(rng.integers(0, len(pool[name]) - clip_samples + 1))
            changes["snr_db"] = float(rng.uniform(*a.snr_db_range))
            changes["noise_volume"] = 0.0  # instead of train.py's mix, not on top of it
    # What the microphone does, to speech and silence alike.
    if a.bandlimit_probability > 0 and rng.uniform() < a.bandlimit_probability:
        changes["highpass_hz"] = float(rng.uniform(*a.highpass_hz_range))
        changes["lowpass_hz"] = float(rng.uniform(*a.lowpass_hz_range))
    if a.gain_db_range != (0.0, 0.0):
        changes["gain_db"] = float(rng.uniform(*a.gain_db_range))
    return replace(recipe, **changes) if changes else recipe


def assets_for(augmentation: Augmentation, settings: DatasetSettings, *, seed: int) -> AugmentAssets | None:
    """The run's impulse-response bank and the user's noise for ``augmentation`` (None when
    nothing uses them); the user's folders are read, and refused, here."""
    wants_rirs = augmentation.reverb_probability > 0
    if not wants_rirs and not augmentation.noise_dirs:
        return None
    return augment.make_assets(
        sample_rate_hz=settings.sample_rate_hz,
        clip_samples=settings.clip_samples,
        seed=seed,
        simulated_rir_count=augmentation.simulated_rir_count if wants_rirs else 0,
        rt60_ms_range=augmentation.rt60_ms_range,
        rir_dirs=augmentation.rir_dirs if wants_rirs else (),
        noise_dirs=augmentation.noise_dirs,
    )


def noise_pool(dataset: Dataset, assets: AugmentAssets | None) -> dict[str, FloatArray]:
    """Noise for the SNR mix: the data set's ``_background_noise_`` and the user's folders."""
    pool = {f"{BACKGROUND_NOISE_DIR}/{name}": samples for name, samples in dataset.noise.items()}
    if assets is not None:
        pool.update(assets.noise)
    return pool


def render(
    recipe: Recipe, dataset: Dataset, clip_samples: int, assets: AugmentAssets | None = None
) -> Int16Array:
    """The int16 audio of one input (the formula in :class:`Recipe`, and the robustness steps)."""
    rate = dataset.settings.sample_rate_hz
    audio = np.zeros(clip_samples) if recipe.path is None else dataset.clip(recipe.path).copy()
    if recipe.speed != 1.0:
        audio = augment.change_speed(audio, recipe.speed, rate)
    if recipe.pitch_semitones:
        audio = augment.shift_pitch(audio, recipe.pitch_semitones, rate)
    shift = recipe.shift_samples
    if shift > 0:
        audio = np.concatenate((np.zeros(shift), audio[:-shift]))
    elif shift < 0:
        audio = np.concatenate((audio[-shift:], np.zeros(-shift)))
    if recipe.rir >= 0 and assets is not None:
        audio = augment.reverberate(audio, assets.rirs[recipe.rir])
    if recipe.snr_noise is not None:
        noise = noise_pool(dataset, assets)[recipe.snr_noise]
        segment = noise[recipe.snr_noise_offset : recipe.snr_noise_offset + clip_samples]
        audio = np.clip(augment.mix_at_snr(audio, segment, recipe.snr_db), -1.0, 1.0)
    if recipe.noise is not None and recipe.noise_volume:
        background = dataset.noise[recipe.noise][recipe.noise_offset : recipe.noise_offset + clip_samples]
        audio = np.clip(audio + background * recipe.noise_volume, -1.0, 1.0)
    if recipe.highpass_hz or recipe.lowpass_hz:
        audio = np.clip(augment.band_limit(audio, recipe.highpass_hz, recipe.lowpass_hz, rate), -1.0, 1.0)
    if recipe.gain_db:
        audio = augment.apply_gain(audio, recipe.gain_db)
    return float_to_int16(audio)


@dataclass
class FeatureSet:
    """Inputs and label indices of one partition (training: the augmented pool)."""

    x: FeatureBatch  # (n, frames, features) float32
    y: npt.NDArray[np.int64]
    #: Several data sources (tools/train.py's --data_dir NAME=DIR:WEIGHT): each input's source
    #: index into ``source_names``, and each input's sampling weight in training batches.
    source: npt.NDArray[np.int64] | None = None
    source_names: tuple[str, ...] = ()
    weight: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.y)


def partition_features(
    dataset: Dataset,
    spec: FrontendSpec,
    partition: str,
    *,
    augmentation: Augmentation,
    copies: int,
    seed: int,
    cache_dir: Path | None,
    workers: int | None = None,
    assets: AugmentAssets | None = None,
) -> FeatureSet:
    """The features of ``partition`` (``copies`` augmented renderings per item when training);
    ``assets``: the impulse responses and noise the robustness augmentation draws from."""
    training = partition == "training"
    copies = copies if training else 1
    key = _cache_key(
        dataset, spec, partition, augmentation=augmentation, copies=copies, seed=seed, assets=assets
    )
    path = cache_dir / f"{partition}-{key}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        with np.load(path) as cached:
            log.info("features of %s: %d from the cache %s", partition, len(cached["y"]), path)
            return FeatureSet(cached["x"], cached["y"])
    # One generator per partition, seeded from the run's seed: the same run gives the same pool.
    rng = np.random.default_rng([seed, ("training", "validation", "testing").index(partition)])
    items = dataset.items[partition]
    recipes = [
        make_recipe(
            item, dataset.label_index(item.label), dataset, augmentation, rng, augment=training, assets=assets
        )
        for _ in range(copies)
        for item in items
    ]
    started = time.monotonic()
    x = compute_all(recipes, dataset, spec, workers=workers, assets=assets)
    y = np.array([r.label_index for r in recipes], np.int64)
    log.info(
        "features of %s: %d computed in %.1f s (%s)",
        partition,
        len(y),
        time.monotonic() - started,
        f"{copies} augmented copies of {len(items)} items" if training else f"{len(items)} items",
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, path)
    return FeatureSet(x, y)


# --- parallel computation -------------------------------------------------------------------
#
# Workers are forked after the data set is loaded, so they share its decoded clips and noise
# (copy-on-write) and only recipes and features cross the process boundary.

_WORKER_STATE: dict[str, Any] = {}


def compute_all(
    recipes: Sequence[Recipe],
    dataset: Dataset,
    spec: FrontendSpec,
    *,
    workers: int | None = None,
    assets: AugmentAssets | None = None,
) -> FeatureBatch:
    """Features of every recipe, in order, over ``workers`` processes (default: all cores)."""
    out = np.empty((len(recipes), *spec.feature_shape), np.float32)
    workers = workers or os.cpu_count() or 1
    chunks = [list(range(i, min(i + 256, len(recipes)))) for i in range(0, len(recipes), 256)]
    if workers <= 1 or len(chunks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for chunk in chunks:
            out[chunk] = _features_of([recipes[i] for i in chunk], dataset, spec, assets)
        return out
    _WORKER_STATE.update(dataset=dataset, spec=spec, assets=assets)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for chunk, features in zip(
                chunks, pool.imap(_worker, [[recipes[i] for i in chunk] for chunk in chunks]), strict=True
            ):
                out[chunk] = features
    finally:
        _WORKER_STATE.clear()
    return out


def _worker(recipes: list[Recipe]) -> FeatureBatch:
    return _features_of(recipes, _WORKER_STATE["dataset"], _WORKER_STATE["spec"], _WORKER_STATE["assets"])


def _features_of(
    recipes: Sequence[Recipe], dataset: Dataset, spec: FrontendSpec, assets: AugmentAssets | None = None
) -> FeatureBatch:
    out = np.empty((len(recipes), *spec.feature_shape), np.float32)
    for i, recipe in enumerate(recipes):
        out[i] = compute_features(spec, render(recipe, dataset, spec.clip_samples, assets))
    return out


def _cache_key(
    dataset: Dataset,
    spec: FrontendSpec,
    partition: str,
    *,
    augmentation: Augmentation,
    copies: int,
    seed: int,
    assets: AugmentAssets | None = None,
) -> str:
    digest = hashlib.sha256()
    facts = {
        "spec": spec.to_dict(),
        "augmentation": asdict(augmentation),
        "copies": copies,
        "seed": seed,
        "labels": dataset.labels,
        "settings": {
            k: v if not isinstance(v, tuple) else list(v) for k, v in asdict(dataset.settings).items()
        },
    }
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    for item in dataset.items[partition]:
        digest.update(f"{item.label}\0{item.path}\0".encode())
        if item.path is not None:
            stat = (dataset.data_dir / item.path).stat()
            digest.update(f"{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
            if item.path in dataset.capture_ends:  # a capture: where its sidecar puts the window
                digest.update(f"window end\0{dataset.capture_ends[item.path]}\0".encode())
    for name in sorted(dataset.noise):
        digest.update(f"noise\0{name}\0{len(dataset.noise[name])}\0".encode())
    for fact in assets.fingerprint() if assets is not None else ():
        digest.update(f"{fact}\0".encode())
    return digest.hexdigest()[:16]
