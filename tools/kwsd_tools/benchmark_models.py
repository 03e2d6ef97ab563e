"""Section 8 of tools/benchmark.py: the Pi budget of several models sharing one front end.

The audio is section 7's quiet-room mix (:func:`kwsd_tools.benchmark_gate.make_mix`), shorter
by default. It runs through a :class:`~kwsd.pipeline.MultiPipeline` of 1, 3 and 10 copies of
the bundle (each with its own :class:`~kwsd.classifier.TfliteClassifier`, its own interpreter,
as the daemon loads them, a name of its own and the bundle's recommended detection settings),
with the audio gate off and on (``GateSettings(enabled=True)``'s defaults), all in the same
run, in the daemon's 20 ms blocks (``audio.block_ms``'s default; section 7 uses the run's
``--block-ms``, 250 ms unless given). The section prints thread CPU per audio second, split
into front end (counted once per front end), interpreter (the classifier stage), smoother and
gate; the cost of each model added; whether 10 models are under the target; and two checks
that sharing changes nothing: one front end is computed, and each model's detections are
exactly those of the single model on the same audio.

No Pi is here to measure on, so the figures are projected to a share of one Pi core by a ratio
measured in the run: 7-Zip's built-in benchmark (one thread) rated here, against the same
benchmark's published results on a Pi 3 B+ and a Zero 2 W (:data:`PI_REFERENCES`). The
constants of that projection, and its uncertainty and why, are in :data:`PI_REFERENCES`,
:data:`PI_UNCERTAINTY` and :data:`UNCERTAINTY_NOTE` below, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kwsd.bundle import Bundle
from kwsd.classifier import TfliteClassifier
from kwsd.config import AudioConfig
from kwsd.detection import DetectionSettings
from kwsd.gate import GateSettings, describe
from kwsd.pipeline import Detection, Model, MultiPipeline, PipelineStats
from kwsd_tools.benchmark_gate import make_mix

log = logging.getLogger(__name__)

#: How many copies of the model share the front end, in the order they are run.
MODEL_COUNTS = (1, 3, 10)
#: Issue 16's target: 10 models sharing a front end under this many ms of CPU per audio second.
TARGET_TEN_MODELS_MS = 10.0


@dataclass(frozen=True)
class PiReference:
    """A Pi's published 7-Zip benchmark total (all four cores, MIPS) and where it comes from."""

    board: str
    clock_mhz: int
    total_mips: int
    #: The result the figure comes from (a row of :data:`REFERENCE_SOURCE`'s table).
    result: str


#: The published figures: sbc-bench's results table, column "7-zip" (7-Zip's benchmark, the
#: total rating of all cores; p7zip 16.02 on Raspberry Pi OS / Raspbian, 32-bit userland).
REFERENCE_SOURCE = "https://github.com/ThomasKaiser/sbc-bench/blob/master/Results.md"
PI_REFERENCES = (
    # "Raspberry Pi Zero 2 | 1000 MHz | 5.10 | Raspberry Pi OS Buster | 3030"
    PiReference("Pi Zero 2 W", 1000, 3030, "http://ix.io/3E85"),
    # "Raspberry Pi Zero 2 | 1200 MHz | 5.10 | Raspberry Pi OS Buster | 3640": the Zero 2 W's
    # Cortex-A53 at a Pi 3 B's clock; the table has no Pi 3 B row.
    PiReference("Pi 3 B", 1200, 3640, "http://ix.io/3DeL"),
    # "Raspberry Pi 3 B+ | normal | 4.14 | Raspbian Stretch | 3240"; its other rows span 2100
    # (under-voltage) to 3670 (with a fan).
    PiReference("Pi 3 B+", 1400, 3240, "http://ix.io/1ism"),
)
#: The Pis' cores: a published total is divided by this for one core's rating. 7-Zip's
#: benchmark scales nearly linearly over cores; where it scales less, one Pi core is faster
#: than this assumes and the projection errs high.
PI_CORES = 4
#: What runs here: one thread, the 4 MB dictionary only (the published runs go up to 32 MB,
#: whose ratings differ from 4 MB's by a few percent here), one pass. The rating taken is
#: "R/U" (rating per 100 % of one core), so another process on this machine does not lower it.
REFERENCE_COMMAND = ("b", "1", "-mmt1", "-md22")
#: Where the true Pi figure may lie, as multiples of the projection.
PI_UNCERTAINTY = (0.8, 2.5)
UNCERTAINTY_NOTE = (
    "low end: the best-cooled Pi 3 B+ row (3670 against 3240, x0.88) and 7-Zip scaling below "
    "4 x over four cores; high end: the under-voltage Pi 3 B+ row (2100 against 3240, x1.54: "
    "under-voltage or heat lower a Pi's clock) times a judged x1.6, not measured, for the workload "
    "unlike 7-Zip: TFLite's int8 kernels and numpy's FFT use AVX2/AVX-512 here and 128-bit NEON on "
    "the in-order A53, and CPython's interpreter loop suffers more on an in-order core"
)


