"""A WAV through the daemon's pipeline: its detections, every window's scores, and the report."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.classifier import Classifier
from kwsd.detection import DetectionSettings
from kwsd.errors import AudioFormatError, InputNotFoundError
from kwsd.evaluate.scoring import MS_PER_HOUR, STATE_SCORING, StreamFigures, window_span_ms
from kwsd.evaluate.truth import GroundTruth
from kwsd.frontend import FrontendSpec
from kwsd.labels import SILENCE_LABEL
from kwsd.pipeline import Detection, Pipeline
from kwsd.smoother import RecognizeCommands, SmootherSettings
from kwsd.state import StateSettings, StateTracker

#: Audio is fed to the pipeline in blocks of this much (as ``kwsd stream`` reads a file).
BLOCK_MS = 250


# --------------------------------------------------------------------------------------
# Running a WAV through the daemon's pipeline.


@dataclass(frozen=True)
class RecordedScores:
    """Every window's scores from one run: ``times_ms[i]`` is window i's end (audio time)."""

    labels: tuple[str, ...]
    times_ms: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    clip_stride_ms: int
    window_ms: float
    audio_ms: float


@dataclass(frozen=True)
class AudioFacts:
    """Which audio was measured: file name, sha256 of its bytes, length at the model's rate."""

    path: str
    sha256: str
    samples: int
    sample_rate_hz: int

    @property
    def audio_ms(self) -> float:
        return self.samples * 1000 / self.sample_rate_hz

    @property
    def hours(self) -> float:
        return self.audio_ms / MS_PER_HOUR

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": Path(self.path).name,
            "path": self.path,
            "sha256": self.sha256,
            "seconds": round(self.audio_ms / 1000, 3),
            "hours": round(self.hours, 6),
        }


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot read ({err.strerror or err})") from None
    return digest.hexdigest()


def run_stream(
    path: str | os.PathLike[str],
    spec: FrontendSpec,
    classifier: Classifier,
    labels: Sequence[str],
    *,
    settings: DetectionSettings,
) -> tuple[list[Detection], RecordedScores, AudioFacts]:
    """``path`` through the daemon's :class:`~kwsd.pipeline.Pipeline` with ``settings``, in blocks of
    :data:`BLOCK_MS`: (its detections, every window's scores, which audio it was).

    Audio shorter than one clip of the model is refused (:class:`AudioFormatError`).
    """
    from kwsd.audio import open_audio

    path = os.fspath(path)
    pipeline = Pipeline(spec, classifier, labels, settings)
    times: list[int] = []
    scores: list[npt.NDArray[np.float32]] = []

    def keep(time_ms: int, window_scores: npt.NDArray[np.float32]) -> None:
        times.append(time_ms)
        scores.append(window_scores.copy())

    pipeline.on_scores = keep
    detections: list[Detection] = []
    with open_audio(path, spec.sample_rate_hz) as reader:
        for block in reader.blocks(spec.sample_rate_hz * BLOCK_MS // 1000):
            detections.extend(pipeline.feed(block))
    samples = pipeline.samples_seen
    if samples < spec.clip_samples:
        raise AudioFormatError(
            f"{path}: {samples * 1000 / spec.sample_rate_hz:.0f} ms of audio, shorter than one clip of "
            f"the model ({spec.clip_duration_ms} ms): nothing to evaluate"
        )
    recorded = RecordedScores(
        tuple(labels),
        np.array(times, np.int64),
        np.array(scores, np.float32).reshape(-1, len(labels)),
        settings.clip_stride_ms,
        window_span_ms(spec),
        samples * 1000 / spec.sample_rate_hz,
    )
    return detections, recorded, AudioFacts(path, file_sha256(path), samples, spec.sample_rate_hz)


def smooth_scores(
    times_ms: npt.NDArray[np.int64],
    scores: npt.NDArray[np.float32],
    labels: Sequence[str],
    settings: SmootherSettings,
    states: Mapping[str, StateSettings] | None = None,
) -> list[Detection]:
    """The detections the pipeline makes from these window scores: kwsd's own RecognizeCommands
    over them, its new commands other than silence, stamped with the end of the window that fired.

    With ``states``, as :meth:`~kwsd.pipeline.Pipeline.windows` does: the state labels' commands
    are not reported; their changes (:class:`~kwsd.state.StateTracker` over the smoother's
    averages) are, after the window's command, stamped with the window that decided them.
    """
    smoother = RecognizeCommands(labels, settings)
    tracker = StateTracker(labels, states) if states else None
    out: list[Detection] = []
    for time_ms, window_scores in zip(times_ms, scores, strict=True):
        now_ms = int(time_ms)
        result = smoother.update(window_scores, now_ms)
        fired = result.is_new_command and result.label != SILENCE_LABEL
        if fired and result.label not in (states or {}):
            out.append(Detection(result.label, result.score, result.time_ms))
        if tracker is not None:
            averages = smoother.average_scores()
            if averages is not None:
                out += [Detection(c.label, c.score, now_ms, c) for c in tracker.update(now_ms, averages)]
    return out


def smooth(
    recorded: RecordedScores,
    settings: SmootherSettings,
    states: Mapping[str, StateSettings] | None = None,
) -> list[Detection]:
    """:func:`smooth_scores` on a run's recorded scores."""
    return smooth_scores(recorded.times_ms, recorded.scores, recorded.labels, settings, states)


def state_scoring(detections: Sequence[Detection], state_labels: Sequence[str]) -> dict[str, Any] | None:
    """How the state labels were scored (:data:`~kwsd.evaluate.scoring.STATE_SCORING`) and how
    many of their ons and offs ``detections`` hold, for a report; None without state labels."""
    if not state_labels:
        return None
    changes = [d.state for d in detections if d.state is not None]
    return {
        "labels": list(state_labels),
        "scored": STATE_SCORING,
        "ons": sum(c.on for c in changes),
        "offs_not_counted": sum(not c.on for c in changes),
    }


def stream_report(
    *,
    audio: AudioFacts,
    truth: GroundTruth,
    model: Mapping[str, Any],
    detection: Mapping[str, Any],
    tolerance_ms: float,
    result: StreamFigures,
    states: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report of one evaluation (fit to be stored in a bundle's ``metrics``);
    ``states`` (:func:`state_scoring`) says how state labels were scored, when there are any."""
    report: dict[str, Any] = {
        "kind": "kwsd streaming accuracy",
        "audio": audio.to_dict(),
        "truth": {
            "file": Path(truth.source).name,
            "words": len(truth.words),
            "skipped_lines": [{"line": n, "why": why} for n, why in truth.skipped],
        },
        "model": dict(model),
        "detection": dict(detection),
        "tolerance_ms": tolerance_ms,
        "times": "truth = clip starts; a detection's clip start = its window end - the window span",
        "false_accept": "a keyword detection (not _silence_/_unknown_) that is wrong or a false positive",
    }
    if states is not None:
        report["state_labels"] = dict(states)
    report["figures"] = result.to_dict()
    return report
