#!/usr/bin/env python3
"""The 10-minute recipe: a 4-word synthetic data set to a Pi-sized model of >= 95% test accuracy.

    python tools/recipe.py [--work_dir /tmp/kwsd_recipe] [--seed 1]

1. ``tools/synth.py``: yes, no, stop, go and six other words (the ``_unknown_`` class) from 120
   espeak-ng voices, 3 clips each, plus background noise;
2. ``tools/train.py``: a temporal DS-CNN on 49x13 MFCCs, 1500 + 500 steps of batch 100
   (learning rate 0.001 then 0.0001), 4 augmented copies of every training clip;
3. the export's int8 bundle, measured on the test voices (never seen in training) by the TFLite
   interpreter.

Prints the wall time of each stage and the figures, and exits 1 if the int8 model is under 95%
or the whole recipe took 10 minutes or more.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
if str(TOOLS_DIR.parent) not in sys.path:
    sys.path.insert(0, str(TOOLS_DIR.parent))

TARGET_ACCURACY = 0.95
TARGET_SECONDS = 600.0
WORDS = ("yes", "no", "stop", "go")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work_dir", default="/tmp/kwsd_recipe")
    parser.add_argument("--seed", type=int, default=1, help="voices and training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work = Path(args.work_dir)
    started = time.monotonic()

    from tools.synth import synthesise

    data = work / "data"
    if not (data / "voices.json").exists():
        synthesise(
            data,
            WORDS,
            ["up", "down", "left", "right", "on", "off"],
            voice_count=120,
            repetitions=3,
            seed=args.seed,
        )
    synth_s = time.monotonic() - started

    from tools.train import main as train

    code = train(
        [
            "--data_url=",
            f"--work_dir={work}",
            f"--data_dir={data}",
            f"--wanted_words={','.join(WORDS)}",
            "--window_stride_ms=20",
            "--feature_bin_count=13",
            "--model_architecture=ds_cnn",
            '--model_options={"temporal": true}',
            "--how_many_training_steps=1500,500",
            "--learning_rate=0.001,0.0001",
            "--eval_step_interval=500",
            "--save_step_interval=500",
            "--batch_size=100",
            "--augment_copies=4",
            f"--seed={args.seed}",
        ]
    )
    if code:
        return code
    total_s = time.monotonic() - started

    from kwsd.bundle import read_bundle

    int8 = read_bundle(work / "models" / "ds_cnn.kwsd")
    float32 = read_bundle(work / "models" / "ds_cnn-float.kwsd")
    accuracy = float(int8.metrics["test_accuracy"])
    print(
        f"recipe: synthesis {synth_s:.0f} s, training and export {total_s - synth_s:.0f} s, "
        f"total {total_s:.0f} s (target < {TARGET_SECONDS:.0f} s)\n"
        f"recipe: int8 test accuracy {100 * accuracy:.1f}% (N={int8.metrics['test_count']}), float "
        f"{100 * float(float32.metrics['test_accuracy']):.1f}%; {int8.metrics['parameters']:,} parameters, "
        f"int8 model {len(int8.tflite):,} bytes (target >= {100 * TARGET_ACCURACY:.0f}%)"
    )
    ok = accuracy >= TARGET_ACCURACY and total_s < TARGET_SECONDS
    print("recipe: " + ("OK" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
