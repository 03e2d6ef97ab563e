"""The recognition pipeline: ring buffer -> incremental front end -> classifier -> smoother.

One code path for a WAV replay, stdin and (later) the microphone: samples go in, in
blocks of any size, detections come out stamped with audio time (samples seen), so the
same audio gives the same detections whatever the block sizes or the wall clock.

The classifier runs every ``clip_stride_ms`` of audio, on the ``frame_count`` frames
ending at that point. The first window ends when the first clip's frames are complete.
A ``micro`` front end with ``state: per_clip`` computes each window's frames as a front end
started at the window's first sample would (:class:`~kwsd.frontend.PerClipMicroFrontend`);
every other front end's frames are shared by the windows that overlap.

With the audio gate on (``audio.gate``, :mod:`kwsd.gate`) the front end still takes every
sample (it is incremental, and the frames must be whole when a word comes), but a window the
gate finds empty is not classified: the smoother is fed 1.0 for ``_silence_`` instead, and
:class:`PipelineStats` counts it in ``gate_skipped``.

Single-threaded: the thread that calls :meth:`Pipeline.feed` owns everything here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from kwsd.classifier import Classifier
from kwsd.detection import DetectionError, DetectionSettings, clip_stride_frames, resolve_detection
from kwsd.frontend import (
    FrontendKind,
    FrontendSpec,
    MicroState,
    PerClipMicroFrontend,
    StreamingFrontend,
    compute_features,
)
from kwsd.gate import EnergyGate, GateError, GateSettings, silence_scores
from kwsd.labels import SILENCE_LABEL
from kwsd.ringbuffer import FrameRing, SampleRing
from kwsd.smoother import RecognizeCommands
from kwsd.state import StateChange, StateError, StateTracker

if TYPE_CHECKING:
    from kwsd.bundle import Bundle

log = logging.getLogger(__name__)


class PipelineError(ValueError):
    """Settings the pipeline cannot run with (names the setting and what was expected)."""


def _hop_frames(spec: FrontendSpec, clip_stride_ms: int) -> int:
    try:
        return clip_stride_frames(clip_stride_ms, spec.window_stride_ms)
    except DetectionError as err:
        raise PipelineError(str(err)) from None


@dataclass(frozen=True)
class Detection:
    """A new command from the smoother, or a state label turning on or off (``state``).
    ``audio_time_ms`` is the audio time at the end of the window (the field name every command
    and the daemon's events use)."""

    label: str
    score: float
    audio_time_ms: int
    #: A state label's change (:mod:`kwsd.state`); None for an event.
    state: StateChange | None = None

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "label": self.label,
            "score": round(self.score, 5),
            "audio_time_ms": self.audio_time_ms,
        }
        if self.state is not None:
            values.update(self.state.fields())
        return values


@dataclass
class PipelineStats:
    """CPU time (thread time, ns) per stage; filled only when profiling is on."""

    frontend_ns: int = 0
    classifier_ns: int = 0
    smoother_ns: int = 0
    total_ns: int = 0
    windows: int = 0
    samples: int = 0
    #: Windows the audio gate kept from the interpreter (counted whether or not profiling is on).
    gate_skipped: int = 0
    #: Thread time of the gate's energy and floor tracking (profiling only).
    gate_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def build_pipeline(
    bundle: Bundle,
    settings: DetectionSettings | None = None,
    *,
    classifier: Classifier | None = None,
    profile: bool = False,
    recompute_full_window: bool = False,
    gate: GateSettings | None = None,
) -> Pipeline:
    """The pipeline for a bundle: what every command and the daemon run.

    ``settings``: None for the bundle's own recommendation (else TensorFlow's defaults);
    ``classifier``: None for a :class:`~kwsd.classifier.TfliteClassifier` of the bundle;
    ``gate``: the audio gate (None or not enabled: every window is classified).
    """
    if gate is not None and gate.enabled:
        check_gate(bundle.name, bundle.labels)
    if settings is None:
        try:
            stride_ms = bundle.frontend.window_stride_ms
            settings = resolve_detection(bundle.detection, {}, window_stride_ms=stride_ms)
        except DetectionError as err:
            raise PipelineError(str(err)) from None
    if classifier is None:
        from kwsd.classifier import TfliteClassifier

        classifier = TfliteClassifier(bundle)
    return Pipeline(
        bundle.frontend,
        classifier,
        bundle.labels,
        settings,
        profile=profile,
        recompute_full_window=recompute_full_window,
        gate=gate,
    )


