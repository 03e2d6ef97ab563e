#!/usr/bin/env python3
"""Export a checkpoint of tools/train.py as kwsd bundles: what freeze.py does, and more.

    python tools/export.py --start_checkpoint /tmp/speech_commands_train/ds_cnn.ckpt-18000 \\
        --model_dir /tmp/speech_commands_model

Unlike freeze.py, no front-end flag has to be repeated: the checkpoint's record (the ``.json``
beside it) holds the architecture, labels, front end and data set it was trained with, and
the bundle carries them to the daemon (with the checkpoint's path, so that ``tools/train.py
--fine_tune_from`` can take the bundle for the weights it was made from, and, for a fine-tuned
checkpoint, what it was fine-tuned from). Written into ``--model_dir``:

* ``<name>.kwsd`` (full int8: int8 input and output, calibrated on real training features)
  and ``<name>-float.kwsd`` (float32), each with its test accuracy measured by the TFLite
  interpreter (kwsd's own classifier) in its metrics;
* ``<name>.tflite`` and ``<name>-float.tflite`` alone, with ``<name>_labels.txt``;
* ``<name>_model_data.cc``: the int8 model as a C array for TFLite Micro;
* one summary line per model: size, operators, input and output types, test accuracy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kwsd.errors import KwsdError
from kwsd.frontend import FrontendSpec, SpecError
from kwsd_tools.training.trainer import TrainingError, read_checkpoint_identity

TOOL_NAME = "tools/export.py"


def run(args: argparse.Namespace) -> int:
    from kwsd_tools.training import dataset as data
    from kwsd_tools.training import models
    from kwsd_tools.training.export import export_bundles
    from kwsd_tools.training.features import Augmentation, assets_for
    from kwsd_tools.training.sources import DataSource, load_sources, pooled_features

    prefix = Path(args.start_checkpoint)
    record = read_checkpoint_identity(prefix)
    try:
        spec = FrontendSpec.from_dict(record["frontend"], where=f"{prefix}.json frontend")
        source = record["data"]
        recorded: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in source["settings"].items()
        }
        settings = data.DatasetSettings(**recorded)
        augmentation = Augmentation(**source["augmentation"])
        architecture = record["architecture"]
        labels = list(record["labels"])
    except (KeyError, TypeError, SpecError) as err:
        raise TrainingError(
            f"--start_checkpoint {prefix}: its record is incomplete or wrong ({err})"
        ) from None
    data_dir = Path(args.data_dir or source["data_dir"])
    # Every source the run trained on (a record from before sources: its one data folder).
    sources = [
        DataSource(s["name"], Path(s["data_dir"]), float(s["weight"])) for s in source.get("sources", [])
    ] or [DataSource(data_dir.name or "data", data_dir)]
    sources[0] = DataSource(sources[0].name, data_dir, sources[0].weight)
    datasets = load_sources(sources, settings, seed=source["seed"])
    if list(datasets[0].labels) != labels:
        raise TrainingError(
            f"{data_dir}: labels {', '.join(datasets[0].labels)}, the checkpoint has {', '.join(labels)}"
        )
    cache = prefix.parent / "features"
    assets = assets_for(augmentation, settings, seed=source["seed"])
    features = {
        partition: pooled_features(
            datasets,
            sources,
            spec,
            partition,
            augmentation=augmentation,
            copies=source["augment_copies"],
            seed=source["seed"],
            cache_dir=cache,
            assets=assets,
        )
        for partition in ("training", "testing")
    }

    import tensorflow as tf

    frames, feature_count = spec.feature_shape
    model = models.build_model(
        architecture,
        frames=frames,
        features=feature_count,
        label_count=len(labels),
        dropout=record.get("dropout", 0.0),
        options=record.get("model_options") or {},
    )
    tf.train.Checkpoint(model=model).read(str(prefix)).expect_partial()
    training = features["training"]
    pick = np.random.default_rng(source["seed"]).permutation(len(training))[: args.representative_count]
    exported = export_bundles(
        model,
        name=args.name or architecture,
        labels=labels,
        spec=spec,
        representative=training.x[pick],
        test_x=features["testing"].x,
        test_y=features["testing"].y,
        test_source=features["testing"].source,
        source_names=features["testing"].source_names,
        out_dir=Path(args.model_dir),
        tool=TOOL_NAME,
        dataset={
            "data_dir": str(data_dir),
            # Absolute: tools/train.py --fine_tune_from finds the weights by it, from any folder.
            "checkpoint": str(prefix.resolve()),
            **({"fine_tuned_from": record["fine_tuned_from"]} if "fine_tuned_from" in record else {}),
            "seed": source["seed"],
            "sources": {s.name: {"data_dir": str(s.data_dir), "weight": s.weight} for s in sources},
        },
        metrics={
            "architecture": architecture,
            "steps": record["step"],
            "parameters": int(model.count_params()),
        },
    )
    for item in exported:
        print(f"export: {item.summary}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--start_checkpoint", required=True, help="<train_dir>/<arch>.ckpt-<step>")
    parser.add_argument("--model_dir", default="/tmp/speech_commands_model", help="where to write")
    parser.add_argument("--name", default="", help="file and bundle name (default: the architecture)")
    parser.add_argument("--data_dir", default="", help="the data set, if it moved since training")
    parser.add_argument("--representative_count", type=int, default=500, help="inputs calibrating int8")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from kwsd_tools.training.console import native_output_to
    from kwsd_tools.training.dataset import DatasetError

    try:
        # TensorFlow's C++ and converter chatter goes to a file beside the bundles, for debugging.
        with native_output_to(Path(args.model_dir) / "tensorflow.log"):
            return run(args)
    except TrainingError as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 64
    except (DatasetError, KwsdError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 65


if __name__ == "__main__":
    sys.exit(main())