@dataclass(frozen=True)
class Run:
    """One run's figures: ms of thread CPU per audio second, and the checks."""

    models: int
    gate: bool
    #: The pipeline's cost with no stage timed: what the daemon spends.
    untimed_ms: float
    #: The run with every stage timed (its clock reads included), which the stages split.
    total_ms: float
    frontend_ms: float
    interpreter_ms: float
    smoother_ms: float
    gate_ms: float
    frontends: int
    windows: int
    windows_skipped: int
    detections: int
    same_as_single: bool

    @property
    def rest_ms(self) -> float:
        return self.total_ms - self.frontend_ms - self.interpreter_ms - self.smoother_ms - self.gate_ms


def _models(bundle: Bundle, settings: DetectionSettings, count: int) -> list[Model]:
    labels = tuple(bundle.labels)
    return [
        Model(f"{bundle.name}-{index + 1}", bundle.frontend, TfliteClassifier(bundle), labels, settings)
        for index in range(count)
    ]


def _feed(pipeline: MultiPipeline, audio: np.ndarray, block: int) -> list[Detection]:
    detections: list[Detection] = []
    for start in range(0, len(audio), block):
        detections += pipeline.feed(audio[start : start + block])
    return detections


def _events(detections: list[Detection], model: str | None) -> list[tuple[str, float, int]]:
    return [(d.label, d.score, d.audio_time_ms) for d in detections if d.model == model]


