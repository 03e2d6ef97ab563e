#!/usr/bin/env python3
"""kwsd's speed benchmark: every figure is measured in this one run, on this machine.

    python tools/benchmark.py [--model BUNDLE] [--seconds 60] [--repeats 5] [--no-training] [--sections 6]
                              [--gate-hours 1] [--models-hours 0.25] [--real-dir ../shared/realspeech]

Prints:
  1. CPU time per audio second of the stream pipeline (front end, interpreter, smoother and
     the rest: everything from int16 samples to detections; not WAV decoding or printing)
     with the model at its recommended clip stride, as a share of real time and against
     the 2 ms target;
  2. the incremental front end against recomputing the whole window at every stride,
     as a ratio of the front end's CPU time, both measured interleaved in this run;
  3. start-up of ``kwsd stream`` to the first processed window, in a fresh process;
  4. training throughput: tools/benchmark_train.py (the trainer's step on the feature pool
     against recomputing features every step) on a small espeak-ng set made for the run;
  5. streaming accuracy and false accepts per hour of the model on streams generated from
     that set (voices the demo model never heard): 10 minutes of words and 30 of background;
  6. pipeline CPU per audio second of a micro_speech-style model (tiny_conv, int8, 49 x 40
     micro features at 30/20 ms, clip stride 20 ms; made untrained here: the cost does not
     depend on the weights) with the micro front end per_clip (as train.py trains) and
     continuous (as the firmware runs), at the section's block size and at 20 ms blocks (the
     daemon's default audio.block_ms);
  7. the audio gate (audio.gate, kwsd/gate.py) over a realistic mix: ``--gate-hours`` (default
     1) of quiet room (the real set's background noise at -55 dBFS, else generated room noise)
     with a real spoken word every 2 to 4 minutes (test-partition keyword clips of
     ``--real-dir``, else the words of demo.wav): interpreter CPU per audio second with the gate
     off and on in this run, their ratio, and the words heard and detections lost or gained;
  8. 1, 3 and 10 copies of the model sharing one front end (each its own interpreter), gate off
     and on, over ``--models-hours`` (default 0.25) of section 7's mix in 20 ms blocks: CPU per
     audio second by stage, the cost of each model added, 10 models against the 10 ms target,
     checks that sharing changes no detection, and a projection to one Pi Zero 2 W / Pi 3 core
     from 7-Zip's benchmark run here against its published Pi results
     (kwsd_tools/benchmark_models.py states the method and its uncertainty).

CPU times are thread CPU time (``time.thread_time_ns``), the median of ``--repeats``
interleaved runs, so another process on the machine slows the wall clock but not these.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwsd.audio import read_wav
from kwsd.bundle import Bundle, demo_bundle_path, demo_wav_path, read_bundle
from kwsd.classifier import Kernels, TfliteClassifier, interpreter_name
from kwsd.config import AudioConfig
from kwsd.detection import DetectionSettings, resolve_detection
from kwsd.pipeline import Pipeline, PipelineStats, build_pipeline

TARGET_MS_PER_AUDIO_S = 2.0
TARGET_INCREMENTAL_RATIO = 10.0
TARGET_STARTUP_S = 1.0


def main() -> int:
    from kwsd.blas import use_one_blas_thread

    use_one_blas_thread()  # as the daemon runs (kwsd/blas.py)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(demo_bundle_path()))
    parser.add_argument("--audio", default=str(demo_wav_path()), help="WAV to loop (default: demo.wav)")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per run (default 60)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per mode (default 5)")
    parser.add_argument(
        "--block-ms", type=int, default=BATCHED_BLOCK_MS, help="block size fed to the pipeline (default 250)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument(
        "--no-training",
        action="store_true",
        help="skip 4, 5 and 6, the sections that make a data set or a model (4 and 6 need "
        "TensorFlow, 4 and 5 espeak-ng and sox; a few minutes)",
    )
    parser.add_argument(
        "--sections",
        type=_sections,
        default=SECTIONS,
        help="the sections to run, e.g. 6 or 1,2,6 (default: all; 1 and 2 share their runs)",
    )
    parser.add_argument(
        "--gate-hours", type=float, default=1.0, help="length of section 7's quiet-room mix (default 1)"
    )
    parser.add_argument(
        "--models-hours",
        type=float,
        default=DEFAULT_MODELS_HOURS,
        help=f"length of section 8's mix (default {DEFAULT_MODELS_HOURS})",
    )
    parser.add_argument(
        "--real-dir",
        default=str(DEFAULT_REAL_DIR),
        help="Speech Commands-style folder whose keyword clips and _background_noise_ section 7 "
        "mixes (default ../shared/realspeech; demo.wav's words and generated noise without it)",
    )
    args = parser.parse_args()
    sections: frozenset[int] = args.sections

    bundle = read_bundle(args.model)
    spec = bundle.frontend
    # Exactly the settings `kwsd stream -m BUNDLE` runs with when given no flags.
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=spec.window_stride_ms)
    audio = read_wav(args.audio, spec.sample_rate_hz)
    need = int(args.seconds * spec.sample_rate_hz)
    audio = np.tile(audio, need // len(audio) + 1)[:need]
    audio_s = len(audio) / spec.sample_rate_hz
    cpu = platform.processor() or platform.machine()
    print(
        f"kwsd benchmark: {bundle.name} ({spec.describe()}), clip stride {settings.clip_stride_ms} ms, "
        f"{interpreter_name()}, Python {platform.python_version()}, {cpu}, {_cores()} cores"
    )
    print(
        f"audio: {audio_s:.0f} s looped from {Path(args.audio).name}, blocks of {args.block_ms} ms, "
        f"median of {args.repeats} interleaved runs (thread CPU time)"
    )
    figures: dict[str, Any] = dict.fromkeys(
        (
            "cpu_ms_per_audio_s",
            "frontend_ms",
            "interpreter_ms",
            "smoother_ms",
            "rest_ms",
            "full_window_frontend_ms",
            "incremental_ratio",
            "other_block_ms",
            "other_block_cpu_ms_per_audio_s",
            "startup_s",
        )
    )
    if sections & {1, 2}:
        figures.update(stream_cost(bundle, audio, args.block_ms, args.repeats, settings=settings))
    if 3 in sections:
        startup = [measure_startup(args.model) for _ in range(3)]
        startup_s = statistics.median(startup)
        figures["startup_s"] = round(startup_s, 3)
        print()
        print("3. start-up of `kwsd stream` to the first processed window (fresh process, wall clock)")
        print(
            f"   {startup_s * 1000:.0f} ms median of {len(startup)} "
            f"({', '.join(f'{s * 1000:.0f}' for s in startup)}) (target < {TARGET_STARTUP_S * 1000:.0f} ms: "
            f"{startup_s / TARGET_STARTUP_S:.2f} x target) {'OK' if startup_s < TARGET_STARTUP_S else 'OVER'}"
        )
    training = streaming = micro = gate = models = None
    if sections & {4, 5}:
        with synthetic_set(skip=args.no_training) as data_dir:
            if 4 in sections:
                training = training_throughput(data_dir, skip=args.no_training)
            if 5 in sections:
                streaming = streaming_accuracy(data_dir, args.model, skip=args.no_training)
    if 6 in sections:
        micro = micro_speech_cost(audio, args.block_ms, args.repeats, skip=args.no_training)
    if 7 in sections:
        from kwsd_tools.benchmark_gate import gate_cost

        gate = gate_cost(
            bundle, settings, hours=args.gate_hours, real_dir=Path(args.real_dir), block_ms=args.block_ms
        )
    if 8 in sections:
        from kwsd_tools.benchmark_models import models_cost

        models = models_cost(
            bundle, settings, hours=args.models_hours, real_dir=Path(args.real_dir), repeats=args.repeats
        )
    if args.json:
        print(
            json.dumps(
                {
                    "training": training,
                    "streaming": streaming,
                    "micro_speech": micro,
                    "gate": gate,
                    "models": models,
                    **figures,
                }
            )
        )
    return 0


SECTIONS = frozenset(range(1, 9))
#: Where the README's commands find the real-speech set (relative to the checkout).
DEFAULT_REAL_DIR = Path("../shared/realspeech")
#: Section 8's default mix, hours: shorter than section 7's hour, as section 8 runs it six times
#: (up to ten models each) in 20 ms blocks; about a minute here.
DEFAULT_MODELS_HOURS = 0.25
#: The default block: frames batched per push. Section 1 also measures kwsd run's own
#: blocks (audio.block_ms, 20 ms: one frame per push), or these when the run uses those.
BATCHED_BLOCK_MS = 250


def _block_note(block_ms: int) -> str:
    if block_ms == AudioConfig.block_ms:
        return "kwsd run's default audio.block_ms"
    return f"audio.block_ms: {block_ms}"


def _sections(text: str) -> frozenset[int]:
    try:
        chosen = frozenset(int(part) for part in text.split(","))
    except ValueError:
        chosen = frozenset()
    if not chosen or not chosen <= SECTIONS:
        raise argparse.ArgumentTypeError(
            f"expected section numbers 1..{max(SECTIONS)} separated by commas, got {text!r}"
        )
    return chosen


@dataclass(frozen=True)
class PipelineCost:
    """Section 1's figures: ms of thread CPU time per audio second (medians of interleaved runs)."""

    total_ms: float
    frontend_ms: float
    interpreter_ms: float
    smoother_ms: float
    rest_ms: float  # ring buffer, window slicing, bookkeeping
    full_window_frontend_ms: float  # the front end recomputing the whole window every stride
    windows: int  # per run
    audio_s: float
    clip_stride_ms: int


