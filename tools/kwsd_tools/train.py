#!/usr/bin/env python3
"""Train a keyword model with TensorFlow speech_commands' train.py flags, on kwsd's front end.

The tutorial's commands work with the script's name changed:

    python tools/train.py --data_dir=/tmp/speech_dataset --wanted_words=yes,no \\
        --how_many_training_steps=15000,3000 --learning_rate=0.001,0.0001

What happens, in order (each step says what it did):

1. data: ``--data_url`` is downloaded and extracted into ``--data_dir`` once (empty: local data
   only); every file is checked (rate, channels, encoding, length, readability) and a report
   says what was converted or refused and why. A folder of reviewed kwsd captures (``kwsd
   review``'s ``reviewed/``) is a source of its own kind: every clip, cut to the window the
   model heard, all training, given beside a data set with held-out clips
   (tools/kwsd_tools/training/sources.py);
2. features: kwsd's own front end (the daemon's code) on every clip, augmented training
   copies included (see tools/kwsd_tools/training/features.py), cached under ``--train_dir``;
3. training: train.py's schedule, per-step line, confusion matrices with label names,
   checkpoints, ``--start_checkpoint`` resume and TensorBoard logs in ``--summaries_dir``;
   ``--fine_tune_from`` starts from another run's weights (a checkpoint, or a bundle made by
   tools/export.py) instead of random ones: its optimizer and step are not taken, this run's
   schedule runs from step 1 (e.g. ``--how_many_training_steps 200 --learning_rate 0.0005``);
4. export into ``--model_dir``: ``<arch>.kwsd`` (int8) and ``<arch>-float.kwsd`` with their
   test accuracy measured by the TFLite interpreter, the bare .tflite files, labels and a C
   array for TFLite Micro (``tools/export.py`` does this step alone from any checkpoint).

Differences from train.py, on purpose: the default architecture is ``ds_cnn`` (a Pi-sized
model that trains in minutes; ``--model_architecture=conv`` gives train.py's default), the
default optimizer is Adam (``--optimizer=gradient_descent`` gives train.py's), ``--preprocess
average`` is not offered (kwsd's daemon computes ``mfcc`` or ``micro`` only), and
``--quantize`` is accepted for compatibility but not needed: the int8 model is always made,
by post-training quantization with real training features.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kwsd.blas import use_one_blas_thread
from kwsd.embedding import OPENWAKEWORD_TERMS
from kwsd.errors import KwsdError
from kwsd.frontend import FrontendKind, FrontendSpec, MfccParams, MicroParams, MicroState, SpecError
from kwsd_tools.training.augment import AugmentSettingError, SpecAugment
from kwsd_tools.training.features import Augmentation, FeatureSet
from kwsd_tools.training.sources import ATTRIBUTION_FILE
from kwsd_tools.training.trainer import (
    FineTuneBase,
    RunSettings,
    Schedule,
    TrainingError,
    check_identity,
    fine_tune_base,
    fine_tune_conflict,
    read_checkpoint_identity,
)

if TYPE_CHECKING:
    from kwsd_tools.training.augment import AugmentAssets
    from kwsd_tools.training.dataset import Dataset, DatasetSettings
    from kwsd_tools.training.sources import DataSource

log = logging.getLogger("train")

TOOL_NAME = "tools/train.py"
DEFAULT_DATA_URL = "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
SPEECH_COMMANDS_URLS = (
    DEFAULT_DATA_URL,
    "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
)
#: Written beside Speech Commands when train.py's own URL downloads it (the data set's terms).
SPEECH_COMMANDS_ATTRIBUTION = (
    "Speech Commands by Pete Warden (Google), Creative Commons BY 4.0 "
    '(https://creativecommons.org/licenses/by/4.0/). P. Warden, "Speech Commands: A Dataset for '
    'Limited-Vocabulary Speech Recognition", arXiv:1804.03209, 2018.'
)
EXIT_BAD_FLAG = 64
EXIT_BAD_DATA = 65
EXIT_TRAINING_FAILED = 1


def frontend_for(args: argparse.Namespace) -> FrontendSpec:
    """The front end the flags describe (``--preprocess``, rate, clip, window, feature bins)."""
    kind = FrontendKind(args.preprocess)
    if kind is FrontendKind.EMBEDDING:
        return embedding_frontend(args)
    if args.feature_models is not None:
        raise TrainingError("--feature_models: only --preprocess embedding reads feature models")
    try:
        if kind is FrontendKind.MICRO:
            # train.py passes --feature_bin_count as the op's num_channels; features start
            # fresh on every clip, and so will the daemon's (per_clip).
            return FrontendSpec(
                FrontendKind.MICRO,
                sample_rate_hz=args.sample_rate,
                clip_duration_ms=args.clip_duration_ms,
                window_size_ms=args.window_size_ms,
                window_stride_ms=args.window_stride_ms,
                micro=MicroParams(channel_count=args.feature_bin_count, state=MicroState.PER_CLIP),
            )
        window_samples = args.sample_rate * args.window_size_ms // 1000
        mfcc = MfccParams(
            filter_count=max(40, args.feature_bin_count),
            cepstrum_count=args.feature_bin_count,
            fft_size=max(512, 1 << max(0, window_samples - 1).bit_length()),
            high_freq_hz=min(7600.0, args.sample_rate / 2),
        )
        return FrontendSpec(
            FrontendKind.MFCC,
            sample_rate_hz=args.sample_rate,
            clip_duration_ms=args.clip_duration_ms,
            window_size_ms=args.window_size_ms,
            window_stride_ms=args.window_stride_ms,
            mfcc=mfcc,
        )
    except SpecError as err:
        step_ms = 1000 // math.gcd(args.sample_rate, 1000)
        hint = ""
        if "whole number of samples" in str(err) and step_ms > 1:
            hint = (
                f"; at {args.sample_rate} Hz use multiples of {step_ms} ms, e.g. "
                f"--window_size_ms={2 * step_ms} --window_stride_ms={step_ms}"
            )
        raise TrainingError(f"front end flags: {err}{hint}") from None


#: Flags whose values the embedding's feature models fix (flag, argparse default).
EMBEDDING_FIXED_FLAGS = (
    ("clip_duration_ms", 1000),
    ("window_size_ms", 30),
    ("window_stride_ms", 10),
    ("feature_bin_count", 40),
)


def embedding_frontend(args: argparse.Namespace) -> FrontendSpec:
    """``--preprocess embedding``: openWakeWord's feature models in ``--feature_models``, whose
    window (2 s: 16 embeddings of 96 values, one every 80 ms) the front-end flags cannot change."""
    from kwsd.embedding import openwakeword_spec
    from kwsd.errors import InputNotFoundError
    from kwsd.errors import ModelError as FeatureModelError

    if args.feature_models is None:
        raise TrainingError(
            "--preprocess embedding: give --feature_models, the folder with openWakeWord's "
            "melspectrogram.tflite and embedding_model.tflite (README, 'A front end that has heard "
            "many people')"
        )
    for flag, default in EMBEDDING_FIXED_FLAGS:
        if getattr(args, flag) != default:
            raise TrainingError(
                f"--{flag}: the embedding's feature models fix the window (2000 ms clip, 790/80 ms "
                f"embeddings of 96 values); leave --{flag} out, got {getattr(args, flag)}"
            )
    if args.sample_rate != 16000:
        raise TrainingError(
            f"--sample_rate: the embedding's feature models take 16000 Hz, got {args.sample_rate}"
        )
    try:
        return openwakeword_spec(Path(args.feature_models))
    except (InputNotFoundError, FeatureModelError, SpecError) as err:
        raise TrainingError(f"--feature_models: {err}") from None


def run(args: argparse.Namespace) -> int:
    from kwsd_tools.training import dataset as data
    from kwsd_tools.training import models

    schedule = Schedule.parse(args.how_many_training_steps, args.learning_rate)
    if args.model_architecture not in models.ARCHITECTURES:
        raise TrainingError(
            f"--model_architecture: unknown {args.model_architecture!r}; "
            f"expected one of {', '.join(models.ARCHITECTURES)}"
        )
    spec = frontend_for(args)
    augmentation, spec_augment = augmentation_from_args(args)
    sources = data_sources_from_args(args)
    wanted = tuple(w.strip().lower() for w in args.wanted_words.split(",") if w.strip())
    if not wanted:
        raise TrainingError("--wanted_words: expected at least one word")
    options = json.loads(args.model_options) if args.model_options else {}
    # The base of a fine-tuning run, checked before any data is read.
    base, fine_tuned_from = starting_point(args, run_identity(args, spec, wanted, options))
    settings = data.DatasetSettings(
        sample_rate_hz=spec.sample_rate_hz,
        clip_duration_ms=spec.clip_duration_ms,
        align_end=spec.kind is FrontendKind.EMBEDDING,
        wanted_words=wanted,
        silence_percentage=args.silence_percentage,
        unknown_percentage=args.unknown_percentage,
        validation_percentage=args.validation_percentage,
        testing_percentage=args.testing_percentage,
        resample=not args.no_resample,
        skip_bad_files=args.skip_bad_files,
    )
    data_dir = sources[0].data_dir
    train_dir = Path(args.train_dir)
    started = time.monotonic()
    # The user's impulse responses and noise are read (and refused) before anything is
    # downloaded or written.
    assets = augmentation_assets(augmentation, settings, seed=args.seed)

    # 1. data
    if args.data_url:
        try:
            data.download_and_extract(args.data_url, data_dir)
        except data.DatasetError as err:
            held = _label_folders(data_dir)
            if not held:
                raise
            # train.py downloads unless the archive is there; a folder of clips is not enough.
            raise data.DatasetError(
                f"{err}; {data_dir} already holds {len(held)} label folders with WAVs "
                f"({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}): add --data_url= to train "
                "on them without downloading"
            ) from None
        if args.data_url in SPEECH_COMMANDS_URLS and not (data_dir / ATTRIBUTION_FILE).exists():
            (data_dir / ATTRIBUTION_FILE).write_text(SPEECH_COMMANDS_ATTRIBUTION + "\n")
    datasets = load_data_sources(sources, settings, seed=args.seed)
    labels = list(datasets[0].labels)
    attributions = {s.name: s.attribution() for s in sources}
    for name, text in attributions.items():
        if text:
            print(f"data: {name}: {ATTRIBUTION_FILE} recorded in the bundles", file=sys.stderr)

    # 2. features
    feature_sets = source_features(
        datasets, sources, spec, args, augmentation=augmentation, assets=assets, cache=train_dir / "features"
    )
    print(
        f"features: {spec.describe()}; training pool {len(feature_sets['training'])} "
        f"({args.augment_copies} augmented copies per item) [{time.monotonic() - started:.0f} s]",
        file=sys.stderr,
    )

    # 3. training
    import tensorflow as tf

    # One seed for Python, numpy and TensorFlow, and deterministic kernels: the same run twice
    # gives the same step lines and the same weights.
    tf.keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    frames, features = spec.feature_shape
    model = models.build_model(
        args.model_architecture,
        frames=frames,
        features=features,
        label_count=len(labels),
        dropout=args.dropout,
        options=options,
    )
    print(f"model: {models.describe(model)}", file=sys.stderr)
    identity = run_identity(args, spec, wanted, options)
    if base is not None:
        print(
            f"fine-tune: from {base.describe()}: its weights only (a new optimizer), steps 1 to "
            f"{schedule.total} at --learning_rate {args.learning_rate}",
            file=sys.stderr,
        )
    run_settings = RunSettings(
        architecture=args.model_architecture,
        labels=tuple(labels),
        schedule=schedule,
        batch_size=args.batch_size,
        eval_step_interval=args.eval_step_interval,
        save_step_interval=args.save_step_interval,
        optimizer=args.optimizer,
        seed=args.seed,
        check_nans=args.check_nans,
        log_every=args.log_every,
        every_step=args.verbosity == "DEBUG",
        identity=identity,
        record={
            "data": {
                "data_dir": str(data_dir.resolve()),
                "data_url": args.data_url,
                "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(settings).items()},
                "augmentation": vars(augmentation),
                "augment_copies": args.augment_copies,
                "seed": args.seed,
                "sources": [
                    {"name": s.name, "data_dir": str(s.data_dir.resolve()), "weight": s.weight}
                    for s in sources
                ],
                "spec_augment": vars(spec_augment),
            },
            **({"fine_tuned_from": fine_tuned_from} if fine_tuned_from else {}),
        },
        spec_augment=spec_augment,
    )
    from kwsd_tools.training.trainer import train

    result = train(
        model,
        run_settings,
        training=feature_sets["training"],
        validation=feature_sets["validation"],
        testing=feature_sets["testing"],
        train_dir=train_dir,
        summaries_dir=Path(args.summaries_dir) if args.summaries_dir else None,
        start_checkpoint=Path(args.start_checkpoint) if args.start_checkpoint else None,
        fine_tune=base,
    )
    print(
        f"training: steps to {result.last_step} in {result.seconds:.0f} s "
        f"({result.steps_per_second:.1f} steps/s); checkpoint {result.checkpoint}",
        file=sys.stderr,
    )
    if args.no_export:
        return 0

    # 4. export
    from kwsd_tools.training.export import export_bundles
    from kwsd_tools.training.trainer import breakdown_metrics

    training = feature_sets["training"]
    pick = np.random.default_rng(args.seed).permutation(len(training))[: args.representative_count]
    exported = export_bundles(
        model,
        name=args.model_architecture,
        labels=labels,
        spec=spec,
        representative=training.x[pick],
        test_x=feature_sets["testing"].x,
        test_y=feature_sets["testing"].y,
        test_source=feature_sets["testing"].source,
        source_names=feature_sets["testing"].source_names,
        out_dir=Path(args.model_dir),
        tool=TOOL_NAME,
        dataset={
            "data_dir": str(data_dir),
            "data_url": args.data_url,
            # Where its trainable weights are: --fine_tune_from takes this bundle for them.
            "checkpoint": str(result.checkpoint.resolve()),
            **({"fine_tuned_from": fine_tuned_from} if fine_tuned_from else {}),
            "items": {p: sum(len(d.items[p]) for d in datasets) for p in data.PARTITIONS},
            "seed": args.seed,
            **({"feature_models": OPENWAKEWORD_TERMS} if spec.kind is FrontendKind.EMBEDDING else {}),
            "split": {
                "validation_percentage": settings.validation_percentage,
                "testing_percentage": settings.testing_percentage,
                "silence_percentage": settings.silence_percentage,
                "unknown_percentage": settings.unknown_percentage,
            },
            "sources": {
                s.name: {
                    "data_dir": str(s.data_dir),
                    "weight": s.weight,
                    "items": {p: len(d.items[p]) for p in data.PARTITIONS},
                    **({"captures": True} if d.capture_set else {}),
                    **({"attribution": attributions[s.name]} if attributions[s.name] else {}),
                }
                for s, d in zip(sources, datasets, strict=True)
            },
        },
        metrics={
            "architecture": args.model_architecture,
            "steps": result.last_step,
            "keras_test_accuracy": round(result.test_accuracy or 0.0, 5),
            "keras_validation_accuracy": round(result.validation_accuracy or 0.0, 5),
            "keras_validation_by_source": breakdown_metrics(result.validation_breakdown),
            "parameters": int(model.count_params()),
        },
    )
    for item in exported:
        print(f"export: {item.summary}", file=sys.stderr)
    print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


def run_identity(
    args: argparse.Namespace, spec: FrontendSpec, wanted: tuple[str, ...], options: dict[str, object]
) -> dict[str, object]:
    """What a resumed or fine-tuned run must agree with its checkpoint on (the labels are the
    data set's: ``_silence_``, ``_unknown_``, then the wanted words)."""
    from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL

    return {
        "architecture": args.model_architecture,
        "labels": [SILENCE_LABEL, UNKNOWN_LABEL, *wanted],
        "frontend": spec.to_dict(),
        "model_options": options,
        "dropout": args.dropout,
    }


def starting_point(
    args: argparse.Namespace, identity: dict[str, object]
) -> tuple[FineTuneBase | None, dict[str, object] | None]:
    """``--fine_tune_from``'s base, found and checked against this run (TrainingError naming
    the flag and the file), and the ``fine_tuned_from`` this run records: the base's, or, for
    a resumed run, the one its checkpoint recorded."""
    if args.fine_tune_from and args.start_checkpoint:
        raise TrainingError(fine_tune_conflict(Path(args.start_checkpoint), Path(args.fine_tune_from)))
    if args.fine_tune_from:
        base = fine_tune_base(Path(args.fine_tune_from))
        check_identity(base.checkpoint, base.record, identity, where=base.where)
        return base, base.provenance()
    if args.start_checkpoint:
        carried = read_checkpoint_identity(Path(args.start_checkpoint)).get("fine_tuned_from")
        return None, carried if isinstance(carried, dict) else None
    return None, None


def _label_folders(data_dir: Path) -> list[str]:
    """The folders of ``data_dir`` that hold a WAV (a data set already there), sorted."""
    try:
        return sorted(
            d.name
            for d in data_dir.iterdir()
            if d.is_dir() and not d.name.startswith((".", "_background_noise_")) and any(d.glob("*.wav"))
        )
    except OSError:
        return []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add = parser.add_argument
    add(
        "--data_url",
        default=DEFAULT_DATA_URL,
        help="archive to download and extract into --data_dir once "
        "(http, https or file://); empty: use the data already there (default: Speech Commands v0.02)",
    )
    add(
        "--work_dir",
        default="",
        help="one folder for everything, as the course lays it out: data/, train/, logs/ and models/ "
        "under it (each still settable with its own flag)",
    )
    add(
        "--data_dir",
        action="append",
        default=None,
        metavar="[NAME=]DIR[:WEIGHT]",
        help="data: <word>/*.wav, _background_noise_/*.wav (/tmp/speech_dataset/). Repeat it (or give "
        "NAME=DIR:WEIGHT,NAME=DIR:WEIGHT) to train on several sources, e.g. --data_dir me=~/rec:3 "
        "--data_dir sc=/tmp/speech_dataset: each is split by the hash rule on its own, WEIGHT "
        "(default 1) scales how often its training clips are drawn, and accuracy is reported per "
        "source and word; a folder's ATTRIBUTION.txt (its licence and credit) is recorded in the "
        "bundles. A folder of reviewed kwsd captures (kwsd review's reviewed/) is all training "
        "data, each clip cut to the window the model heard, other folders than the wanted words "
        "as _unknown_: give it beside a data set, e.g. --data_dir sc=DIR --data_dir room=DIR:2",
    )
    add(
        "--background_volume",
        type=float,
        default=0.1,
        help="loudest background noise mixed into training clips (0..1)",
    )
    add(
        "--background_frequency",
        type=float,
        default=0.8,
        help="share of training clips that get noise (0..1)",
    )
    add(
        "--silence_percentage",
        type=float,
        default=10.0,
        help="silence items, as a percentage of the wanted words' count",
    )
    add(
        "--unknown_percentage",
        type=float,
        default=10.0,
        help="unknown-word items, as a percentage of the wanted words' count",
    )
    add(
        "--time_shift_ms",
        type=int,
        default=100,
        help="training clips are shifted by up to this much, either way",
    )
    add(
        "--testing_percentage",
        type=float,
        default=10.0,
        help="share of files for testing (hash split by name)",
    )
    add("--validation_percentage", type=float, default=10.0, help="share of files for validation")
    add("--sample_rate", type=int, default=16000, help="model sample rate in Hz (other files are resampled)")
    add("--clip_duration_ms", type=int, default=1000, help="length of one clip (the model's window)")
    add("--window_size_ms", type=int, default=30, help="front-end frame length")
    add("--window_stride_ms", type=int, default=10, help="front-end frame step")
    add("--feature_bin_count", type=int, default=40, help="MFCC cepstra per frame (micro: channels)")
    add("--how_many_training_steps", default="15000,3000", help="steps of each phase, comma-separated")
    add("--eval_step_interval", type=int, default=400, help="validate every this many steps")
    add("--learning_rate", default="0.001,0.0001", help="learning rate of each phase, comma-separated")
    add("--batch_size", type=int, default=100, help="clips per step")
    add("--summaries_dir", default=None, help="TensorBoard logs (/tmp/retrain_logs); empty: none")
    add("--wanted_words", default="yes,no,up,down,left,right,on,off,stop,go", help="words to recognise")
    add("--train_dir", default=None, help="checkpoints, run log, feature cache (/tmp/speech_commands_train)")
    add(
        "--model_dir",
        default=None,
        help="exported bundles, .tflite, labels, C array (/tmp/speech_commands_model)",
    )
    add("--save_step_interval", type=int, default=100, help="save a checkpoint every this many steps")
    add("--start_checkpoint", default="", help="resume from this checkpoint (<train_dir>/<arch>.ckpt-<step>)")
    add(
        "--fine_tune_from",
        default="",
        metavar="PATH",
        help="start from the weights of this checkpoint (<train_dir>/<arch>.ckpt-<step>) or of the "
        "checkpoint a bundle was exported from (a .kwsd made by tools/export.py); not its optimizer "
        "or step: this run's schedule runs from step 1, e.g. --how_many_training_steps 200 "
        "--learning_rate 0.0005. The architecture, labels and front end must match",
    )
    add(
        "--model_architecture",
        default="ds_cnn",
        help="ds_cnn (default), conv, low_latency_conv, "
        "low_latency_svdf, tiny_conv, tiny_embedding_conv, single_fc, or mlp (for --preprocess embedding)",
    )
    add("--model_options", default="", help="JSON of architecture options, e.g. '{\"channels\": 64}'")
    add("--check_nans", action="store_true", help="stop at a NaN/Inf loss or gradient, naming the layer")
    add(
        "--quantize", action="store_true", help="accepted for train.py compatibility: int8 is always exported"
    )
    add(
        "--preprocess",
        default="mfcc",
        choices=["mfcc", "micro", "embedding"],
        help="front end: mfcc, micro (micro_speech's), or embedding (openWakeWord's feature models: "
        "--feature_models; use --model_architecture mlp)",
    )
    add(
        "--feature_models",
        help="--preprocess embedding: the folder with openWakeWord's melspectrogram.tflite and "
        "embedding_model.tflite (the bundles carry them: mind their terms, README)",
    )
    add("--verbosity", default="INFO", choices=["DEBUG", "INFO", "WARN", "ERROR", "FATAL"], help="log level")
    add("--optimizer", default="adam", choices=["gradient_descent", "momentum", "adam"], help="optimizer")
    add("--dropout", type=float, default=0.2, help="dropout rate where the architecture has dropout")
    add(
        "--augment_copies", type=int, default=4, help="augmented renderings of each training clip in the pool"
    )
    add("--seed", type=int, default=59185, help="one seed for the split's sampling, augmentation and weights")
    add("--workers", type=int, default=None, help="processes computing features (default: all cores)")
    add("--no_resample", action="store_true", help="refuse files at another rate instead of resampling them")
    add(
        "--skip_bad_files",
        action="store_true",
        help="leave out (and list) files that cannot be read instead of stopping",
    )
    add(
        "--log_every",
        type=int,
        default=100,
        help="without a terminal, print the step line every this many steps",
    )
    add("--representative_count", type=int, default=500, help="training inputs calibrating the int8 model")
    add("--no_export", action="store_true", help="stop after training (tools/export.py can export later)")
    add_augmentation_flags(parser)
    return parser


#: Where each folder goes: train.py's defaults, or the course's layout under --work_dir.
FOLDERS = {
    "data_dir": ("/tmp/speech_dataset/", "data"),
    "train_dir": ("/tmp/speech_commands_train", "train"),
    "summaries_dir": ("/tmp/retrain_logs", "logs"),
    "model_dir": ("/tmp/speech_commands_model", "models"),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_one_blas_thread()  # the feature pool's many tiny per-clip products (kwsd/blas.py)
    for key, (default, sub) in FOLDERS.items():
        if getattr(args, key) is None:
            setattr(args, key, str(Path(args.work_dir) / sub) if args.work_dir else default)
    level = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(args.verbosity, args.verbosity)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    if level != "DEBUG":
        # TensorFlow's own INFO chatter ("Sharding callback duration: ..." at every checkpoint,
        # "Assets written to: ..." at export) reaches the root handler through these loggers.
        for name in ("absl", "tensorflow"):
            logging.getLogger(name).setLevel(logging.WARNING)
    _quiet_tensorflow()
    from kwsd_tools.training.console import native_output_to
    from kwsd_tools.training.dataset import DatasetError
    from kwsd_tools.training.models import ModelError

    # TensorFlow's C++ and converter chatter goes to a file, kept for debugging.
    quiet = native_output_to(Path(args.train_dir) / "tensorflow.log") if level != "DEBUG" else None
    try:
        with quiet or contextlib.nullcontext() as noise:
            if noise is not None:
                log.info("TensorFlow's own messages go to %s (--verbosity=DEBUG shows them here)", noise)
            return run(args)
    except (TrainingError, ModelError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return EXIT_BAD_FLAG if not str(err).startswith("step ") else EXIT_TRAINING_FAILED
    except (DatasetError, KwsdError) as err:
        print(f"train: error: {err}", file=sys.stderr)
        return EXIT_BAD_DATA
    except KeyboardInterrupt:
        return 130


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- data sources and augmentation: argument plumbing ---------------------------------------
#
# Kept apart from run() and the console code: each function turns flags into the library's
# values (tools/kwsd_tools/training/sources.py, augment.py, features.py) or runs one data stage.

#: The robustness augmentation's defaults, chosen by an ablation on real speech (README,
#: "Augmentation"); --no_robust_augmentation switches all of them off.
AUGMENT_DEFAULTS: dict[str, str | float | int] = {
    "reverb_probability": 0.3,
    "rt60_ms_range": "200,800",
    "simulated_rir_count": 64,
    "noise_probability": 0.3,
    "snr_db_range": "0,20",
    "gain_db_range": "-10,10",
    "speed_range": "1,1",  # measured: no gain on real speech (try 0.9,1.1)
    "pitch_semitones_range": "0,0",  # measured: no gain, and the costliest (try -2,2)
    "bandlimit_probability": 0.3,
    "highpass_hz_range": "100,300",
    "lowpass_hz_range": "3000,7000",
    "time_masks": 2,
    "time_mask_frames": 5,
    "freq_masks": 1,
    "freq_mask_bins": 2,
}


def add_augmentation_flags(parser: argparse.ArgumentParser) -> None:
    """kwsd's robustness augmentation (off with --no_robust_augmentation; train.py's
    --background_* and --time_shift_ms work as before either way)."""
    group = parser.add_argument_group(
        "robustness augmentation",
        textwrap.fill(
            "Each training copy gets, in this order: speed, pitch, [time shift], reverberation, noise "
            "at an SNR (instead of the --background_volume mix), [background mix], band-limiting, "
            "gain; then time and frequency masks on the features of every batch (drawn afresh at "
            "each step, not stored in the pool). Ranges are LOW,HIGH, drawn uniformly with --seed. "
            "Silence items get only band-limiting and gain. Bad values or unusable folders stop the "
            "run before anything is written: exit 64 for a value, 65 for a file.",
            width=90,
        ),
    )
    add = group.add_argument
    d = AUGMENT_DEFAULTS
    add(
        "--no_robust_augmentation",
        action="store_true",
        help="every augmentation below off: train.py's noise and time shift only",
    )
    add(
        "--reverb_probability",
        type=float,
        default=d["reverb_probability"],
        help="share of training copies convolved with a room impulse response (0: off) (%(default)s)",
    )
    add(
        "--rt60_ms_range",
        default=d["rt60_ms_range"],
        help="decay times of the simulated rooms, ms (%(default)s)",
    )
    add(
        "--simulated_rir_count",
        type=int,
        default=d["simulated_rir_count"],
        help="simulated rooms in the run's impulse-response bank (0: measured ones only) (%(default)s)",
    )
    add(
        "--rir_dir",
        action="append",
        default=[],
        metavar="DIR",
        help="measured impulse responses: mono WAVs at --sample_rate, added to the bank (repeatable)",
    )
    add(
        "--noise_probability",
        type=float,
        default=d["noise_probability"],
        help="share of training copies mixed with noise at an SNR from --snr_db_range (0: off) (%(default)s)",
    )
    add("--snr_db_range", default=d["snr_db_range"], help="speech-to-noise ratios, dB (%(default)s)")
    add(
        "--noise_dir",
        action="append",
        default=[],
        metavar="DIR",
        help="noise recordings (WAVs of at least one clip) besides _background_noise_ (repeatable)",
    )
    add(
        "--gain_db_range",
        default=d["gain_db_range"],
        help="gain of every training copy, dB, clipped at full scale (0,0: off) (%(default)s)",
    )
    add(
        "--speed_range",
        default=d["speed_range"],
        help="speed factor, tempo and pitch together, e.g. 0.9,1.1 (1,1: off, the default: it bought "
        "nothing measurable on real speech, README) (%(default)s)",
    )
    add(
        "--pitch_semitones_range",
        default=d["pitch_semitones_range"],
        help="pitch shift at the same tempo, semitones, e.g. -2,2 (0,0: off, the default: it bought "
        "nothing measurable on real speech, README) (%(default)s)",
    )
    add(
        "--bandlimit_probability",
        type=float,
        default=d["bandlimit_probability"],
        help="share of training copies band-limited like a cheap USB microphone (0: off) (%(default)s)",
    )
    add("--highpass_hz_range", default=d["highpass_hz_range"], help="its high-pass corner, Hz (%(default)s)")
    add("--lowpass_hz_range", default=d["lowpass_hz_range"], help="its low-pass corner, Hz (%(default)s)")
    add(
        "--time_masks",
        type=int,
        default=d["time_masks"],
        help="SpecAugment time masks per input, drawn afresh at every step (0: off) (%(default)s)",
    )
    add("--time_mask_frames", type=int, default=d["time_mask_frames"], help="widest time mask (%(default)s)")
    add(
        "--freq_masks",
        type=int,
        default=d["freq_masks"],
        help="SpecAugment feature masks per input (MFCC: cepstral coefficients; micro: channels) "
        "(0: off) (%(default)s)",
    )
    add("--freq_mask_bins", type=int, default=d["freq_mask_bins"], help="widest feature mask (%(default)s)")


def augmentation_from_args(args: argparse.Namespace) -> tuple[Augmentation, SpecAugment]:
    """The augmentation the flags describe; TrainingError naming the flag when one is out of range."""
    from kwsd_tools.training.augment import check_probability, parse_range

    try:
        for flag, value in (
            ("--background_volume", args.background_volume),
            ("--background_frequency", args.background_frequency),
        ):
            check_probability(flag, value)
        if args.no_robust_augmentation:
            robust: dict[str, object] = {}
            masks = SpecAugment()
        else:
            for flag in ("--simulated_rir_count", "--time_masks", "--time_mask_frames", "--freq_masks"):
                if getattr(args, flag[2:]) < 0:
                    raise AugmentSettingError(f"{flag}: expected 0 or more, got {getattr(args, flag[2:])}")
            nyquist = args.sample_rate / 2
            robust = {
                "reverb_probability": check_probability("--reverb_probability", args.reverb_probability),
                "rt60_ms_range": parse_range("--rt60_ms_range", args.rt60_ms_range, low=10, high=5000),
                "simulated_rir_count": args.simulated_rir_count,
                "rir_dirs": tuple(args.rir_dir),
                "noise_probability": check_probability("--noise_probability", args.noise_probability),
                "snr_db_range": parse_range("--snr_db_range", args.snr_db_range, low=-30, high=100),
                "noise_dirs": tuple(args.noise_dir),
                "gain_db_range": parse_range("--gain_db_range", args.gain_db_range, low=-60, high=40),
                "speed_range": parse_range("--speed_range", args.speed_range, low=0.5, high=2.0),
                "pitch_semitones_range": parse_range(
                    "--pitch_semitones_range", args.pitch_semitones_range, low=-12, high=12
                ),
                "bandlimit_probability": check_probability(
                    "--bandlimit_probability", args.bandlimit_probability
                ),
                "highpass_hz_range": parse_range(
                    "--highpass_hz_range", args.highpass_hz_range, low=0, high=nyquist
                ),
                "lowpass_hz_range": parse_range(
                    "--lowpass_hz_range", args.lowpass_hz_range, low=0, high=nyquist
                ),
            }
            if robust["reverb_probability"] and not args.simulated_rir_count and not args.rir_dir:
                raise AugmentSettingError(
                    "--reverb_probability: no impulse responses (--simulated_rir_count 0 and no --rir_dir)"
                )
            masks = SpecAugment(args.time_masks, args.time_mask_frames, args.freq_masks, args.freq_mask_bins)
    except AugmentSettingError as err:
        raise TrainingError(str(err)) from None
    augmentation = Augmentation(
        args.background_volume,
        args.background_frequency,
        args.time_shift_ms,
        **robust,  # type: ignore[arg-type]
    )
    return augmentation, masks


def augmentation_assets(
    augmentation: Augmentation, settings: DatasetSettings, *, seed: int
) -> AugmentAssets | None:
    """The run's impulse-response bank and the user's noise (None when nothing uses them)."""
    from kwsd_tools.training.features import assets_for

    return assets_for(augmentation, settings, seed=seed)


def data_sources_from_args(args: argparse.Namespace) -> list[DataSource]:
    from kwsd_tools.training.sources import parse_data_sources

    return parse_data_sources(args.data_dir)


def load_data_sources(sources: list[DataSource], settings: DatasetSettings, *, seed: int) -> list[Dataset]:
    """Each source loaded and checked, its report printed (named when there are several)."""
    from kwsd_tools.training import dataset as data
    from kwsd_tools.training.sources import load_sources

    datasets = load_sources(sources, settings, seed=seed)
    several = len(sources) > 1
    for source, dataset in zip(sources, datasets, strict=True):
        prefix = (
            f"data {source.name} ({source.data_dir}, weight {source.weight:g}): " if several else "data: "
        )
        if several:
            print(f"{prefix}report", file=sys.stderr)
        print(dataset.report.text(), file=sys.stderr)
        print(
            prefix
            + ", ".join(f"{p} {len(dataset.items[p])}" for p in data.PARTITIONS)
            + f" items; labels {', '.join(dataset.labels)}",
            file=sys.stderr,
        )
    return datasets


def source_features(
    datasets: list[Dataset],
    sources: list[DataSource],
    spec: FrontendSpec,
    args: argparse.Namespace,
    *,
    augmentation: Augmentation,
    assets: AugmentAssets | None,
    cache: Path,
) -> dict[str, FeatureSet]:
    """Every partition's features over all sources; with several, each one's share of batches."""
    from kwsd_tools.training import dataset as data
    from kwsd_tools.training.sources import batch_shares, pooled_features

    feature_sets = {
        partition: pooled_features(
            datasets,
            sources,
            spec,
            partition,
            augmentation=augmentation,
            copies=args.augment_copies,
            seed=args.seed,
            cache_dir=cache,
            workers=args.workers,
            assets=assets,
        )
        for partition in data.PARTITIONS
    }
    if len(sources) > 1:
        shares = batch_shares(feature_sets["training"])
        print(
            "sources: share of training batches "
            + ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares.items()),
            file=sys.stderr,
        )
    return feature_sets


if __name__ == "__main__":
    sys.exit(main())
