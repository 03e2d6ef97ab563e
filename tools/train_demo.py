#!/usr/bin/env python3
"""Train kwsd's demo keyword model: synthetic data in, two tested model bundles out.

Steps (each prints its progress):

1. data: synthesise a Speech Commands-style set with ``tools/synth.py`` (espeak-ng + sox),
   or read one given with ``--data_dir`` (same layout);
2. check every file and split with :func:`tools.training.dataset.load_dataset` (Speech
   Commands' hash rule, labels ``["_silence_", "_unknown_"] + wanted_words``, silence and
   unknown items as percentages of the wanted count, per partition: train.py's defaults,
   10 and 10); files at another rate or format are converted by kwsd's reader and listed;
3. features with :func:`kwsd.frontend.compute_features` only, the daemon's own code.
   Augmentation (background noise with probability 0.8 at a volume in [0, 0.1), time
   shift in [-100, 100) ms) is applied to the *audio*; ``--augment_copies`` augmented
   copies of every training item are rendered up front and their features computed, so
   every training input is exactly what the daemon would compute from that audio;
4. a model in tf.keras: by default a small DS-CNN (depthwise-separable CNN, "Hello Edge")
   on the 49x13 MFCCs, shaped as a temporal CNN (the first conv spans all 13 cepstra, the
   blocks then convolve over time only), about 20 us per window in the interpreter; its
   size is set by ``--channels``, ``--ds_blocks``, ``--first_kernel``, ``--first_stride``.
   Or train.py's tiny_conv (``--model_architecture tiny_conv``); with ``--preprocess
   micro`` (micro_speech's front end, 49x40) that is micro_speech's model;
5. export float32 and full-int8 ``.tflite`` (int8 calibrated on real training features;
   int8 input and output); ``--bare_tflite PATH`` also writes the int8 model alone with
   micro_speech's flattened [1, frames*features] input, and ``<stem>_labels.txt`` beside it;
6. evaluate each ``.tflite`` on the validation and test partitions through
   :class:`kwsd.classifier.TfliteClassifier` (the daemon's interpreter path, not TensorFlow);
7. recommend smoother settings: a stream built from *validation* voices goes once through
   kwsd's own pipeline (the scores ``kwsd stream`` computes), then kwsd's RecognizeCommands
   runs over those scores under each candidate setting (TensorFlow's firing rule);
8. write ``demo.kwsd`` (int8), ``demo-float.kwsd``, and ``demo.wav`` + ``demo.txt``: words
   by *test* voices over low noise, with ground truth (``label, time_ms``, the start of
   each word's 1 s clip, unknown words as ``_unknown_``) and report what the int8 model
   hears in it.

TensorFlow is imported only inside the functions that need it, so the helpers can be
imported (by the tests) without it.

Usage::

    python tools/train_demo.py --out kwsd/demo --work_dir /tmp/kwsd_demo_work
    python tools/train_demo.py --quick --out /tmp/quick      # tiny run for the tests
    python tools/train_demo.py --quick --preprocess micro --model_architecture tiny_conv \
        --wanted_words yes,no --bare_tflite /tmp/micro/model.tflite --out /tmp/micro/out
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TOOLS_DIR = Path(__file__).resolve().parent
if str(TOOLS_DIR.parent) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR.parent))  # run from a checkout without installing kwsd

from kwsd.audio import float_to_int16, write_wav  # noqa: E402
from kwsd.bundle import Bundle, make_bundle, write_bundle  # noqa: E402
from kwsd.detection import resolve_detection  # noqa: E402
from kwsd.errors import KwsdError  # noqa: E402

# The streaming scoring lives in kwsd.evaluate (kwsd evaluate / calibrate use it too).
from kwsd.evaluate import StreamScore, clip_start_ms, score_stream  # noqa: E402
from kwsd.evaluate import smooth_scores as smooth  # noqa: E402
from kwsd.frontend import FrontendKind, FrontendSpec  # noqa: E402
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL  # noqa: E402
from kwsd.smoother import RecognizeCommands, SmootherSettings  # noqa: E402
from tools.training import features  # noqa: E402
from tools.training.dataset import (  # noqa: E402
    BACKGROUND_NOISE_DIR,
    PARTITIONS,
    Dataset,
    DatasetError,
    DatasetSettings,
    Item,
    load_dataset,
    speaker_of,
)
from tools.training.features import Augmentation, Recipe  # noqa: E402

log = logging.getLogger("train_demo")

TOOL_NAME = "tools/train_demo.py"

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------
# Settings: one frozen object instead of a global FLAGS.


class Architecture(enum.Enum):
    """The model to train: the demo's DS-CNN, or train.py's tiny_conv (micro_speech's)."""

    DS_CNN = "ds_cnn"
    TINY_CONV = "tiny_conv"


@dataclass(frozen=True)
class Settings:
    wanted_words: tuple[str, ...] = ("yes", "no", "stop", "go")
    unknown_words: tuple[str, ...] = ("up", "down", "left", "right", "on", "off")  # synth only
    voices: int = 160
    repetitions: int = 3
    seed: int = 1
    silence_percentage: float = 10.0
    unknown_percentage: float = 10.0
    validation_percentage: float = 10.0
    testing_percentage: float = 10.0
    background_volume: float = 0.1
    background_frequency: float = 0.8
    time_shift_ms: int = 100
    augment_copies: int = 12
    batch_size: int = 100
    epochs: int = 10
    steps: int | None = None
    learning_rate: float = 0.003
    #: The demo's DS-CNN, shaped as a temporal CNN: the first conv spans all 13 cepstra
    #: (kernel and stride 13 over features) and halves the frames, so the blocks work on
    #: 25 x 1 positions. About 20 us per window through TfliteClassifier, 0.38 x the cost
    #: of the former 2-D 48-channel, 10x4 stride 2x2 version at the same accuracy.
    channels: int = 64
    ds_blocks: int = 4
    #: Kernel and stride of the DS-CNN's first conv (frames, features).
    first_kernel: tuple[int, int] = (5, 13)
    first_stride: tuple[int, int] = (2, 13)
    preprocess: FrontendKind = FrontendKind.MFCC
    model_architecture: Architecture = Architecture.DS_CNN
    dropout: float = 0.2
    representative_count: int = 500
    tuning_words: int = 40
    demo_background_volume: float = 0.05
    quick: bool = False


QUICK: dict[str, Any] = {
    "voices": 24,
    "repetitions": 1,
    "augment_copies": 2,
    "steps": 40,
    "batch_size": 50,
    "representative_count": 50,
    "tuning_words": 8,
    "quick": True,
}

#: The front end of the demo model: kwsd's MFCC defaults (16 kHz, 1 s, 30/20 ms, 40 mel
#: filters, 13 cepstra) -> 49 x 13 features.
DEMO_SPEC = FrontendSpec(FrontendKind.MFCC)
#: micro_speech's front end (``--preprocess micro``): the TFLite Micro front end, 30 ms
#: window, 20 ms stride, 40 channels -> 49 x 40 features.
MICRO_SPEC = FrontendSpec(FrontendKind.MICRO, window_stride_ms=20)


def frontend_for(settings: Settings) -> FrontendSpec:
    return DEMO_SPEC if settings.preprocess is FrontendKind.MFCC else MICRO_SPEC


# --------------------------------------------------------------------------------------
# Step 3: audio -> features, with augmentation on the audio.


class AudioStore:
    """A loaded data set's clips and background noise (each read once, by
    :func:`tools.training.dataset.load_dataset`) with the front end they are rendered for."""

    def __init__(self, dataset: Dataset, spec: FrontendSpec) -> None:
        if dataset.clip_samples != spec.clip_samples:
            raise ValueError(
                f"the data set's clips are {dataset.clip_samples} samples, "
                f"the front end's {spec.clip_samples}"
            )
        self.dataset = dataset
        self.spec = spec
        self.noise = dataset.noise

    def clip(self, rel: str) -> FloatArray:
        """The clip padded or cut to the clip length, as float in [-1, 1)."""
        return self.dataset.clip(rel)


def make_recipe(
    item: Item, store: AudioStore, settings: Settings, rng: np.random.Generator, augment: bool
) -> Recipe:
    """train.py's get_data choices for one item (:func:`tools.training.features.make_recipe`)."""
    augmentation = Augmentation(
        settings.background_volume, settings.background_frequency, settings.time_shift_ms
    )
    label_index = store.dataset.label_index(item.label)
    return features.make_recipe(item, label_index, store.dataset, augmentation, rng, augment=augment)


def render(recipe: Recipe, store: AudioStore) -> Int16Array:
    """The int16 audio of one input (:func:`tools.training.features.render`)."""
    return features.render(recipe, store.dataset, store.spec.clip_samples)


def features_for(recipes: list[Recipe], store: AudioStore) -> npt.NDArray[np.float32]:
    return features.compute_all(recipes, store.dataset, store.spec, workers=1)


# --------------------------------------------------------------------------------------
# Step 4: the model.


#: Batch-norm running statistics settle within tens of steps (Keras' 0.99 needs hundreds).
BN_MOMENTUM = 0.9


def build_model(
    tf: Any,
    settings: Settings,
    spec: FrontendSpec,
    *,
    label_count: int,
    mean: FloatArray,
    variance: FloatArray,
    batch_size: int | None = None,
    flat_input: bool = False,
) -> Any:
    """The Keras model for ``settings.model_architecture``, on the front end's raw features.

    ``batch_size`` fixes the batch dimension (1 for export). ``flat_input`` makes the input
    [batch, frames * features], reshaped inside the model, as micro_speech's model takes it.
    ``mean`` and ``variance`` (per feature, over the training features) feed the DS-CNN's
    normalisation layer.
    """
    layers = tf.keras.layers
    frames, features = spec.feature_shape
    if flat_input:
        inputs = tf.keras.Input(shape=(frames * features,), batch_size=batch_size, name="features")
        x = layers.Reshape((frames, features))(inputs)
    else:
        inputs = tf.keras.Input(shape=(frames, features), batch_size=batch_size, name="features")
        x = inputs
    if settings.model_architecture is Architecture.TINY_CONV:
        outputs = _tiny_conv(layers, x, settings=settings, spec=spec, label_count=label_count)
    else:
        outputs = _ds_cnn(
            layers,
            x,
            settings=settings,
            spec=spec,
            label_count=label_count,
            mean=mean,
            variance=variance,
        )
    return tf.keras.Model(inputs, outputs, name=settings.model_architecture.value)


def _ds_cnn(
    layers: Any,
    x: Any,
    *,
    settings: Settings,
    spec: FrontendSpec,
    label_count: int,
    mean: FloatArray,
    variance: FloatArray,
) -> Any:
    """DS-CNN: conv ``first_kernel`` (stride ``first_stride``, SAME), ``ds_blocks`` x
    (depthwise 3x3 + pointwise), global average pool, dense.

    A per-feature normalisation (training mean and variance) is the first layer, so the
    model takes the front end's raw features, as the daemon computes them. A first conv
    as wide as the features (kernel and stride = feature count) leaves one column: the
    blocks then convolve over time only (depthwise 3x1), as a temporal CNN does.
    """
    frames, features = spec.feature_shape
    x = layers.Normalization(axis=-1, mean=mean, variance=variance)(x)
    x = layers.Reshape((frames, features, 1))(x)
    x = layers.Conv2D(
        settings.channels,
        settings.first_kernel,
        strides=settings.first_stride,
        padding="same",
        use_bias=False,
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    depthwise_kernel = (3, min(3, ds_cnn_columns(settings, spec)))
    for _ in range(settings.ds_blocks):
        x = layers.DepthwiseConv2D(depthwise_kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(settings.channels, (1, 1), use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(settings.dropout)(x)
    return layers.Dense(label_count, activation="softmax", name="scores")(x)


def ds_cnn_columns(settings: Settings, spec: FrontendSpec) -> int:
    """Feature columns left after the DS-CNN's first conv (SAME padding)."""
    return math.ceil(spec.feature_count / settings.first_stride[1])


def _tiny_conv(layers: Any, x: Any, *, settings: Settings, spec: FrontendSpec, label_count: int) -> Any:
    """train.py's tiny_conv (micro_speech's model): conv 10x8 (frames x features), 8
    filters, stride 2, SAME, bias, ReLU; dropout; dense to the labels (+ softmax, which
    train.py adds at inference). No normalisation: the features go in as the front end
    makes them, as in train.py, so the int8 input scale is micro_speech's (about 0.1)."""
    frames, features = spec.feature_shape
    x = layers.Reshape((frames, features, 1))(x)
    x = layers.Conv2D(8, (10, 8), strides=(2, 2), padding="same", activation="relu")(x)
    x = layers.Dropout(settings.dropout)(x)
    x = layers.Flatten()(x)
    return layers.Dense(label_count, activation="softmax", name="scores")(x)


def architecture_text(settings: Settings, spec: FrontendSpec, *, flat_input: bool = False) -> str:
    frames, features = spec.feature_shape
    source = f"{frames}x{features} {spec.kind.value}"
    if flat_input:
        source += f" (input flattened to [1,{frames * features}])"
    if settings.model_architecture is Architecture.TINY_CONV:
        return (
            f"tiny_conv on {source}: conv 10x8x8 stride 2x2 +ReLU; dropout {settings.dropout}; "
            "dense + softmax"
        )
    kernel = "x".join(map(str, settings.first_kernel))
    depthwise = f"3x{min(3, ds_cnn_columns(settings, spec))}"
    return (
        f"DS-CNN on {source}: normalise; conv {kernel}x{settings.channels} stride "
        f"{'x'.join(map(str, settings.first_stride))} "
        f"+BN+ReLU; {settings.ds_blocks} x (depthwise {depthwise} +BN+ReLU, pointwise "
        f"1x1x{settings.channels} +BN+ReLU); global average pool; dropout {settings.dropout}; "
        "dense + softmax"
    )


def train_model(
    tf: Any,
    model: Any,
    settings: Settings,
    *,
    x_train: Any,
    y_train: Any,
    x_val: Any,
    y_val: Any,
    labels: list[str],
) -> dict[str, Any]:
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    total_steps = settings.steps or settings.epochs * steps_per_epoch
    interval = steps_per_epoch if settings.steps is None else max(1, math.ceil(total_steps / 10))
    rounds = math.ceil(total_steps / interval)
    total_steps = rounds * interval
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, decay_steps=total_steps, alpha=0.02
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(schedule),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    dataset = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .shuffle(len(x_train), seed=settings.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(settings.batch_size)
    )
    started = time.monotonic()

    class Progress(tf.keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            step = (epoch + 1) * interval
            rate = float(schedule(step))
            log.info(
                "Step #%d/%d: rate %.5f, accuracy %.1f%%, cross entropy %.4f; "
                "validation accuracy %.1f%% (N=%d) [%.0f s]",
                step,
                total_steps,
                rate,
                100 * logs.get("accuracy", 0.0),
                logs.get("loss", 0.0),
                100 * logs.get("val_accuracy", 0.0),
                len(x_val),
                time.monotonic() - started,
            )

    model.fit(
        dataset,
        steps_per_epoch=interval,
        epochs=rounds,
        validation_data=(x_val, y_val),
        validation_batch_size=256,
        callbacks=[Progress()],
        verbose=0,
    )
    predictions = np.argmax(model.predict(x_val, batch_size=256, verbose=0), axis=1)
    log.info(
        "Keras model, validation confusion matrix:\n%s",
        confusion_text(confusion(y_val, predictions, len(labels)), labels),
    )
    return {
        "steps": total_steps,
        "batch_size": settings.batch_size,
        "learning_rate": f"{settings.learning_rate} cosine decay to 2%",
        "seconds": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------------------
# Step 5: export.


def export_tflite(tf: Any, model: Any, representative: npt.NDArray[np.float32]) -> tuple[bytes, bytes]:
    """(float32 model, full-int8 model with int8 input and output), both for batch 1.

    ``model`` must be built with a batch size of 1 (see :func:`build_model`): a fixed
    [1, frames, features] (or [1, frames * features]) input keeps shape arithmetic out of
    the graph, and the daemon classifies one window at a time. ``representative`` holds
    (frames, features) windows, reshaped to the model's input.
    """
    input_shape = tuple(int(d) for d in model.inputs[0].shape)

    def representative_dataset() -> Any:
        for window in representative:
            yield [window.reshape(input_shape).astype(np.float32)]

    chatter = io.StringIO()  # the converter prints its SavedModel signature to stdout
    with contextlib.redirect_stdout(chatter):
        float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        int8_model = converter.convert()
    log.debug("converter output:\n%s", chatter.getvalue())
    return bytes(float_model), bytes(int8_model)


def labels_file_for(tflite_path: Path) -> Path:
    """``model.tflite`` -> ``model_labels.txt`` beside it (train.py's ``<arch>_labels.txt``)."""
    return tflite_path.with_name(f"{tflite_path.stem}_labels.txt")


def write_bare_tflite(tflite: bytes, labels: list[str], path: Path) -> dict[str, Any]:
    """The .tflite alone, as TensorFlow's tools leave it, plus its labels file (one per line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tflite)
    labels_path = labels_file_for(path)
    labels_path.write_text("".join(f"{label}\n" for label in labels))
    return {"tflite": str(path), "labels_file": str(labels_path), "bytes": len(tflite)}


# --------------------------------------------------------------------------------------
# Step 6: evaluation through kwsd's classifier.


def classify_all(bundle: Bundle, features: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """Top label index of each window, through kwsd's TfliteClassifier (argmax ties: lowest)."""
    from kwsd.classifier import TfliteClassifier

    classifier = TfliteClassifier(bundle)
    return np.array([int(np.argmax(classifier.classify(f))) for f in features], np.int64)


def confusion(truth: Any, predicted: Any, size: int) -> npt.NDArray[np.int64]:
    matrix = np.zeros((size, size), np.int64)
    for t, p in zip(truth, predicted, strict=True):
        matrix[int(t), int(p)] += 1
    return matrix


def confusion_text(matrix: npt.NDArray[np.int64], labels: list[str]) -> str:
    """The confusion matrix with its labels (rows = truth, columns = prediction)."""
    width = max(6, *(len(label) for label in labels)) + 1
    lines = [" " * width + "".join(f"{label:>{width}}" for label in labels) + "   <- predicted"]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{label:>{width}}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Step 7 and 8: streams, kwsd's smoother over recorded scores, scoring.
#
# Times: kwsd stamps a window (its scores, and a detection) with the audio time at the
# window's *end*, and so does everything here; the reference's ground truth (``demo.txt``,
# the tuning stream's truth) gives the *start* of each word's clip. The two meet only in
# :func:`kwsd.evaluate.score_stream`, through :func:`kwsd.evaluate.clip_start_ms`.


def build_stream(
    store: AudioStore,
    words: list[tuple[str, str]],
    starts_samples: list[int],
    *,
    total_samples: int,
    noise: str | None,
    noise_volume: float,
    noise_offset: int = 0,
) -> Int16Array:
    """Clips (``(ground-truth label, path)``) added at ``starts_samples`` over looped noise."""
    audio = np.zeros(total_samples)
    if noise is not None and noise_volume > 0:
        background = store.noise[noise]
        reps = math.ceil((total_samples + noise_offset) / len(background))
        audio += np.tile(background, reps)[noise_offset : noise_offset + total_samples] * noise_volume
    n = store.spec.clip_samples
    for (_, rel), start in zip(words, starts_samples, strict=True):
        audio[start : start + n] += store.clip(rel)
    return float_to_int16(np.clip(audio, -1.0, 1.0))


def pick_stream_words(
    dataset: Dataset, partition: str, wanted_sequence: list[str], unknown_count: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """(ground-truth label, path) for each wanted word in order, plus ``unknown_count``
    unknown words inserted at random places; files from ``partition`` only, none twice
    unless the partition has too few."""
    pool = dataset.words[partition]
    wanted = set(dataset.labels[2:])
    unknown_words = sorted(w for w in pool if w not in wanted)
    used: set[str] = set()

    def pick(word: str) -> str:
        every = pool.get(word, [])
        if not every:
            raise DatasetError(f"the {partition} partition has no clips of {word!r}")
        candidates = [p for p in every if p not in used] or every  # reuse only when exhausted
        path = candidates[int(rng.integers(len(candidates)))]
        used.add(path)
        return path

    chosen = [(w, pick(w)) for w in wanted_sequence]
    for _ in range(unknown_count if unknown_words else 0):
        word = unknown_words[int(rng.integers(len(unknown_words)))]
        chosen.insert(int(rng.integers(len(chosen) + 1)), (UNKNOWN_LABEL, pick(word)))
    return chosen


def stream_scores(
    bundle: Bundle, audio: Int16Array, clip_stride_ms: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The scores ``kwsd stream`` computes over ``audio``: (window end times in ms, scores).

    Runs kwsd's own :class:`~kwsd.pipeline.Pipeline` (incremental front end, a window every
    ``clip_stride_ms``), so the features are the daemon's: for ``mfcc`` and a ``per_clip``
    ``micro`` front end (this tool's) they equal compute_features on each window; a
    ``continuous`` one adapts over the whole stream (noise reduction, PCAN), as it does on
    the device. Recorded once, the scores can then be smoothed under any number of
    settings (:func:`smooth`).
    """
    from kwsd.classifier import TfliteClassifier
    from kwsd.pipeline import Pipeline

    pipeline = Pipeline(
        bundle.frontend,
        TfliteClassifier(bundle),
        RecognizeCommands(bundle.labels, SmootherSettings()),  # unused: scores are taken as made
        clip_stride_ms,
    )
    times: list[int] = []
    scores: list[npt.NDArray[np.float32]] = []

    def keep(time_ms: int, window_scores: npt.NDArray[np.float32]) -> None:
        times.append(time_ms)
        scores.append(window_scores.copy())

    pipeline.on_scores = keep
    pipeline.feed(audio)
    return np.array(times, np.int64), np.array(scores, np.float32).reshape(-1, len(bundle.labels))


AVERAGE_WINDOWS_MS = (500, 750, 1000)
SUPPRESSIONS_MS = (500, 1000, 1500)
THRESHOLDS = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
CLIP_STRIDE_MS = 20
MINIMUM_COUNT = 3


def candidate_detection(
    spec: FrontendSpec, *, clip_stride_ms: int, average_window_ms: int, threshold: float, suppression_ms: int
) -> tuple[dict[str, Any], SmootherSettings]:
    """One setting of the tuning grid: as a bundle records it, and as kwsd stream resolves
    that recommendation (:func:`kwsd.detection.resolve_detection`, which validates it with
    :func:`~kwsd.detection.check_detection`, as reading and writing a bundle do)."""
    detection = {
        "rule": "tf",
        "clip_stride_ms": clip_stride_ms,
        "average_window_ms": average_window_ms,
        "threshold": threshold,
        "suppression_ms": suppression_ms,
        "minimum_count": MINIMUM_COUNT,
    }
    settings, _ = resolve_detection(detection, {}, window_stride_ms=spec.window_stride_ms)
    return detection, settings


def tune_detection(
    times_ms: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    truth: list[tuple[str, float]],
    labels: Sequence[str],
    spec: FrontendSpec,
    *,
    clip_stride_ms: int = CLIP_STRIDE_MS,
) -> tuple[dict[str, Any], StreamScore]:
    """Pick smoother settings on a tuning stream (scores recorded every ``clip_stride_ms``
    by :func:`stream_scores`): the best merit (correct - wrong - false positives); among
    equals, the setting whose threshold sits in the middle of the widest run of equally
    good thresholds (most margin), then the shorter window. Every setting is scored by
    running kwsd's RecognizeCommands over the recorded scores."""
    best: tuple[Any, ...] | None = None
    grid: list[str] = []
    for window in AVERAGE_WINDOWS_MS:
        for suppression in SUPPRESSIONS_MS:
            candidates = [
                candidate_detection(
                    spec,
                    clip_stride_ms=clip_stride_ms,
                    average_window_ms=window,
                    threshold=t,
                    suppression_ms=suppression,
                )
                for t in THRESHOLDS
            ]
            results = [
                score_stream(smooth(times_ms, scores, labels, settings), truth, spec)
                for _, settings in candidates
            ]
            merits = [r.merit for r in results]
            peak = max(merits)
            run_start, run_len, i = 0, 0, 0
            while i < len(merits):  # widest run of thresholds at the peak
                if merits[i] == peak:
                    j = i
                    while j + 1 < len(merits) and merits[j + 1] == peak:
                        j += 1
                    if j - i + 1 > run_len:
                        run_start, run_len = i, j - i + 1
                    i = j + 1
                else:
                    i += 1
            middle = run_start + (run_len - 1) // 2
            grid.append(
                f"window {window} ms, suppression {suppression} ms: best merit {peak}/"
                f"{len(truth)} for thresholds {THRESHOLDS[run_start]:.2f}.."
                f"{THRESHOLDS[run_start + run_len - 1]:.2f}"
            )
            key = (peak, run_len, -window, -abs(suppression - 1000))
            if best is None or key > best[0]:
                best = (key, candidates[middle][0], results[middle])
    assert best is not None
    log.info("smoother grid (merit = correct - wrong - false positives):\n  %s", "\n  ".join(grid))
    _, detection, result = best
    return detection, result


def argmax_runs(
    times_ms: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    labels: Sequence[str],
    min_windows: int = 3,
) -> list[tuple[str, int, int, float]]:
    """Runs of >= ``min_windows`` windows whose top label is not silence:
    (label, first window's end ms, last window's end ms, peak score)."""
    top = np.argmax(scores, axis=1)
    runs: list[tuple[str, int, int, float]] = []
    i = 0
    while i < len(top):
        j = i
        while j + 1 < len(top) and top[j + 1] == top[i]:
            j += 1
        if labels[top[i]] != SILENCE_LABEL and j - i + 1 >= min_windows:
            runs.append(
                (labels[top[i]], int(times_ms[i]), int(times_ms[j]), float(scores[i : j + 1, top[i]].max()))
            )
        i = j + 1
    return runs


def stream_plan(
    count: int,
    rng: np.random.Generator,
    *,
    sample_rate_hz: int,
    clip_ms: int,
    lead_ms: int,
    gap_ms: tuple[int, int],
) -> tuple[list[int], int]:
    """Clip start samples with gaps (clip end to next clip start) uniform in ``gap_ms``."""
    starts: list[int] = []
    t_ms = float(lead_ms)
    for _ in range(count):
        starts.append(round(t_ms * sample_rate_hz / 1000))
        t_ms += clip_ms + rng.uniform(*gap_ms)
    total = starts[-1] + round((clip_ms + lead_ms) * sample_rate_hz / 1000)
    return starts, total


# --------------------------------------------------------------------------------------
# The whole run.


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's own chatter (SavedModel asset notes, a shuffle hint that does not
    apply: the tf.data pipeline shuffles) out of the progress log."""
    import warnings

    warnings.filterwarnings("ignore", message=".*shuffle=True.*was passed.*")
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected.*")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


def prepare_data(settings: Settings, data_dir: Path | None, work_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Step 1: the data folder, synthesised unless given; plus its description."""
    if data_dir is not None:
        return data_dir, {"source": str(data_dir)}
    import synth  # tools/synth.py, next to this file

    out = work_dir / "data"
    wanted_summary = {
        "seed": settings.seed,
        "words": list(settings.wanted_words),
        "unknown_words": list(settings.unknown_words),
        "repetitions": settings.repetitions,
    }
    existing = out / "voices.json"
    if existing.exists():
        previous = json.loads(existing.read_text())
        if (
            all(previous.get(k) == v for k, v in wanted_summary.items())
            and len(previous.get("voices", [])) == settings.voices
        ):
            log.info("step 1: reusing the synthetic data set in %s", out)
            return out, _synth_description(previous)
        raise DatasetError(
            f"{out}: holds a different synthetic data set; remove it or use another --work_dir"
        )
    log.info(
        "step 1: synthesising %d voices x %d words x %d repetitions with espeak-ng + sox",
        settings.voices,
        len(settings.wanted_words) + len(settings.unknown_words),
        settings.repetitions,
    )
    summary = synth.synthesise(
        out,
        settings.wanted_words,
        settings.unknown_words,
        voice_count=settings.voices,
        repetitions=settings.repetitions,
        seed=settings.seed,
        jobs=2,
    )
    return out, _synth_description(summary)


def _synth_description(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "synthetic",
        "generator": summary["generator"],
        "synth_seed": summary["seed"],
        "unknown_words": summary["unknown_words"],
        "repetitions": summary["repetitions"],
        "voices": len(summary["voices"]),
    }


def run(
    settings: Settings,
    out_dir: Path,
    data_dir: Path | None,
    work_dir: Path,
    *,
    bare_tflite: Path | None = None,
) -> dict[str, Any]:
    """The whole run; ``bare_tflite``: also write the int8 model alone there, with a
    flattened [1, frames * features] input (then both exported models take that input)
    and ``<stem>_labels.txt`` beside it."""
    started = time.monotonic()
    spec = frontend_for(settings)
    flat_input = bare_tflite is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir, description = prepare_data(settings, data_dir, work_dir)

    # Step 2: split.
    rng = np.random.default_rng([settings.seed, 2])
    data_settings = DatasetSettings(
        sample_rate_hz=spec.sample_rate_hz,
        clip_duration_ms=spec.clip_duration_ms,
        wanted_words=settings.wanted_words,
        silence_percentage=settings.silence_percentage,
        unknown_percentage=settings.unknown_percentage,
        validation_percentage=settings.validation_percentage,
        testing_percentage=settings.testing_percentage,
    )
    data = load_dataset(data_dir, data_settings, seed=rng)  # every file checked, clips read once
    labels = data.labels
    log.info("step 2: files checked:\n  %s", "\n  ".join(data.report.lines()))
    voices_per_partition = {
        p: len({speaker_of(path) for paths in data.words[p].values() for path in paths}) for p in PARTITIONS
    }
    # For a given --data_dir, describe what the load found (synth describes its own).
    all_words = {w for p in PARTITIONS for w in data.words[p]}
    description.setdefault("unknown_words", sorted(all_words - set(settings.wanted_words)))
    description.setdefault("voices", sum(voices_per_partition.values()))
    clips_per_partition: dict[str, dict[str, int]] = {}
    for p in PARTITIONS:
        counts = {label: sum(1 for it in data.items[p] if it.label == label) for label in labels}
        counts["total"] = len(data.items[p])
        clips_per_partition[p] = counts
        log.info(
            "step 2: %-10s %4d items from %3d voices: %s",
            p,
            counts["total"],
            voices_per_partition[p],
            ", ".join(f"{k} {v}" for k, v in counts.items() if k != "total"),
        )
    store = AudioStore(data, spec)
    if not store.noise:
        log.warning(
            "step 2: %s has no background noise: no noise augmentation, silence is digital zero",
            data_dir / BACKGROUND_NOISE_DIR,
        )

    # Step 3: features (augmented audio for training).
    t3 = time.monotonic()
    train_recipes = [
        make_recipe(item, store, settings, rng, augment=True)
        for _ in range(settings.augment_copies)
        for item in data.items["training"]
    ]
    val_recipes = [
        make_recipe(item, store, settings, rng, augment=False) for item in data.items["validation"]
    ]
    test_recipes = [make_recipe(item, store, settings, rng, augment=False) for item in data.items["testing"]]
    x_train = features_for(train_recipes, store)
    x_val = features_for(val_recipes, store)
    x_test = features_for(test_recipes, store)
    y_train = np.array([r.label_index for r in train_recipes], np.int64)
    y_val = np.array([r.label_index for r in val_recipes], np.int64)
    y_test = np.array([r.label_index for r in test_recipes], np.int64)
    log.info(
        "step 3: features %s for %d training inputs (%d augmented copies), %d validation, %d test, in %.1f s",
        "x".join(map(str, spec.feature_shape)),
        len(x_train),
        settings.augment_copies,
        len(x_val),
        len(x_test),
        time.monotonic() - t3,
    )
    (work_dir / "test_items.json").write_text(
        json.dumps(
            {
                "data_dir": str(data_dir),
                "labels": labels,
                "items": [{"label": labels[r.label_index], **asdict(r)} for r in test_recipes],
            },
            indent=1,
        )
        + "\n"
    )

    # Step 4: train.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    _quiet_tensorflow()

    tf.keras.utils.set_random_seed(settings.seed)
    flat = x_train.reshape(-1, spec.feature_count)
    mean, variance = flat.mean(axis=0), flat.var(axis=0)
    model = build_model(tf, settings, spec, label_count=len(labels), mean=mean, variance=variance)
    parameters = int(model.count_params())
    architecture = architecture_text(settings, spec, flat_input=flat_input)
    log.info("step 4: %s; %d parameters", architecture, parameters)
    training = train_model(
        tf, model, settings, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, labels=labels
    )
    training.update({"architecture": architecture, "parameters": parameters})

    # Step 5: export.
    t5 = time.monotonic()
    pick = np.random.default_rng([settings.seed, 5]).permutation(len(x_train))
    representative = x_train[pick[: settings.representative_count]]
    serving = build_model(
        tf,
        settings,
        spec,
        label_count=len(labels),
        mean=mean,
        variance=variance,
        batch_size=1,
        flat_input=flat_input,
    )
    serving.set_weights(model.get_weights())
    float_tflite, int8_tflite = export_tflite(tf, serving, representative)
    (work_dir / "model_float.tflite").write_bytes(float_tflite)
    (work_dir / "model_int8.tflite").write_bytes(int8_tflite)
    log.info(
        "step 5: exported float32 (%d bytes) and int8 (%d bytes) in %.1f s",
        len(float_tflite),
        len(int8_tflite),
        time.monotonic() - t5,
    )
    bare: dict[str, Any] | None = None
    if bare_tflite is not None:
        bare = write_bare_tflite(int8_tflite, labels, bare_tflite)
        log.info(
            "step 5: wrote %s (int8, input [1,%d]) and %s",
            bare["tflite"],
            spec.feature_count * spec.frame_count,
            bare["labels_file"],
        )

    # Steps 6-7: evaluate through kwsd, tune the smoother on validation voices.
    created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    dataset = {
        **description,
        "words": list(settings.wanted_words),
        "seed": settings.seed,
        "split": {
            "rule": "speech_commands which_set (SHA-1 of the name before _nohash_)",
            "validation_percentage": settings.validation_percentage,
            "testing_percentage": settings.testing_percentage,
        },
        "silence_percentage": settings.silence_percentage,
        "unknown_percentage": settings.unknown_percentage,
        "voices_per_partition": voices_per_partition,
        "clips_per_partition": clips_per_partition,
        "augmentation": {
            "copies_per_training_item": settings.augment_copies,
            "background_frequency": settings.background_frequency,
            "background_volume": settings.background_volume,
            "time_shift_ms": settings.time_shift_ms,
        },
        "training": training,
    }
    tune_rng = np.random.default_rng([settings.seed, 7])
    tune_sequence = [
        settings.wanted_words[int(tune_rng.integers(len(settings.wanted_words)))]
        for _ in range(settings.tuning_words - round(0.3 * settings.tuning_words))
    ]
    tune_words = pick_stream_words(
        data, "validation", tune_sequence, round(0.3 * settings.tuning_words), tune_rng
    )
    # The reference generator's timing: one word per 3000 ms slot, start uniform in its
    # first 2000 ms; noise volume up to 0.1.
    tune_starts = [
        round((3000 * k + tune_rng.uniform(0, 2000)) * spec.sample_rate_hz / 1000)
        for k in range(len(tune_words))
    ]
    tune_noise = sorted(store.noise)[int(tune_rng.integers(len(store.noise)))] if store.noise else None
    tune_audio = build_stream(
        store,
        tune_words,
        tune_starts,
        total_samples=(3000 * len(tune_words) + 1000) * spec.sample_rate_hz // 1000,
        noise=tune_noise,
        noise_volume=float(tune_rng.uniform(0.02, settings.background_volume)),
    )
    tune_truth = [
        (label, s * 1000 / spec.sample_rate_hz) for (label, _), s in zip(tune_words, tune_starts, strict=True)
    ]

    bundles: dict[str, Bundle] = {}
    results: dict[str, dict[str, Any]] = {}
    for kind, tflite in (("int8", int8_tflite), ("float", float_tflite)):
        name = "demo" if kind == "int8" else "demo-float"
        draft = make_bundle(tflite, labels, spec, name=name, tool=TOOL_NAME, created=created)
        val_pred = classify_all(draft, x_val)
        test_pred = classify_all(draft, x_test)
        metrics = {
            "test_accuracy": float(np.mean(test_pred == y_test)),
            "test_count": len(y_test),
            "validation_accuracy": float(np.mean(val_pred == y_val)),
            "validation_count": len(y_val),
        }
        log.info(
            "step 6: %s model through kwsd's TfliteClassifier: validation accuracy %.1f%% "
            "(N=%d), test accuracy %.1f%% (N=%d); test confusion matrix:\n%s",
            kind,
            100 * metrics["validation_accuracy"],
            len(y_val),
            100 * metrics["test_accuracy"],
            len(y_test),
            confusion_text(confusion(y_test, test_pred, len(labels)), labels),
        )
        times_ms, scores = stream_scores(draft, tune_audio, CLIP_STRIDE_MS)
        detection, tune_result = tune_detection(
            times_ms, scores, tune_truth, labels, spec, clip_stride_ms=CLIP_STRIDE_MS
        )
        log.info(
            "step 7: %s model, smoother settings %s on a %.0f s validation-voice stream: %s",
            kind,
            detection,
            len(tune_audio) / spec.sample_rate_hz,
            tune_result.text(),
        )
        bundles[kind] = make_bundle(
            tflite,
            labels,
            spec,
            name=name,
            tool=TOOL_NAME,
            dataset=dataset,
            metrics=metrics,
            detection=detection,
            created=created,
        )
        results[kind] = {"metrics": metrics, "detection": detection, "tuning_stream": tune_result.text()}

    # Step 8: bundles, demo WAV and its ground truth.
    int8_path = write_bundle(bundles["int8"], out_dir / "demo.kwsd")
    float_path = write_bundle(bundles["float"], out_dir / "demo-float.kwsd")
    demo_rng = np.random.default_rng([settings.seed, 8])
    demo_sequence = [
        settings.wanted_words[i]
        for i in demo_rng.permutation(np.tile(np.arange(len(settings.wanted_words)), 2))
    ]
    demo_words = pick_stream_words(data, "testing", demo_sequence, 2, demo_rng)
    starts, total = stream_plan(
        len(demo_words),
        demo_rng,
        sample_rate_hz=spec.sample_rate_hz,
        clip_ms=spec.clip_duration_ms,
        lead_ms=500,
        gap_ms=(1500, 2500),
    )
    demo_noise = "pink_noise.wav" if "pink_noise.wav" in store.noise else tune_noise
    demo_audio = build_stream(
        store,
        demo_words,
        starts,
        total_samples=total,
        noise=demo_noise,
        noise_volume=settings.demo_background_volume,
    )
    demo_truth = [
        (label, s * 1000 / spec.sample_rate_hz) for (label, _), s in zip(demo_words, starts, strict=True)
    ]
    write_wav(out_dir / "demo.wav", demo_audio, spec.sample_rate_hz)
    (out_dir / "demo.txt").write_text("".join(f"{label}, {t:f}\n" for label, t in demo_truth))
    log.info(
        "step 8: demo.wav %.1f s, %d words from test voices: %s",
        len(demo_audio) / spec.sample_rate_hz,
        len(demo_words),
        ", ".join(
            f"{label} ({speaker_of(path)}) at {s * 1000 / spec.sample_rate_hz:.0f} ms"
            for (label, path), s in zip(demo_words, starts, strict=True)
        ),
    )

    # Sanity check: the int8 model over demo.wav, sliding windows and the chosen smoother,
    # as kwsd stream runs them with the bundle's recommendation.
    smoother_settings, clip_stride_ms = resolve_detection(
        bundles["int8"].detection, {}, window_stride_ms=spec.window_stride_ms
    )
    times_ms, scores = stream_scores(bundles["int8"], demo_audio, clip_stride_ms)
    runs = argmax_runs(times_ms, scores, labels)
    detections = smooth(times_ms, scores, labels, smoother_settings)
    demo_result = score_stream(detections, demo_truth, spec)
    log.info(
        "demo.wav, int8 model, argmax of sliding windows every %d ms (runs of >= 3 windows; "
        "times = window end, as kwsd stream stamps them: a window ends %g ms after the clip "
        "start demo.txt gives):\n%s",
        clip_stride_ms,
        -clip_start_ms(spec, 0),
        "\n".join(f"  {label:>10} {a:6d}..{b:6d} ms  peak {peak:.2f}" for label, a, b, peak in runs),
    )
    log.info(
        "demo.wav, int8 model + smoother %s: detections (label, window end ms, score) %s; %s",
        bundles["int8"].detection,
        [(d.label, d.time_ms, round(d.score, 2)) for d in detections],
        demo_result.text(),
    )

    summary = {
        "labels": labels,
        "int8": {
            **results["int8"],
            "bundle_bytes": int8_path.stat().st_size,
            "tflite_bytes": len(int8_tflite),
        },
        "float": {
            **results["float"],
            "bundle_bytes": float_path.stat().st_size,
            "tflite_bytes": len(float_tflite),
        },
        "parameters": parameters,
        "architecture": training["architecture"],
        "bare_tflite": bare,
        "demo_wav": {
            "seconds": len(demo_audio) / spec.sample_rate_hz,
            "bytes": (out_dir / "demo.wav").stat().st_size,
            "truth": demo_truth,
            "detections": [d.to_dict() for d in detections],  # as kwsd stream prints them
            "score": demo_result.text(),
            "argmax_runs": runs,
        },
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    (work_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _word_list(text: str) -> tuple[str, ...]:
    words = tuple(w.strip().lower() for w in text.split(",") if w.strip())
    if not words:
        raise argparse.ArgumentTypeError("expected a comma-separated list of words")
    return words


def _pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    try:
        frames, features = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two integers FRAMES,FEATURES, got {text!r}") from None
    if frames < 1 or features < 1:
        raise argparse.ArgumentTypeError(f"expected sizes of at least 1, got {text!r}")
    return frames, features


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="where demo.kwsd, demo-float.kwsd, demo.wav and demo.txt go"
    )
    parser.add_argument(
        "--data_dir",
        type=Path,
        help="a Speech Commands-style folder "
        "(default: synthesise one with tools/synth.py in the work folder)",
    )
    parser.add_argument(
        "--work_dir", type=Path, help="intermediate files (default: a temporary folder, removed at the end)"
    )
    parser.add_argument("--wanted_words", type=_word_list, default=defaults.wanted_words)
    parser.add_argument(
        "--unknown_words",
        type=_word_list,
        default=defaults.unknown_words,
        help="words synthesised for the _unknown_ class",
    )
    parser.add_argument(
        "--voices",
        type=int,
        default=None,
        help=f"synthetic voices (default {defaults.voices}, quick {QUICK['voices']})",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--epochs", type=int, help=f"passes over the augmented training set (default {defaults.epochs})"
    )
    group.add_argument("--steps", type=int, help="training steps (batches) instead of --epochs")
    parser.add_argument(
        "--augment_copies",
        type=int,
        help=f"augmented copies per training item (default {defaults.augment_copies})",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--preprocess",
        choices=[FrontendKind.MFCC.value, FrontendKind.MICRO.value],
        help="front end: mfcc (the demo's 49x13 MFCC, default) or micro (micro_speech's "
        "TFLite Micro features, 30/20 ms window/stride, 49x40)",
    )
    parser.add_argument(
        "--model_architecture",
        choices=[a.value for a in Architecture],
        help="ds_cnn (the demo model, default) or tiny_conv (train.py's, as micro_speech uses)",
    )
    parser.add_argument(
        "--bare_tflite",
        type=Path,
        metavar="PATH",
        help="also write the int8 model alone to PATH, with a flattened [1, frames*features] "
        "input like micro_speech's, and PATH's <stem>_labels.txt beside it (one label per line)",
    )
    arch = parser.add_argument_group("DS-CNN size (the demo model's architecture)")
    arch.add_argument(
        "--channels", type=int, help=f"channels of every conv layer (default {defaults.channels})"
    )
    arch.add_argument(
        "--ds_blocks",
        type=int,
        help=f"depthwise-separable blocks after the first conv (default {defaults.ds_blocks})",
    )
    arch.add_argument(
        "--first_kernel",
        type=_pair,
        metavar="FRAMES,FEATURES",
        help="kernel of the first conv (default "
        f"{','.join(map(str, defaults.first_kernel))}; FRAMES,13 with --first_stride N,13 on "
        "the 13 MFCCs makes a temporal CNN)",
    )
    arch.add_argument(
        "--first_stride",
        type=_pair,
        metavar="FRAMES,FEATURES",
        help="stride of the first conv over frames and features "
        f"(default {','.join(map(str, defaults.first_stride))})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run for the test suite (few voices, few steps)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # kwsd's reader logs each file it resamples; step 3 reports them all in one line instead.
    logging.getLogger("kwsd.audio").setLevel(logging.WARNING)

    settings = replace(defaults, **QUICK) if args.quick else defaults
    overrides: dict[str, Any] = {
        "wanted_words": args.wanted_words,
        "unknown_words": args.unknown_words,
        "seed": args.seed,
    }
    for key in (
        "voices",
        "epochs",
        "steps",
        "augment_copies",
        "channels",
        "ds_blocks",
        "first_kernel",
        "first_stride",
    ):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.preprocess is not None:
        overrides["preprocess"] = FrontendKind(args.preprocess)
    if args.model_architecture is not None:
        overrides["model_architecture"] = Architecture(args.model_architecture)
    if args.epochs is not None:
        overrides["steps"] = None
    settings = replace(settings, **overrides)

    temporary = None
    if args.work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="kwsd_train_")
        work_dir = Path(temporary.name)
    else:
        work_dir = args.work_dir
    try:
        summary = run(settings, args.out, args.data_dir, work_dir, bare_tflite=args.bare_tflite)
    except KwsdError as err:
        print(f"train_demo: error: {err}", file=sys.stderr)
        return 1
    finally:
        if temporary is not None:
            temporary.cleanup()
    print(f"labels: {', '.join(summary['labels'])}")
    print(f"model: {summary['architecture']}; {summary['parameters']} parameters")
    for kind in ("float", "int8"):
        s = summary[kind]
        print(
            f"{kind:>5}: test accuracy {100 * s['metrics']['test_accuracy']:.2f}% "
            f"(N={s['metrics']['test_count']}), validation accuracy "
            f"{100 * s['metrics']['validation_accuracy']:.2f}%, bundle {s['bundle_bytes']} bytes "
            f"(tflite {s['tflite_bytes']}), detection {s['detection']}"
        )
    if summary["bare_tflite"] is not None:
        bare = summary["bare_tflite"]
        print(f"bare int8 model: {bare['tflite']} ({bare['bytes']} bytes), labels {bare['labels_file']}")
    demo = summary["demo_wav"]
    print(f"demo.wav: {demo['seconds']:.1f} s, {demo['bytes']} bytes; int8 + smoother: {demo['score']}")
    print(f"elapsed: {summary['elapsed_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