def pipeline_cost(
    bundle: Bundle, audio: np.ndarray, *, block_ms: int, repeats: int,
    settings: DetectionSettings | None = None,
) -> PipelineCost:  # fmt: skip
    """The stream pipeline's CPU time per audio second on ``audio`` (int16 at the bundle's rate,
    fed in ``block_ms`` blocks), by default with exactly the settings ``kwsd stream -m BUNDLE``
    runs with when given no flags; the incremental front end and the full-window one
    interleaved, ``repeats`` runs each after one warm-up run."""
    spec = bundle.frontend
    if settings is None:
        settings = resolve_detection(bundle.detection, {}, window_stride_ms=spec.window_stride_ms)
    block = spec.sample_rate_hz * block_ms // 1000
    classifier = TfliteClassifier(bundle)

    def run(recompute: bool) -> Pipeline:
        pipeline = build_pipeline(
            bundle, settings, classifier=classifier, recompute_full_window=recompute, profile=True
        )
        for start in range(0, len(audio), block):
            pipeline.feed(audio[start : start + block])
        return pipeline

    run(False)  # warm caches and the interpreter
    incremental, full = [], []
    for _ in range(repeats):
        incremental.append(run(False).stats)
        full.append(run(True).stats)

    audio_s = len(audio) / spec.sample_rate_hz

    def per_s(values: list[int]) -> float:
        return statistics.median(values) / 1e6 / audio_s

    total = per_s([s.total_ns for s in incremental])
    frontend = per_s([s.frontend_ns for s in incremental])
    interp = per_s([s.classifier_ns for s in incremental])
    smoother = per_s([s.smoother_ns for s in incremental])
    return PipelineCost(
        total_ms=total,
        frontend_ms=frontend,
        interpreter_ms=interp,
        smoother_ms=smoother,
        rest_ms=total - frontend - interp - smoother,
        full_window_frontend_ms=per_s([s.frontend_ns for s in full]),
        windows=incremental[0].windows,
        audio_s=audio_s,
        clip_stride_ms=settings.clip_stride_ms,
    )


