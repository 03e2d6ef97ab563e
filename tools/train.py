#!/usr/bin/env python3
"""Train a keyword model with TensorFlow speech_commands' train.py flags, on kwsd's front end.

The tutorial's commands work with the script's name changed:

    python tools/train.py --data_dir=/tmp/speech_dataset --wanted_words=yes,no \\
        --how_many_training_steps=15000,3000 --learning_rate=0.001,0.0001

What happens, in order (each step says what it did):

1. data: ``--data_url`` is downloaded and extracted into ``--data_dir`` once (empty: local data
   only); every file is checked (rate, channels, encoding, length, readability) and a report
   says what was converted or refused and why;
2. features: kwsd's own front end (the daemon's code) on every clip, augmented training
   copies included (see tools/training/features.py), cached under ``--train_dir``;
3. training: train.py's schedule, per-step line, confusion matrices with label names,
   checkpoints, ``--start_checkpoint`` resume and TensorBoard logs in ``--summaries_dir``;
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
import time
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
if str(TOOLS_DIR.parent) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR.parent))  # run from a checkout without installing kwsd

import numpy as np  # noqa: E402

from kwsd.blas import use_one_blas_thread  # noqa: E402
from kwsd.errors import KwsdError  # noqa: E402
from kwsd.frontend import FrontendKind, FrontendSpec, MfccParams, MicroParams, MicroState, SpecError  # noqa: E402
from tools.training.features import Augmentation, partition_features  # noqa: E402
from tools.training.trainer import RunSettings, Schedule, TrainingError  # noqa: E402

log = logging.getLogger("train")

TOOL_NAME = "tools/train.py"
DEFAULT_DATA_URL = "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
EXIT_BAD_FLAG = 64
EXIT_BAD_DATA = 65
EXIT_TRAINING_FAILED = 1


def frontend_for(args: argparse.Namespace) -> FrontendSpec:
    """The front end the flags describe (``--preprocess``, rate, clip, window, feature bins)."""
    kind = FrontendKind(args.preprocess)
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


def run(args: argparse.Namespace) -> int:
    from tools.training import dataset as data
    from tools.training import models

    schedule = Schedule.parse(args.how_many_training_steps, args.learning_rate)
    if args.model_architecture not in models.ARCHITECTURES:
        raise TrainingError(
            f"--model_architecture: unknown {args.model_architecture!r}; "
            f"expected one of {', '.join(models.ARCHITECTURES)}"
        )
    spec = frontend_for(args)
    wanted = tuple(w.strip().lower() for w in args.wanted_words.split(",") if w.strip())
    if not wanted:
        raise TrainingError("--wanted_words: expected at least one word")
    settings = data.DatasetSettings(
        sample_rate_hz=args.sample_rate,
        clip_duration_ms=args.clip_duration_ms,
        wanted_words=wanted,
        silence_percentage=args.silence_percentage,
        unknown_percentage=args.unknown_percentage,
        validation_percentage=args.validation_percentage,
        testing_percentage=args.testing_percentage,
        resample=not args.no_resample,
        skip_bad_files=args.skip_bad_files,
    )
    data_dir = Path(args.data_dir)
    train_dir = Path(args.train_dir)
    started = time.monotonic()

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
    dataset = data.load_dataset(data_dir, settings, seed=args.seed)
    print(dataset.report.text(), file=sys.stderr)
    labels = list(dataset.labels)
    print(
        "data: "
        + ", ".join(f"{p} {len(dataset.items[p])}" for p in data.PARTITIONS)
        + f" items; labels {', '.join(labels)}",
        file=sys.stderr,
    )

    # 2. features
    augmentation = Augmentation(args.background_volume, args.background_frequency, args.time_shift_ms)
    cache = train_dir / "features"
    feature_sets = {
        partition: partition_features(
            dataset,
            spec,
            partition,
            augmentation=augmentation,
            copies=args.augment_copies,
            seed=args.seed,
            cache_dir=cache,
            workers=args.workers,
        )
        for partition in data.PARTITIONS
    }
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
    options = json.loads(args.model_options) if args.model_options else {}
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
    identity = {
        "architecture": args.model_architecture,
        "labels": labels,
        "frontend": spec.to_dict(),
        "model_options": options,
        "dropout": args.dropout,
    }
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
            },
        },
    )
    from tools.training.trainer import train

    result = train(
        model,
        run_settings,
        training=feature_sets["training"],
        validation=feature_sets["validation"],
        testing=feature_sets["testing"],
        train_dir=train_dir,
        summaries_dir=Path(args.summaries_dir) if args.summaries_dir else None,
        start_checkpoint=Path(args.start_checkpoint) if args.start_checkpoint else None,
    )
    print(
        f"training: steps to {result.last_step} in {result.seconds:.0f} s "
        f"({result.steps_per_second:.1f} steps/s); checkpoint {result.checkpoint}",
        file=sys.stderr,
    )
    if args.no_export:
        return 0

    # 4. export
    from tools.training.export import export_bundles

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
        out_dir=Path(args.model_dir),
        tool=TOOL_NAME,
        dataset={
            "data_dir": str(data_dir),
            "data_url": args.data_url,
            "items": {p: len(dataset.items[p]) for p in data.PARTITIONS},
            "seed": args.seed,
        },
        metrics={
            "architecture": args.model_architecture,
            "steps": result.last_step,
            "keras_test_accuracy": round(result.test_accuracy or 0.0, 5),
            "keras_validation_accuracy": round(result.validation_accuracy or 0.0, 5),
            "parameters": int(model.count_params()),
        },
    )
    for item in exported:
        print(f"export: {item.summary}", file=sys.stderr)
    print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


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
        "--data_dir", default=None, help="data: <word>/*.wav, _background_noise_/*.wav (/tmp/speech_dataset/)"
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
        "--model_architecture",
        default="ds_cnn",
        help="ds_cnn (default), conv, low_latency_conv, "
        "low_latency_svdf, tiny_conv, tiny_embedding_conv or single_fc",
    )
    add("--model_options", default="", help="JSON of architecture options, e.g. '{\"channels\": 64}'")
    add("--check_nans", action="store_true", help="stop at a NaN/Inf loss or gradient, naming the layer")
    add(
        "--quantize", action="store_true", help="accepted for train.py compatibility: int8 is always exported"
    )
    add(
        "--preprocess",
        default="mfcc",
        choices=["mfcc", "micro"],
        help="front end: mfcc, or micro (micro_speech's)",
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
    from tools.training.console import native_output_to
    from tools.training.dataset import DatasetError
    from tools.training.models import ModelError

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


if __name__ == "__main__":
    sys.exit(main())
