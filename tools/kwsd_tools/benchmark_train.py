#!/usr/bin/env python3
"""Training speed: kwsd's trainer against a baseline that recomputes features every step.

    python tools/benchmark_train.py --data_dir DIR [--model_architecture tiny_conv]
        [--batch_size 100] [--steps 40] [--rounds 3]

Both sides run the same model, batch size, optimizer and compiled step function (the
trainer's own, ``make_train_steps``, 20 steps per call), in this one process, interleaved
(``--rounds`` rounds of ``--steps`` steps each, the median round counts),
so a busy machine slows both alike:

* kwsd: a batch is drawn from the pool of precomputed (augmented) training features, as
  ``tools/train.py`` does;
* baseline: every step renders its batch's audio (time shift and background noise drawn
  afresh, train.py's rule) and computes the features of each clip with kwsd's front end, as
  train.py does with its own front end at every step, then runs the same train step.

The one-off cost kwsd pays instead (computing the pool) is printed too, and how many baseline
steps it equals. Target: kwsd at least 5 times the baseline's steps per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kwsd_tools.training.features import Augmentation, make_recipe, partition_features, render
from kwsd_tools.training.trainer import make_train_steps

TARGET_RATIO = 5.0
#: Steps per call of the compiled step function, as tools/train.py runs between evaluations.
CHUNK = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--wanted_words", default="yes,no,stop,go")
    parser.add_argument("--model_architecture", default="tiny_conv")
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100, help="steps per round and side (multiple of 20)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window_stride_ms", type=int, default=20)
    parser.add_argument("--feature_bin_count", type=int, default=40)
    parser.add_argument("--preprocess", default="mfcc", choices=["mfcc", "micro"])
    parser.add_argument("--augment_copies", type=int, default=4)
    args = parser.parse_args(argv)
    figures = measure(args)
    for line in report_lines(figures):
        print(line)
    return 0 if figures["ratio"] >= TARGET_RATIO else 1


def defaults(**overrides: object) -> argparse.Namespace:
    """The command's settings as a namespace (for tools/benchmark.py), with ``overrides``."""
    values: dict[str, object] = {
        "wanted_words": "yes,no,stop,go",
        "model_architecture": "tiny_conv",
        "batch_size": 100,
        "steps": 100,
        "rounds": 3,
        "window_stride_ms": 20,
        "feature_bin_count": 40,
        "preprocess": "mfcc",
        "augment_copies": 4,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Both sides' steps per second (median round), their ratio, and the pool's one-off cost."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import tensorflow as tf

    from kwsd.frontend import compute_features
    from kwsd_tools.train import build_parser, frontend_for
    from kwsd_tools.training import dataset as data
    from kwsd_tools.training import models

    flags = build_parser().parse_args(
        [
            f"--preprocess={args.preprocess}",
            f"--window_stride_ms={args.window_stride_ms}",
            f"--feature_bin_count={args.feature_bin_count}",
        ]
    )
    spec = frontend_for(flags)
    settings = data.DatasetSettings(wanted_words=tuple(args.wanted_words.split(",")))
    dataset = data.load_dataset(Path(args.data_dir), settings, seed=1)
    augmentation = Augmentation()
    started = time.monotonic()
    pool = partition_features(
        dataset,
        spec,
        "training",
        augmentation=augmentation,
        copies=args.augment_copies,
        seed=1,
        cache_dir=None,
    )
    pool_s = time.monotonic() - started

    tf.keras.utils.set_random_seed(1)
    frames, features = spec.feature_shape
    model = models.build_model(
        args.model_architecture, frames=frames, features=features, label_count=len(dataset.labels)
    )
    optimizer = tf.keras.optimizers.Adam(0.001)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # The trainer's own compiled step function, called for CHUNK steps at a time on both sides.
    train_steps = make_train_steps(model, optimizer, loss_fn)
    rates = np.full(CHUNK, 0.001, np.float32)

    rng = np.random.default_rng(2)
    items = dataset.items["training"]

    def ours() -> None:
        index = rng.integers(0, len(pool), (CHUNK, args.batch_size))
        train_steps(pool.x[index], pool.y[index], rates)

    def baseline() -> None:
        x = np.empty((CHUNK, args.batch_size, frames, features), np.float32)
        y = np.empty((CHUNK, args.batch_size), np.int64)
        for step in range(CHUNK):
            for k, i in enumerate(rng.integers(0, len(items), args.batch_size)):
                item = items[int(i)]
                label = dataset.label_index(item.label)
                recipe = make_recipe(item, label, dataset, augmentation, rng, augment=True)
                x[step, k] = compute_features(spec, render(recipe, dataset, spec.clip_samples))
                y[step, k] = label
        train_steps(x, y, rates)

    for warm in (ours, baseline):  # compile and warm caches outside the timing
        warm()
    rates_seen: dict[str, list[float]] = {"kwsd": [], "baseline": []}
    for _ in range(args.rounds):
        for name, step in (("kwsd", ours), ("baseline", baseline)):
            t0 = time.perf_counter()
            for _ in range(args.steps // CHUNK):
                step()
            rates_seen[name].append(CHUNK * (args.steps // CHUNK) / (time.perf_counter() - t0))
    ours_rate = statistics.median(rates_seen["kwsd"])
    base_rate = statistics.median(rates_seen["baseline"])
    return {
        "model": models.describe(model),
        "frontend": spec.describe(),
        "batch_size": args.batch_size,
        "training_items": len(items),
        "kwsd_steps_per_s": ours_rate,
        "baseline_steps_per_s": base_rate,
        "kwsd_rounds": rates_seen["kwsd"],
        "baseline_rounds": rates_seen["baseline"],
        "ratio": ours_rate / base_rate,
        "pool_features": len(pool),
        "augment_copies": args.augment_copies,
        "pool_s": pool_s,
    }


def report_lines(f: dict[str, Any]) -> list[str]:
    ratio = f["ratio"]
    return [
        f"kwsd training benchmark: {f['model']}; {f['frontend']}; batch {f['batch_size']}; "
        f"{f['training_items']} training items; {os.cpu_count()} cores",
        f"  kwsd (precomputed pool)    {f['kwsd_steps_per_s']:8.1f} steps/s  "
        f"(rounds: {_fmt(f['kwsd_rounds'])})",
        f"  baseline (features/step)   {f['baseline_steps_per_s']:8.1f} steps/s  "
        f"(rounds: {_fmt(f['baseline_rounds'])})",
        f"  ratio {ratio:.1f} x (target >= {TARGET_RATIO:.0f} x) "
        + ("OK" if ratio >= TARGET_RATIO else "MISSED"),
        f"  one-off: the pool ({f['pool_features']} features, {f['augment_copies']} copies per item) "
        f"took {f['pool_s']:.1f} s = {f['pool_s'] * f['baseline_steps_per_s']:.0f} baseline steps",
    ]


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