def stream_cost(
    bundle: Any, audio: np.ndarray, block_ms: int, repeats: int, *, settings: DetectionSettings
) -> dict[str, float]:
    """Sections 1 and 2, printed: the pipeline's CPU per audio second with the bundle's model,
    split by stage, and the incremental front end against recomputing the whole window."""
    cost = pipeline_cost(bundle, audio, block_ms=block_ms, repeats=repeats, settings=settings)
    total, frontend, interp = cost.total_ms, cost.frontend_ms, cost.interpreter_ms
    smoother, rest, full_frontend = cost.smoother_ms, cost.rest_ms, cost.full_window_frontend_ms
    audio_s, windows = cost.audio_s, cost.windows
    ratio = full_frontend / frontend
    print()
    print(
        f"1. pipeline CPU per audio second (int16 samples in, detections out; WAV decoding excluded; "
        f"{windows} windows per run)"
    )
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
    # What `kwsd run` costs in its own blocks (one frame per push), or the batched figure.
    other_block_ms = AudioConfig.block_ms if block_ms != AudioConfig.block_ms else BATCHED_BLOCK_MS
    other = pipeline_cost(
        bundle,
        audio,
        block_ms=other_block_ms,
        repeats=repeats,
        settings=settings,
    )
    print(
        f"   in {other_block_ms} ms blocks ({_block_note(other_block_ms)}): total {other.total_ms:.3f} ms, "
        f"front end {other.frontend_ms:.3f}, interpreter {other.interpreter_ms:.3f}, "
        f"smoother {other.smoother_ms:.3f}, rest {other.rest_ms:.3f}"
    )
    print()
    print("2. incremental front end vs recomputing the whole window every stride")
    print(
        f"   incremental {frontend:.3f} ms, full window {full_frontend:.3f} ms per audio second: "
        f"{ratio:.1f} x cheaper (target >= {TARGET_INCREMENTAL_RATIO:.0f} x) "
        f"{'OK' if ratio >= TARGET_INCREMENTAL_RATIO else 'UNDER'}"
    )
    return {
        "cpu_ms_per_audio_s": round(total, 4),
        "frontend_ms": round(frontend, 4),
        "interpreter_ms": round(interp, 4),
        "smoother_ms": round(smoother, 4),
        "rest_ms": round(rest, 4),
        "full_window_frontend_ms": round(full_frontend, 4),
        "incremental_ratio": round(ratio, 2),
        "other_block_ms": other_block_ms,
        "other_block_cpu_ms_per_audio_s": round(other.total_ms, 4),
    }