def measure_runs(
    bundle: Bundle, settings: DetectionSettings, audio: np.ndarray, *, block_ms: int, repeats: int = 1
) -> list[Run]:
    """Every count of :data:`MODEL_COUNTS`, gate off then on, over ``audio`` in ``block_ms``
    blocks, ``repeats`` rounds interleaved, each untimed and then with its stages timed; of
    each, the round with the median untimed total, checked in every round."""
    rate = bundle.frontend.sample_rate_hz
    block = rate * block_ms // 1000
    audio_s = len(audio) / rate
    # Warm the interpreter, numpy's FFT plans and the caches on a minute of the audio, uncounted.
    _feed(MultiPipeline(_models(bundle, settings, 1)), audio[: 60 * rate], block)
    rounds: dict[tuple[bool, int], list[Run]] = {}
    for _ in range(max(1, repeats)):
        for gate in (None, GateSettings(enabled=True)):
            single: list[tuple[str, float, int]] | None = None
            for count in MODEL_COUNTS:
                # The same run untimed first: timing every stage reads a thread clock three
                # times per window and model (about 0.7 us each here), which is no part of
                # the daemon's cost; the timed run then says where the time goes.
                untimed = MultiPipeline(_models(bundle, settings, count), gate=gate)
                started = time.thread_time_ns()
                _feed(untimed, audio, block)
                untimed_ns = time.thread_time_ns() - started
                pipeline = MultiPipeline(_models(bundle, settings, count), profile=True, gate=gate)
                detections = _feed(pipeline, audio, block)
                stats: PipelineStats = pipeline.stats
                if count == 1:
                    single = _events(detections, None)
                same = (
                    all(_events(detections, name) == single for name in pipeline.names) if count > 1 else True
                )

                def ms(ns: int) -> float:
                    return ns / 1e6 / audio_s

                rounds.setdefault((gate is not None, count), []).append(
                    Run(
                        models=count,
                        gate=gate is not None,
                        untimed_ms=ms(untimed_ns),
                        total_ms=ms(stats.total_ns),
                        frontend_ms=ms(stats.frontend_ns),
                        interpreter_ms=ms(stats.classifier_ns),
                        smoother_ms=ms(stats.smoother_ns),
                        gate_ms=ms(stats.gate_ns),
                        frontends=len(pipeline.features),
                        windows=stats.windows,
                        windows_skipped=stats.gate_skipped,
                        detections=len(detections),
                        same_as_single=same,
                    )
                )
    runs = []
    for each in rounds.values():
        median = sorted(each, key=lambda run: run.untimed_ms)[len(each) // 2]
        runs.append(dataclasses.replace(median, same_as_single=all(run.same_as_single for run in each)))
    return runs


@dataclass(frozen=True)
class PiProjection:
    """One core's 7-Zip rating here and each Pi's, and so how many times slower each Pi core is."""

    here_mips: float
    slowdown: dict[str, float]  # board -> here_mips / the Pi's per-core rating


def reference_rating() -> float | None:
    """7-Zip's benchmark here, one thread: R/U MIPS of its total (None without 7-Zip)."""
    command = next((c for c in ("7zz", "7z", "7za") if shutil.which(c)), None)
    if command is None:
        return None
    done = subprocess.run([command, *REFERENCE_COMMAND], capture_output=True, text=True, check=True)
    # "Tot:    <usage %>   <R/U MIPS>   <rating MIPS>"
    match = re.search(r"^Tot:\s+(\d+)\s+(\d+)\s+(\d+)", done.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no 'Tot:' line in the output of {command} {' '.join(REFERENCE_COMMAND)}")
    return float(match.group(2))


def projection(here_mips: float) -> PiProjection:
    return PiProjection(
        here_mips=here_mips,
        slowdown={ref.board: here_mips / (ref.total_mips / PI_CORES) for ref in PI_REFERENCES},
    )


def _share(ms_here: float, slowdown: float) -> str:
    """ms of CPU per audio second here, as a share of one Pi core with the uncertainty range."""
    share = ms_here * slowdown / 1000
    low, high = PI_UNCERTAINTY
    return f"{share:.1%} ({share * low:.1%}..{share * high:.1%})"


def models_cost(
    bundle: Bundle,
    settings: DetectionSettings,
    *,
    hours: float,
    real_dir: Path,
    reference: bool = True,
    repeats: int = 1,
) -> dict[str, Any]:
    """Section 8, printed; returns its figures. ``reference``: run 7-Zip for the Pi projection."""
    block_ms = AudioConfig.block_ms
    audio, words, note = make_mix(bundle, hours=hours, real_dir=real_dir)
    audio_s = len(audio) / bundle.frontend.sample_rate_hz
    print()
    print(
        f"8. {', '.join(map(str, MODEL_COUNTS))} models sharing a front end ({bundle.name}, each its own "
        f"interpreter), gate off and {describe(GateSettings(enabled=True))}, over {audio_s / 3600:.2f} h of "
        f"quiet room with {len(words)} words"
    )
    print(
        f"   ({note}; blocks of {block_ms} ms, kwsd run's default audio.block_ms; thread CPU time, "
        f"the median of {max(1, repeats)} interleaved rounds)"
    )
    runs = measure_runs(bundle, settings, audio, block_ms=block_ms, repeats=repeats)
    print(
        "   ms of CPU per audio second   untimed  | timed: total  front end  interpreter  smoother   gate"
        "   rest   windows run"
    )
    for run in runs:
        ran = run.windows - run.windows_skipped
        print(
            f"   {run.models:2d} model{'s' if run.models > 1 else ' '}, gate {'on ' if run.gate else 'off'}"
            f"        {run.untimed_ms:7.3f}  |     {run.total_ms:7.3f}    {run.frontend_ms:7.3f}      "
            f"{run.interpreter_ms:7.3f}   {run.smoother_ms:7.3f} {run.gate_ms:6.3f} {run.rest_ms:6.3f}   "
            f"{ran} of {run.windows}"
        )
    print(
        "   (untimed: the pipeline as the daemon runs it, which the figures below use; timed: the same "
        "with a thread clock read around each stage, which splits it and costs the difference)"
    )
    by_key = {(run.models, run.gate): run for run in runs}
    most = MODEL_COUNTS[-1]
    figures: dict[str, Any] = {"audio_s": round(audio_s, 1), "words": len(words), "block_ms": block_ms}
    for gate in (False, True):
        first, last = by_key[(1, gate)], by_key[(most, gate)]
        increment = (last.untimed_ms - first.untimed_ms) / (most - 1)
        name = "on" if gate else "off"
        ok = last.untimed_ms < TARGET_TEN_MODELS_MS
        print(
            f"   gate {name}: each model added costs {increment:.3f} ms per audio second "
            f"({most} models' total less one model's, / {most - 1}); {most} models {last.untimed_ms:.3f} ms "
            f"(target < {TARGET_TEN_MODELS_MS:g} ms) {'OK' if ok else 'MISSED'}"
        )
        figures[f"gate_{name}"] = {
            str(run.models): {
                "untimed_ms": round(run.untimed_ms, 4),
                "total_ms": round(run.total_ms, 4),
                "frontend_ms": round(run.frontend_ms, 4),
                "interpreter_ms": round(run.interpreter_ms, 4),
                "smoother_ms": round(run.smoother_ms, 4),
                "gate_ms": round(run.gate_ms, 4),
                "windows": run.windows,
                "windows_skipped": run.windows_skipped,
            }
            for run in runs
            if run.gate == gate
        }
        figures[f"increment_{name}_ms"] = round(increment, 4)
        figures[f"ten_models_{name}_ok"] = ok
    frontends = sorted({run.frontends for run in runs})
    same = all(run.same_as_single for run in runs)
    print(
        f"   front ends computed: {', '.join(map(str, frontends))} (one for all the models: "
        f"{'yes' if frontends == [1] else 'NO'}); each model's detections equal the single model's "
        f"on the same audio, gate off and on: {'yes' if same else 'NO'} "
        f"({by_key[(1, False)].detections} off, {by_key[(1, True)].detections} on)"
    )
    figures["frontends"] = frontends
    figures["same_detections"] = same
    figures["pi"] = _pi_lines(by_key, reference=reference)
    return figures


def _pi_lines(by_key: dict[tuple[int, bool], Run], *, reference: bool) -> dict[str, Any] | None:
    """The projection to one Pi core, printed (None when 7-Zip is missing or not run)."""
    here = reference_rating() if reference else None
    if here is None:
        why = "not run" if not reference else "7-Zip is not installed: apt-get install 7zip"
        print(f"   Pi projection: skipped ({why})")
        return None
    project = projection(here)
    low, high = PI_UNCERTAINTY
    print(
        f"   Pi projection, method: 7-Zip's benchmark, one thread ({' '.join(REFERENCE_COMMAND)}, "
        f"R/U rating), {here:.0f} MIPS per core here, against its published all-core totals / {PI_CORES} "
        f"({REFERENCE_SOURCE}): "
        + ", ".join(
            f"{ref.board} at {ref.clock_mhz / 1000:g} GHz {ref.total_mips} ({ref.result}): "
            f"{project.slowdown[ref.board]:.1f} x slower"
            for ref in PI_REFERENCES
        )
    )
    print(f"   uncertainty x{low:g}..x{high:g} of the projection; {UNCERTAINTY_NOTE}")
    most = MODEL_COUNTS[-1]
    shares: dict[str, Any] = {"here_mips": round(here), "slowdown": {}}
    for ref in PI_REFERENCES:
        slowdown = project.slowdown[ref.board]
        shares["slowdown"][ref.board] = round(slowdown, 3)
        parts = []
        for gate in (False, True):
            one, ten = by_key[(1, gate)], by_key[(most, gate)]
            increment = (ten.untimed_ms - one.untimed_ms) / (most - 1)
            parts.append(
                f"gate {'on' if gate else 'off'}: 1 model {_share(one.untimed_ms, slowdown)}, "
                f"{most} {_share(ten.untimed_ms, slowdown)}, each added {_share(increment, slowdown)}"
            )
            shares[f"{ref.board} gate {'on' if gate else 'off'} {most} models"] = round(
                ten.untimed_ms * slowdown / 1000, 4
            )
        print(f"   {ref.board} ({ref.clock_mhz / 1000:g} GHz), share of one core: {'; '.join(parts)}")
    return shares