def check_gate(model_name: str, labels: Sequence[str]) -> None:
    """Refuse the gate for a model it cannot serve: one without a ``_silence_`` label, which a
    closed window's scores need."""
    if SILENCE_LABEL not in labels:
        raise PipelineError(
            f"audio.gate.enabled: the model {model_name} has no {SILENCE_LABEL} label (its labels: "
            f"{', '.join(labels)}), so a window the gate skips has no score to give the smoother; "
            "turn the gate off (audio.gate.enabled: false) or use a model trained with silence"
        )


class Pipeline:
    """Feed int16 mono samples at the front end's rate; get detections back."""

    def __init__(
        self,
        spec: FrontendSpec,
        classifier: Classifier,
        labels: Sequence[str],
        settings: DetectionSettings,
        *,
        recompute_full_window: bool = False,
        profile: bool = False,
        gate: GateSettings | None = None,
    ) -> None:
        clip_stride_ms = settings.clip_stride_ms
        hop_frames = _hop_frames(spec, clip_stride_ms)
        self.spec = spec
        self.classifier = classifier
        self.settings = settings
        self.smoother = RecognizeCommands(labels, settings.smoother)
        try:
            self._states = StateTracker(labels, settings.states) if settings.states else None
        except StateError as err:
            raise PipelineError(f"states.{err}") from None
        #: Offs of labels a reload took out of state mode while on, reported at the next window.
        self._pending_off: list[StateChange] = []
        self._last_window_ms = 0
        self.clip_stride_ms = clip_stride_ms
        self._hop_frames = hop_frames
        self._frontend = StreamingFrontend(spec)
        self._frames = FrameRing(spec.frame_count, spec.feature_count)
        # Blocks are processed in chunks of at most one second, and the ring holds the
        # audio of one whole window plus two chunks, so every window is still in it.
        self._max_chunk = spec.sample_rate_hz
        self._samples = SampleRing(spec.span_samples + 2 * self._max_chunk)
        self._next_window_end = spec.frame_count  # absolute frame index (exclusive)
        self._per_clip: PerClipMicroFrontend | None = None
        if (
            spec.kind is FrontendKind.MICRO
            and spec.micro is not None
            and spec.micro.state is MicroState.PER_CLIP
        ):
            self._per_clip = PerClipMicroFrontend(spec, max_push_samples=self._max_chunk)
            self._per_clip.schedule(self._next_window_end, self._hop_frames)
        self._recompute = recompute_full_window
        self._profile = profile
        self.stats = PipelineStats()
        self.gate: EnergyGate | None = None
        if gate is not None and gate.enabled:
            check_gate("in use", labels)
            try:
                self.gate = EnergyGate(
                    gate, sample_rate_hz=spec.sample_rate_hz, span_samples=spec.span_samples
                )
            except GateError as err:
                raise PipelineError(f"audio.gate.{err}") from None
            self._silence_scores = silence_scores(tuple(labels), SILENCE_LABEL)
        #: Called with every (time_ms, scores) the smoother is fed, when set: the classifier's,
        #: or the gate's silence scores for a window it skipped.
        self.on_scores: Callable[[int, npt.NDArray[np.float32]], None] | None = None
        #: Called after every window with (time_ms, each label's smoothed score), when set.
        self.on_smoothed: Callable[[int, npt.NDArray[np.float64]], None] | None = None

    def set_detection(self, settings: DetectionSettings) -> None:
        """Use new detection settings from the next window on (a config reload).

        The new smoother takes over the current one's history
        (:meth:`RecognizeCommands.continue_from`) and the front end and the frames already
        computed are kept: no gap in what the model hears, and no word reported twice because
        the settings changed.
        """
        clip_stride_ms = settings.clip_stride_ms
        hop_frames = _hop_frames(self.spec, clip_stride_ms)
        smoother = RecognizeCommands(self.smoother.labels, settings.smoother)
        smoother.continue_from(self.smoother)
        self.smoother = smoother
        if dict(settings.states) != dict(self.settings.states):
            previous = self._states
            self._states = StateTracker(smoother.labels, settings.states) if settings.states else None
            if previous is not None:
                if self._states is not None:
                    self._states.continue_from(previous)  # a sound still going stays on
                # A label on that is no longer a state label ends now: its off is not lost.
                self._pending_off += previous.ended_by(settings.states, self._last_window_ms)
        self.settings = settings
        self.clip_stride_ms = clip_stride_ms
        self._hop_frames = hop_frames
        if self._per_clip is not None:
            self._per_clip.schedule(self._next_window_end, self._hop_frames)

    def reset(self) -> None:
        """After a gap in the audio (a device reopened): no window may straddle it.

        The next window ends a whole window's worth of frames after the gap, not counting the
        frames that still take samples from before it, and the smoother's averaging starts
        afresh. Audio time goes on from where it was.
        """
        spec = self.spec
        straddling = -(-spec.window_samples // spec.stride_samples)  # frames holding old samples
        after = self._frames_available() + straddling + spec.frame_count
        self._next_window_end = max(self._next_window_end, after)
        if self._per_clip is not None:
            self._per_clip.schedule(self._next_window_end, self._hop_frames)
        self.smoother = RecognizeCommands(self.smoother.labels, self.smoother.settings)
        if self._states is not None:
            self._states.reset()

    @property
    def samples_seen(self) -> int:
        return self._samples.total_written

    def audio_time_ms(self) -> int:
        return self.samples_seen * 1000 // self.spec.sample_rate_hz

    def feed(self, samples: npt.NDArray[np.int16]) -> list[Detection]:
        """Process one block of any size; returns the detections it completed, oldest first."""
        detections: list[Detection] = []
        for offset in range(0, len(samples), self._max_chunk):
            detections.extend(self._feed_chunk(samples[offset : offset + self._max_chunk]))
        return detections

    def _feed_chunk(self, samples: npt.NDArray[np.int16]) -> list[Detection]:
        clock = time.thread_time_ns if self._profile else None
        t0 = clock() if clock else 0
        spec = self.spec
        self._samples.write(samples)
        if self._per_clip is not None and not self._recompute:
            self._per_clip.push(samples)
        elif not self._recompute:
            self._frames.append(self._frontend.push(samples))
        frames_total = self._frames_available()
        t1 = clock() if clock else 0
        if clock:
            self.stats.frontend_ns += t1 - t0
        gate = self.gate
        if gate is not None:
            gate.push(samples)
            if clock:
                t1b = clock()
                self.stats.gate_ns += t1b - t1
        detections: list[Detection] = []
        while self._next_window_end <= frames_total:
            end = self._next_window_end
            self._next_window_end += self._hop_frames
            t2 = clock() if clock else 0
            scores: npt.NDArray[np.float32] | None = None
            if gate is not None and not gate.is_open(spec.frame_end_sample(end - 1)):
                scores = self._silence_scores.copy()  # the hooks may keep it
                self.stats.gate_skipped += 1
                if self._per_clip is not None and not self._recompute:
                    self._per_clip.discard(end)  # computed with the frames; not needed
            elif self._recompute:
                window = self._full_window(end)
                if clock:
                    t3 = clock()
                    self.stats.frontend_ns += t3 - t2
                    t2 = t3
            elif self._per_clip is not None:
                window = self._per_clip.window(end)  # this window's own, fresh front end
            else:
                window = self._frames.window(end)
            if scores is None:
                scores = self.classifier.classify(window)
            t3 = clock() if clock else 0
            time_ms = spec.frame_end_ms(end - 1)
            self._last_window_ms = time_ms
            if self.on_scores is not None:
                self.on_scores(time_ms, scores)
            result = self.smoother.update(scores, time_ms)
            fired = result.is_new_command and result.label != SILENCE_LABEL
            if fired and result.label not in self.settings.states:  # a state label reports on/off
                detections.append(Detection(result.label, result.score, time_ms))
            if self._pending_off:
                detections += [Detection(c.label, c.score, time_ms, c) for c in self._pending_off]
                self._pending_off = []
            if self.on_smoothed is not None or self._states is not None:
                averages = self.smoother.average_scores()
                if averages is not None:
                    if self._states is not None:
                        changes = self._states.update(time_ms, averages)
                        detections += [Detection(c.label, c.score, time_ms, c) for c in changes]
                    if self.on_smoothed is not None:
                        self.on_smoothed(time_ms, averages)
            if clock:
                t4 = clock()
                self.stats.classifier_ns += t3 - t2
                self.stats.smoother_ns += t4 - t3
            self.stats.windows += 1
        self.stats.samples += len(samples)
        if clock:
            self.stats.total_ns += clock() - t0
        return detections

    def _frames_available(self) -> int:
        """Complete frames in the audio so far (absolute count)."""
        if self._per_clip is not None and not self._recompute:
            return self._per_clip.frames_total
        if not self._recompute:
            return self._frames.total
        seen, spec = self._samples.total_written, self.spec
        return 0 if seen < spec.window_samples else 1 + (seen - spec.window_samples) // spec.stride_samples

    def _full_window(self, end_frame: int) -> npt.NDArray[np.float32]:
        """The benchmark's baseline: recompute every frame of the window from the ring."""
        spec = self.spec
        start_sample = (end_frame - spec.frame_count) * spec.stride_samples
        audio = self._samples.read(start_sample, start_sample + spec.span_samples)
        return compute_features(spec, audio)