def micro_speech_cost(
    audio: np.ndarray, block_ms: int, repeats: int, *, skip: bool
) -> dict[str, float] | None:
    """Section 6: ms of pipeline CPU per audio second of a micro_speech-style model, per_clip and
    continuous, at ``block_ms`` and 20 ms blocks (None when skipped or TensorFlow is missing)."""
    print()
    print("6. a micro_speech-style model (tiny_conv, int8 49x40 micro, clip stride 20 ms): pipeline CPU")
    missing = "--no-training" if skip else _missing_tools((), tensorflow=True)
    if missing:
        print(f"   skipped ({missing})")
        return None
    from kwsd.bundle import make_bundle
    from kwsd.frontend import FrontendKind, FrontendSpec, MicroParams, MicroState
    from kwsd_tools.training.console import native_output_to
    from kwsd_tools.training.export import convert
    from kwsd_tools.training.models import build_model

    labels = ("_silence_", "_unknown_", "yes", "no")
    figures: dict[str, float] = {}
    specs = {
        state: FrontendSpec(FrontendKind.MICRO, window_stride_ms=20, micro=MicroParams(state=state))
        for state in (MicroState.PER_CLIP, MicroState.CONTINUOUS)
    }
    frames, features = specs[MicroState.PER_CLIP].feature_shape
    # TensorFlow's C++ and converter lines go to a log, not between the figures.
    with native_output_to(Path(tempfile.gettempdir()) / "kwsd-benchmark-tensorflow.log"):
        model = build_model("tiny_conv", frames=frames, features=features, label_count=len(labels))
        representative = np.random.default_rng(0).uniform(0, 26, (50, frames, features)).astype(np.float32)
        _, int8 = convert(model, specs[MicroState.PER_CLIP], representative)
    settings = resolve_detection({}, {}, window_stride_ms=20)
    stride = settings.clip_stride_ms
    audio_s = len(audio) / specs[MicroState.PER_CLIP].sample_rate_hz
    windows_per_s = 1000 / stride
    classifiers = {
        state: TfliteClassifier(
            make_bundle(int8, labels, spec, name=f"micro-{state.value}", tool="benchmark")
        )
        for state, spec in specs.items()
    }
    xnnpack = TfliteClassifier(
        make_bundle(int8, labels, specs[MicroState.PER_CLIP], name="micro-xnnpack", tool="benchmark"),
        kernels=Kernels.XNNPACK,
    )
    runs = [(state, block) for state in specs for block in dict.fromkeys((block_ms, 20))]
    stats: dict[tuple[MicroState, int], list[PipelineStats]] = {run: [] for run in runs}
    invokes: dict[str, list[float]] = {"builtin": [], "xnnpack": []}
    invoke_count = int(audio_s * windows_per_s)
    for repeat in range(repeats + 1):  # the first round warms up and is not counted
        for state, block in runs:
            spec = specs[state]
            size = spec.sample_rate_hz * block // 1000
            pipeline = Pipeline(spec, classifiers[state], labels, settings, profile=True)
            for start in range(0, len(audio), size):
                pipeline.feed(audio[start : start + size])
            if repeat:
                stats[(state, block)].append(pipeline.stats)
        for name, classifier in (("builtin", classifiers[MicroState.PER_CLIP]), ("xnnpack", xnnpack)):
            t0 = time.thread_time_ns()
            for _ in range(invoke_count):
                classifier.invoke()
            if repeat:
                invokes[name].append((time.thread_time_ns() - t0) / 1e3 / invoke_count)

    def per_s(values: list[int]) -> float:
        return statistics.median(values) / 1e6 / audio_s

    invoke_us = statistics.median(invokes["builtin"])
    floor = invoke_us * windows_per_s / 1000
    xnnpack_us = statistics.median(invokes["xnnpack"])
    print(
        f"   (TFLite's builtin kernels, kwsd's choice for a micro front end; {windows_per_s:.0f} windows "
        "per audio second; front end = framing, FFT, filterbank, noise/PCAN/log and window assembly; "
        "interpreter = quantising, invoke, reading the scores)"
    )
    for state, block in runs:
        runs_stats = stats[(state, block)]
        total = per_s([s.total_ns for s in runs_stats])
        frontend = per_s([s.frontend_ns for s in runs_stats])
        interp = per_s([s.classifier_ns for s in runs_stats])
        smoother = per_s([s.smoother_ns for s in runs_stats])
        figures[f"{state.value}_{block}ms_blocks"] = round(total, 4)
        print(
            f"   {state.value:10} {block:4d} ms blocks: {total:7.3f} ms per audio second "
            f"({total / TARGET_MS_PER_AUDIO_S:.2f} x the {TARGET_MS_PER_AUDIO_S} ms target): "
            f"front end {frontend:.3f}, interpreter {interp:.3f}, smoother {smoother:.3f}, "
            f"rest {total - frontend - interp - smoother:.3f}"
        )
    figures["invoke_us"] = round(invoke_us, 2)
    figures["invoke_floor_ms"] = round(floor, 4)
    figures["xnnpack_invoke_us"] = round(xnnpack_us, 2)
    print(
        f"   floor: the interpreter's invoke alone, {invoke_us:.1f} us per window = {floor:.3f} ms per "
        f"audio second at {windows_per_s:.0f} windows per second ({floor / TARGET_MS_PER_AUDIO_S:.2f} x "
        f"the target), which no front-end work removes (XNNPACK's kernels: {xnnpack_us:.1f} us)"
    )
    return figures


