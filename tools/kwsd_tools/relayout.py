#!/usr/bin/env python3
"""Make a bundle's first conv read its features as channels: the same scores, less CPU.

    python tools/relayout.py kwsd/demo/demo.kwsd kwsd/demo/demo.kwsd

A temporal DS-CNN exported before tools/kwsd_tools/training/export.py did this itself has a first conv
over a one-channel image that the int8 runtimes run slowly (the demo: 49 -> 20 us per window
on one x86 core). This rewrites that conv (see tools/kwsd_tools/training/layout.py), checks on seeded
random windows that the new model gives exactly the old scores (int8: bit for bit; float:
within 1e-6), with both the XNNPACK and the builtin kernels, and only then writes OUT
(atomically; OUT may be IN). The manifest keeps its metrics and detection settings, which
still hold, and its provenance records the rewrite and the old model's sha256. A bundle with
nothing to rewrite is left alone (exit 0). Needs TensorFlow (the ``train`` extra).

Exit codes as kwsd's: 66 IN missing or unreadable, 67 not a usable bundle or the scores
would change, 73 OUT cannot be written.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import os
import sys

import numpy as np

from kwsd.bundle import Bundle, read_bundle, write_bundle
from kwsd.errors import InputNotFoundError, ModelError, OutputError

TOOL_NAME = "tools/relayout.py"
#: Seeded random windows both models must agree on.
CHECK_WINDOWS = 200
FLOAT_TOLERANCE = 1e-6


def _scores(tflite: bytes, windows: list[np.ndarray], kernels: str) -> np.ndarray:
    from kwsd.classifier import interpreter_options

    interpreter_cls, options = interpreter_options(kernels)
    interpreter = interpreter_cls(model_content=tflite, num_threads=1, **options)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    scores = []
    for window in windows:
        interpreter.set_tensor(inp["index"], window.astype(inp["dtype"]).reshape(inp["shape"]))
        interpreter.invoke()
        scores.append(interpreter.get_tensor(out["index"]).astype(np.float64).ravel())
    return np.array(scores)


def _windows(tflite: bytes) -> list[np.ndarray]:
    from kwsd.classifier import interpreter_options

    interpreter_cls, _ = interpreter_options("builtin")
    interpreter = interpreter_cls(model_content=tflite)
    inp = interpreter.get_input_details()[0]
    rng = np.random.default_rng(0)
    if np.issubdtype(inp["dtype"], np.integer):
        info = np.iinfo(inp["dtype"])
        return [rng.integers(info.min, info.max + 1, inp["shape"]) for _ in range(CHECK_WINDOWS)]
    return [rng.normal(0.0, 10.0, inp["shape"]) for _ in range(CHECK_WINDOWS)]


def relayout(bundle: Bundle, where: str) -> Bundle | None:
    """The rewritten bundle, checked; None when there is nothing to rewrite."""
    from kwsd_tools.training.layout import features_as_channels

    relaid = features_as_channels(bundle.tflite)
    if not relaid.convs:
        return None
    windows = _windows(bundle.tflite)
    integer = np.issubdtype(windows[0].dtype, np.integer)
    for kernels in ("xnnpack", "builtin"):
        before = _scores(bundle.tflite, windows, kernels)
        after = _scores(relaid.tflite, windows, kernels)
        worst = float(np.max(np.abs(before - after)))
        if worst > (0.0 if integer else FLOAT_TOLERANCE):
            raise ModelError(
                f"{where}: the rewritten model's scores differ by up to {worst:g} with the {kernels} "
                "kernels; expected the same scores; nothing written"
            )
    provenance = dict(bundle.provenance)
    provenance["relayout"] = {
        "tool": TOOL_NAME,
        "convs": [list(c) for c in relaid.convs],
        "from_sha256": bundle.sha256,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "checked": f"{CHECK_WINDOWS} random windows, identical scores (xnnpack and builtin kernels)",
    }
    # Everything else in the manifest still holds: the same scores.
    return dataclasses.replace(
        bundle, tflite=relaid.tflite, sha256=hashlib.sha256(relaid.tflite).hexdigest(), provenance=provenance
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", help="the .kwsd bundle to read")
    parser.add_argument("out", help="where to write the rewritten bundle (may be the same file)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        bundle = read_bundle(args.bundle)
        new = relayout(bundle, args.bundle)
        if new is None:
            print(
                f"relayout: {args.bundle}: no first conv over a one-channel image; nothing to do",
                file=sys.stderr,
            )
            return 0
        write_bundle(new, args.out)
    except InputNotFoundError as err:
        print(f"relayout: error: {err}", file=sys.stderr)
        return 66
    except ModelError as err:
        print(f"relayout: error: {err}", file=sys.stderr)
        return 67
    except OutputError as err:
        print(f"relayout: error: {err}", file=sys.stderr)
        return 73
    print(
        f"relayout: {args.out}: sha256 {new.sha256[:16]}... (was {bundle.sha256[:16]}...), "
        f"same scores on {CHECK_WINDOWS} random windows",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
