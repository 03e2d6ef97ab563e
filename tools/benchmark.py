#!/usr/bin/env python3
"""kwsd's speed benchmark: every figure is measured in this one run, on this machine.

    python tools/benchmark.py [--model BUNDLE] [--seconds 60] [--repeats 5]

Prints:
  1. CPU time per audio second of the stream pipeline (front end, interpreter, smoother and
     the rest: everything from int16 samples to detections; not WAV decoding or printing)
     with the model at its recommended clip stride, as a share of real time and against
     the 2 ms target;
  2. the incremental front end against recomputing the whole window at every stride,
     as a ratio of the front end's CPU time, both measured interleaved in this run;
  3. start-up of ``kwsd stream`` to the first processed window, in a fresh process.

CPU times are thread CPU time (``time.thread_time_ns``), the median of ``--repeats``
interleaved runs, so another process on the machine slows the wall clock but not these.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.classifier import TfliteClassifier, interpreter_name
from kwsd.detection import resolve_detection
from kwsd.pipeline import Pipeline
from kwsd.smoother import RecognizeCommands

TARGET_MS_PER_AUDIO_S = 2.0
TARGET_INCREMENTAL_RATIO = 10.0
TARGET_STARTUP_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(demo_bundle_path()))
    parser.add_argument("--audio", default=str(demo_wav_path()), help="WAV to loop (default: demo.wav)")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per run (default 60)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per mode (default 5)")
    parser.add_argument("--block-ms", type=int, default=250, help="block size fed to the pipeline")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--no-training",
        action="store_true",
        help="skip 4 (needs TensorFlow, espeak-ng and sox; about a minute)",
    )
    args = parser.parse_args()

    bundle = read_bundle(args.model)
    spec = bundle.frontend
    # Exactly the settings `kwsd stream -m BUNDLE` runs with when given no flags.
    settings, clip_stride_ms = resolve_detection(bundle.detection, {}, window_stride_ms=spec.window_stride_ms)
    audio = read_wav(args.audio, spec.sample_rate_hz)
    need = int(args.seconds * spec.sample_rate_hz)
    audio = np.tile(audio, need // len(audio) + 1)[:need]
    block = spec.sample_rate_hz * args.block_ms // 1000
    classifier = TfliteClassifier(bundle)

    def run(recompute: bool) -> Pipeline:
        pipeline = Pipeline(
            spec,
            classifier,
            RecognizeCommands(bundle.labels, settings),
            clip_stride_ms,
            recompute_full_window=recompute,
            profile=True,
        )
        for start in range(0, len(audio), block):
            pipeline.feed(audio[start : start + block])
        return pipeline

    run(False)  # warm caches and the interpreter
    incremental, full = [], []
    for _ in range(args.repeats):
        incremental.append(run(False).stats)
        full.append(run(True).stats)

    audio_s = len(audio) / spec.sample_rate_hz

    def per_s(values: list[int]) -> float:
        return statistics.median(values) / 1e6 / audio_s

    total = per_s([s.total_ns for s in incremental])
    frontend = per_s([s.frontend_ns for s in incremental])
    interp = per_s([s.classifier_ns for s in incremental])
    smoother = per_s([s.smoother_ns for s in incremental])
    rest = total - frontend - interp - smoother
    full_frontend = per_s([s.frontend_ns for s in full])
    ratio = full_frontend / frontend
    windows = incremental[0].windows

    startup = [measure_startup(args.model) for _ in range(3)]
    startup_s = statistics.median(startup)

    cpu = platform.processor() or platform.machine()
    print(
        f"kwsd benchmark: {bundle.name} ({spec.describe()}), clip stride {clip_stride_ms} ms, "
        f"{interpreter_name()}, Python {platform.python_version()}, {cpu}, {_cores()} cores"
    )
    print(
        f"audio: {audio_s:.0f} s looped from {Path(args.audio).name}, blocks of {args.block_ms} ms, "
        f"{windows} windows per run, median of {args.repeats} interleaved runs (thread CPU time)"
    )
    print()
    print("1. pipeline CPU per audio second (int16 samples in, detections out; WAV decoding excluded)")
    print(
        f"   total        {total:7.3f} ms  = {total / 10:.4f}% of one core "
        f"(target <= {TARGET_MS_PER_AUDIO_S} ms: {total / TARGET_MS_PER_AUDIO_S:.2f} x target) "
        f"{'OK' if total <= TARGET_MS_PER_AUDIO_S else 'OVER'}"
    )
    print(f"   front end    {frontend:7.3f} ms  ({frontend / total:5.1%})")
    print(
        f"   interpreter  {interp:7.3f} ms  ({interp / total:5.1%})  "
        f"= {interp * audio_s / windows * 1000:.1f} us per window"
    )
    print(f"   smoother     {smoother:7.3f} ms  ({smoother / total:5.1%})")
    print(f"   rest         {rest:7.3f} ms  ({rest / total:5.1%})  ring buffer, window slicing, bookkeeping")
    print()
    print("2. incremental front end vs recomputing the whole window every stride")
    print(
        f"   incremental {frontend:.3f} ms, full window {full_frontend:.3f} ms per audio second: "
        f"{ratio:.1f} x cheaper (target >= {TARGET_INCREMENTAL_RATIO:.0f} x) "
        f"{'OK' if ratio >= TARGET_INCREMENTAL_RATIO else 'UNDER'}"
    )
    print()
    print("3. start-up of `kwsd stream` to the first processed window (fresh process, wall clock)")
    print(
        f"   {startup_s * 1000:.0f} ms median of {len(startup)} "
        f"({', '.join(f'{s * 1000:.0f}' for s in startup)}) (target < {TARGET_STARTUP_S * 1000:.0f} ms: "
        f"{startup_s / TARGET_STARTUP_S:.2f} x target) {'OK' if startup_s < TARGET_STARTUP_S else 'OVER'}"
    )
    training = training_throughput(skip=args.no_training)
    if args.json:
        print(
            json.dumps(
                {
                    "training": training,
                    "cpu_ms_per_audio_s": round(total, 4),
                    "frontend_ms": round(frontend, 4),
                    "interpreter_ms": round(interp, 4),
                    "smoother_ms": round(smoother, 4),
                    "rest_ms": round(rest, 4),
                    "full_window_frontend_ms": round(full_frontend, 4),
                    "incremental_ratio": round(ratio, 2),
                    "startup_s": round(startup_s, 3),
                }
            )
        )
    return 0


def training_throughput(*, skip: bool) -> dict[str, Any] | None:
    """4: tools/benchmark_train.py's measurement on a small synthetic set made for it."""
    print()
    print("4. training throughput: steps per second from the feature pool vs recomputing features per step")
    missing = "--no-training" if skip else _missing_training_tools()
    if missing:
        print(f"   skipped: {missing}")
        return None
    import logging
    import tempfile

    tools = str(Path(__file__).resolve().parent.parent)
    if tools not in sys.path:
        sys.path.insert(0, tools)
    from tools import benchmark_train
    from tools.synth import synthesise

    logging.getLogger("synth").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kwsd-bench-") as tmp:
        synthesise(
            Path(tmp), ["yes", "no", "stop", "go"], ["up", "down"], voice_count=40, repetitions=1, seed=9
        )
        figures = benchmark_train.measure(benchmark_train.defaults(data_dir=tmp))
    for line in benchmark_train.report_lines(figures):
        print("   " + line.strip())
    return {k: v for k, v in figures.items() if not isinstance(v, list)}


def _missing_training_tools() -> str | None:
    import importlib.util
    import shutil

    if importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed (pip install 'kwsd[train]')"
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def measure_startup(model: str) -> float:
    """Wall time from spawning ``kwsd stream`` to its first processed window.

    The process is handed one second of audio on stdin; ``--stats`` reports when its first
    window was classified, counted from the command's start; the interpreter's own start-up
    before that (python itself, argparse) is added from outside.
    """
    clip = np.zeros(16000 + 320, np.int16).tobytes()
    result = subprocess.run(
        [sys.executable, "-m", "kwsd", "stream", "-", "-m", model, "--stats"],
        input=clip,
        capture_output=True,
        check=True,
    )
    match = re.search(r"start to first window (\d+) ms", result.stderr.decode())
    if not match:
        raise SystemExit(f"no first-window time in: {result.stderr.decode()}")
    inside = int(match.group(1)) / 1000
    # What comes before the command starts its clock: python itself and `import kwsd.cli`,
    # timed as a whole process that does only that (its exit included, so this errs high).
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import kwsd.cli"], check=True)
    before = time.perf_counter() - t0
    return before + inside


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