#: Voices of the synthetic set sections 4 and 5 use: another seed than the demo's training set,
#: so the streams of section 5 are spoken by voices the demo model never heard.
SYNTH_SEED = 9


@contextlib.contextmanager
def synthetic_set(*, skip: bool) -> Iterator[Path | None]:
    """A small espeak-ng set in a temporary folder (None when skipped or espeak-ng/sox are missing)."""
    if skip or _missing_tools(("espeak-ng", "sox")):
        yield None
        return
    from kwsd_tools.synth import synthesise

    logging.getLogger("synth").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kwsd-bench-") as tmp:
        words, others = ["yes", "no", "stop", "go"], ["up", "down", "left", "right"]
        synthesise(Path(tmp), words, others, voice_count=60, repetitions=1, seed=SYNTH_SEED)
        yield Path(tmp)


def training_throughput(data_dir: Path | None, *, skip: bool) -> dict[str, Any] | None:
    """4: tools/benchmark_train.py's measurement on the synthetic set."""
    print()
    print("4. training throughput: steps per second from the feature pool vs recomputing features per step")
    missing = "--no-training" if skip else _missing_tools(("espeak-ng", "sox"), tensorflow=True)
    if missing or data_dir is None:
        print(f"   skipped: {missing}")
        return None
    from kwsd_tools import benchmark_train

    figures = benchmark_train.measure(benchmark_train.defaults(data_dir=str(data_dir)))
    for line in benchmark_train.report_lines(figures):
        print("   " + line.strip())
    return {k: v for k, v in figures.items() if not isinstance(v, list)}


