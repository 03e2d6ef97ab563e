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

Everything is computed with a seeded generator, in parallel over processes, and cached on disk
(``<cache_dir>/<key>.npz``, the key a hash of the front end, the data set's files, sizes and
modification times, the augmentation settings, the seed and the number of copies): a second
run, a resumed run and the export reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kwsd.audio import float_to_int16
from kwsd.frontend import FrontendSpec, compute_features
from kwsd.labels import SILENCE_LABEL

if TYPE_CHECKING:
    from tools.training.dataset import Dataset, Item

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
FeatureBatch = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True)
class Augmentation:
    """train.py's augmentation flags."""

    background_volume: float = 0.1
    background_frequency: float = 0.8
    time_shift_ms: int = 100


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


def make_recipe(
    item: Item,
    label_index: int,
    dataset: Dataset,
    augmentation: Augmentation,
    rng: np.random.Generator,
    *,
    augment: bool,
) -> Recipe:
    """train.py's get_data choices for one item."""
    spec_rate = dataset.settings.sample_rate_hz
    clip_samples = spec_rate * dataset.settings.clip_duration_ms // 1000
    shift = 0
    if augment and augmentation.time_shift_ms > 0:
        limit = spec_rate * augmentation.time_shift_ms // 1000
        shift = int(rng.integers(-limit, limit))  # uniform in [-limit, limit)
    is_silence = item.label == SILENCE_LABEL
    if not dataset.noise or not (augment or is_silence):
        return Recipe(label_index, item.path, shift)
    names = sorted(dataset.noise)
    name = names[int(rng.integers(len(names)))]
    offset = int(rng.integers(0, len(dataset.noise[name]) - clip_samples + 1))
    if is_silence:
        volume = float(rng.uniform(0.0, 1.0))
    elif rng.uniform(0.0, 1.0) < augmentation.background_frequency:
        volume = float(rng.uniform(0.0, augmentation.background_volume))
    else:
        volume = 0.0
    return Recipe(label_index, item.path, shift, name, offset, volume)


def render(recipe: Recipe, dataset: Dataset, clip_samples: int) -> Int16Array:
    """The int16 audio of one input (the formula in :class:`Recipe`)."""
    audio = np.zeros(clip_samples) if recipe.path is None else dataset.clip(recipe.path).copy()
    shift = recipe.shift_samples
    if shift > 0:
        audio = np.concatenate((np.zeros(shift), audio[:-shift]))
    elif shift < 0:
        audio = np.concatenate((audio[-shift:], np.zeros(-shift)))
    if recipe.noise is not None and recipe.noise_volume:
        background = dataset.noise[recipe.noise][recipe.noise_offset : recipe.noise_offset + clip_samples]
        audio = np.clip(audio + background * recipe.noise_volume, -1.0, 1.0)
    return float_to_int16(audio)


@dataclass
class FeatureSet:
    """Inputs and label indices of one partition (training: the augmented pool)."""

    x: FeatureBatch  # (n, frames, features) float32
    y: npt.NDArray[np.int64]

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
) -> FeatureSet:
    """The features of ``partition`` (``copies`` augmented renderings per item when training)."""
    training = partition == "training"
    copies = copies if training else 1
    key = _cache_key(dataset, spec, partition, augmentation=augmentation, copies=copies, seed=seed)
    path = cache_dir / f"{partition}-{key}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        with np.load(path) as cached:
            log.info("features of %s: %d from the cache %s", partition, len(cached["y"]), path)
            return FeatureSet(cached["x"], cached["y"])
    # One generator per partition, seeded from the run's seed: the same run gives the same pool.
    rng = np.random.default_rng([seed, ("training", "validation", "testing").index(partition)])
    items = dataset.items[partition]
    recipes = [
        make_recipe(item, dataset.label_index(item.label), dataset, augmentation, rng, augment=training)
        for _ in range(copies)
        for item in items
    ]
    started = time.monotonic()
    x = compute_all(recipes, dataset, spec, workers=workers)
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
    recipes: Sequence[Recipe], dataset: Dataset, spec: FrontendSpec, *, workers: int | None = None
) -> FeatureBatch:
    """Features of every recipe, in order, over ``workers`` processes (default: all cores)."""
    out = np.empty((len(recipes), *spec.feature_shape), np.float32)
    workers = workers or os.cpu_count() or 1
    chunks = [list(range(i, min(i + 256, len(recipes)))) for i in range(0, len(recipes), 256)]
    if workers <= 1 or len(chunks) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for chunk in chunks:
            out[chunk] = _features_of([recipes[i] for i in chunk], dataset, spec)
        return out
    _WORKER_STATE.update(dataset=dataset, spec=spec)
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
    return _features_of(recipes, _WORKER_STATE["dataset"], _WORKER_STATE["spec"])


def _features_of(recipes: Sequence[Recipe], dataset: Dataset, spec: FrontendSpec) -> FeatureBatch:
    out = np.empty((len(recipes), *spec.feature_shape), np.float32)
    for i, recipe in enumerate(recipes):
        out[i] = compute_features(spec, render(recipe, dataset, spec.clip_samples))
    return out


def _cache_key(
    dataset: Dataset,
    spec: FrontendSpec,
    partition: str,
    *,
    augmentation: Augmentation,
    copies: int,
    seed: int,
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
    for name in sorted(dataset.noise):
        digest.update(f"noise\0{name}\0{len(dataset.noise[name])}\0".encode())
    return digest.hexdigest()[:16]