def streaming_accuracy(data_dir: Path | None, model: str, *, skip: bool) -> dict[str, Any] | None:
    """5: ``kwsd evaluate`` of the model on generated streams of the set's voices."""
    print()
    print("5. streaming accuracy on generated audio (tools/make_stream.py, then `kwsd evaluate`)")
    missing = "--no-training" if skip else _missing_tools(("espeak-ng", "sox"))
    if missing or data_dir is None:
        print(f"   skipped: {missing}")
        return None
    env = dict(os.environ)
    results: dict[str, Any] = {}
    streams = (
        ("words", ["--duration_s", "600"]),
        ("background", ["--background_only", "--duration_s", "1800"]),
    )
    for name, extra in streams:
        wav = data_dir / f"{name}.wav"
        make = [sys.executable, "-m", "kwsd_tools.make_stream", "--data_dir", str(data_dir)]
        make += ["--wanted_words", "yes,no,stop,go", "--output_audio_file", str(wav), "--seed", "1", *extra]
        subprocess.run(make, check=True, capture_output=True, env=env)
        evaluate = [sys.executable, "-m", "kwsd", "evaluate", "-m", model, "--audio", str(wav)]
        evaluate += ["--truth", str(wav.with_suffix(".txt")), "--json"]
        result = subprocess.run(evaluate, check=True, capture_output=True, env=env)
        results[name] = json.loads(result.stdout)["figures"]
    words, noise = results["words"], results["background"]
    hours = words["hours"] + noise["hours"]
    false_accepts = words["false_accepts"] + noise["false_accepts"]
    print(
        f"   {words['words']} words in {words['hours'] * 60:.0f} min by voices the demo never heard: "
        f"{words['matched_percent']:.1f}% matched, {words['correct_percent']:.1f}% correct, "
        f"{words['wrong_percent']:.1f}% wrong, {words['false_positive_percent']:.1f}% false positive; "
        f"miss rate {100 * words['miss_rate']:.1f}%"
    )
    print(
        f"   false accepts: {false_accepts} in {hours:.2f} h (the words + {noise['hours'] * 60:.0f} min of "
        f"background only) = {false_accepts / hours:.2f} per hour"
    )
    return {
        "correct_percent": words["correct_percent"],
        "miss_rate": words["miss_rate"],
        "false_accepts": false_accepts,
        "hours": round(hours, 3),
        "false_accepts_per_hour": round(false_accepts / hours, 3),
    }


def _missing_tools(commands: tuple[str, ...], *, tensorflow: bool = False) -> str | None:
    import importlib.util
    import shutil

    if tensorflow and importlib.util.find_spec("tensorflow") is None:
        return "TensorFlow is not installed (pip install 'kwsd[train]')"
    for tool in commands:
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
    return os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
