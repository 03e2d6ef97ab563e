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
:class:`PipelineStats` counts it in ``gate_skipped``. The ``embedding`` front end computes
its costly part, the embeddings, only for the windows that are read
(:class:`~kwsd.embedding.EmbeddingWindows`), so there the gate saves the front end's work too.

Single-threaded: the thread that calls :meth:`Pipeline.feed` owns everything here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.ringbuffer import FrameRing, SampleRing
from kwsd.smoother import RecognizeCommands
from kwsd.state import StateChange, StateError, StateTracker

if TYPE_CHECKING:
    from kwsd.bundle import Bundle
    from kwsd.embedding import EmbeddingWindows

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
    #: The model that heard it, when several listen (:class:`MultiPipeline`); else None.
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "label": self.label,
            "score": round(self.score, 5),
            "audio_time_ms": self.audio_time_ms,
        }
        if self.model is not None:
            values["model"] = self.model
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


class Features:
    """One front end's work on the audio: the sample ring, the incremental front end and its
    frames, and the audio gate. Every model whose front end is this one reads its windows from
    here, so the frames are computed once however many models share them (:class:`MultiPipeline`).

    ``per_clip`` (a ``micro`` front end with ``state: per_clip``) computes each window's frames
    afresh, on the schedule of the one model it serves: such a front end is never shared.
    """

    def __init__(
        self,
        spec: FrontendSpec,
        *,
        recompute_full_window: bool = False,
        gate: GateSettings | None = None,
    ) -> None:
        self.spec = spec
        lazy_embedding = spec.kind is FrontendKind.EMBEDDING and not recompute_full_window
        # Not for the embedding: EmbeddingWindows does its work (and would load its models twice).
        self._frontend = None if lazy_embedding else StreamingFrontend(spec)
        self._frames = FrameRing(spec.frame_count, 0 if lazy_embedding else spec.feature_count)
        # Blocks are processed in chunks of at most one second, and the ring holds the
        # audio of one whole window plus two chunks, so every window is still in it.
        self.max_chunk = spec.sample_rate_hz
        self._samples = SampleRing(spec.span_samples + 2 * self.max_chunk)
        self.per_clip: PerClipMicroFrontend | None = None
        #: ``embedding``: mel frames as audio comes, embeddings when a window is read.
        self.embedding: EmbeddingWindows | None = None
        if lazy_embedding:
            from kwsd.embedding import EmbeddingWindows

            chunk_frames = self.max_chunk // spec.stride_samples + 1
            self.embedding = EmbeddingWindows(spec, kept_frames=spec.frame_count + 2 * chunk_frames)
        if (
            spec.kind is FrontendKind.MICRO
            and spec.micro is not None
            and spec.micro.state is MicroState.PER_CLIP
            and not recompute_full_window
        ):
            self.per_clip = PerClipMicroFrontend(spec, max_push_samples=self.max_chunk)
        self.recompute = recompute_full_window
        self.gate: EnergyGate | None = None
        if gate is not None and gate.enabled:
            try:
                self.gate = EnergyGate(
                    gate, sample_rate_hz=spec.sample_rate_hz, span_samples=spec.span_samples
                )
            except GateError as err:
                raise PipelineError(f"audio.gate.{err}") from None
        #: Thread time (ns) of the front end and of the gate, when the caller times them.
        self.frontend_ns = 0
        self.gate_ns = 0

    @property
    def shareable(self) -> bool:
        return self.per_clip is None and not self.recompute

    @property
    def samples_seen(self) -> int:
        return self._samples.total_written

    def push(self, samples: npt.NDArray[np.int16], clock: Callable[[], int] | None) -> None:
        """One chunk of at most :attr:`max_chunk` samples into the rings, the front end and the gate."""
        t0 = clock() if clock else 0
        self._samples.write(samples)
        if self.per_clip is not None:
            self.per_clip.push(samples)
        elif self.embedding is not None:
            self.embedding.push(samples)
        elif self._frontend is not None and not self.recompute:
            self._frames.append(self._frontend.push(samples))
        if clock:
            t1 = clock()
            self.frontend_ns += t1 - t0
            t0 = t1
        if self.gate is not None:
            self.gate.push(samples)
            if clock:
                self.gate_ns += clock() - t0

    def frames_available(self) -> int:
        """Complete frames in the audio so far (absolute count)."""
        if self.per_clip is not None:
            return self.per_clip.frames_total
        if self.embedding is not None:
            return self.embedding.frames_total
        if not self.recompute:
            return self._frames.total
        seen, spec = self._samples.total_written, self.spec
        return 0 if seen < spec.window_samples else 1 + (seen - spec.window_samples) // spec.stride_samples

    def is_open(self, end_frame: int) -> bool:
        """Whether the window ending at ``end_frame`` is to be classified (no gate: always)."""
        return self.gate is None or self.gate.is_open(self.spec.frame_end_sample(end_frame - 1))

    def skip(self, end_frame: int) -> None:
        """The window ending at ``end_frame`` will not be read (the gate kept it from the model)."""
        if self.per_clip is not None:
            self.per_clip.discard(end_frame)  # computed with the frames; not needed

    def window(self, end_frame: int) -> npt.NDArray[np.float32]:
        if self.recompute:
            return self._full_window(end_frame)
        if self.per_clip is not None:
            return self.per_clip.window(end_frame)  # this window's own, fresh front end
        if self.embedding is not None:
            return self.embedding.window(end_frame)  # its embeddings, each computed once
        return self._frames.window(end_frame)

    def _full_window(self, end_frame: int) -> npt.NDArray[np.float32]:
        """The benchmark's baseline: recompute every frame of the window from the ring."""
        spec = self.spec
        start_sample = (end_frame - spec.frame_count) * spec.stride_samples
        audio = self._samples.read(start_sample, start_sample + spec.span_samples)
        return compute_features(spec, audio)


class Pipeline:
    """Feed int16 mono samples at the front end's rate; get detections back.

    ``features``: the :class:`Features` this model reads, shared with other models by a
    :class:`MultiPipeline` (which then feeds it); None for a front end of its own.
    """

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
        features: Features | None = None,
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
        #: Whether :meth:`feed` feeds the front end (else a MultiPipeline does, once for all).
        self._own_features = features is None
        if features is None:
            features = Features(spec, recompute_full_window=recompute_full_window, gate=gate)
        elif features.spec != spec:
            raise PipelineError("a shared front end must have the model's own front-end spec")
        self.features = features
        self._next_window_end = spec.frame_count  # absolute frame index (exclusive)
        if features.per_clip is not None:
            features.per_clip.schedule(self._next_window_end, self._hop_frames)
        self._profile = profile
        self.stats = PipelineStats()
        self.gate = features.gate
        if self.gate is not None:
            check_gate("in use", labels)
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
        if self.features.per_clip is not None:
            self.features.per_clip.schedule(self._next_window_end, self._hop_frames)

    def reset(self) -> None:
        """After a gap in the audio (a device reopened): no window may straddle it.

        The next window ends a whole window's worth of frames after the gap, not counting the
        frames that still take samples from before it, and the smoother's averaging starts
        afresh. Audio time goes on from where it was.
        """
        spec = self.spec
        straddling = -(-spec.window_samples // spec.stride_samples)  # frames holding old samples
        after = self.features.frames_available() + straddling + spec.frame_count
        self._next_window_end = max(self._next_window_end, after)
        if self.features.per_clip is not None:
            self.features.per_clip.schedule(self._next_window_end, self._hop_frames)
        self.smoother = RecognizeCommands(self.smoother.labels, self.smoother.settings)
        if self._states is not None:
            self._states.reset()

    @property
    def samples_seen(self) -> int:
        return self.features.samples_seen

    @property
    def sample_rate_hz(self) -> int:
        return self.spec.sample_rate_hz

    def audio_time_ms(self) -> int:
        return self.samples_seen * 1000 // self.spec.sample_rate_hz

    def feed(self, samples: npt.NDArray[np.int16]) -> list[Detection]:
        """Process one block of any size; returns the detections it completed, oldest first."""
        if not self._own_features:
            raise PipelineError("this model's front end is shared: feed its MultiPipeline")
        detections: list[Detection] = []
        clock = time.thread_time_ns if self._profile else None
        features = self.features
        for offset in range(0, len(samples), features.max_chunk):
            chunk = samples[offset : offset + features.max_chunk]
            t0 = clock() if clock else 0
            frontend_ns, gate_ns = features.frontend_ns, features.gate_ns
            features.push(chunk, clock)
            if clock:
                self.stats.frontend_ns += features.frontend_ns - frontend_ns
                self.stats.gate_ns += features.gate_ns - gate_ns
            detections.extend(self.windows(clock))
            self.stats.samples += len(chunk)
            if clock:
                self.stats.total_ns += clock() - t0
        return detections

    def windows(self, clock: Callable[[], int] | None = None) -> list[Detection]:
        """Classify every window the front end's frames now complete: after each chunk it took."""
        features = self.features
        frames_total = features.frames_available()
        detections: list[Detection] = []
        while self._next_window_end <= frames_total:
            end = self._next_window_end
            self._next_window_end += self._hop_frames
            t2 = clock() if clock else 0
            if not features.is_open(end):
                scores = self._silence_scores.copy()  # the hooks may keep it
                self.stats.gate_skipped += 1
                features.skip(end)
            else:
                window = features.window(end)
                if clock and (features.recompute or features.embedding is not None):
                    # Computed on reading: the embeddings, or the benchmark's full recompute.
                    t3 = clock()
                    self.stats.frontend_ns += t3 - t2
                    t2 = t3
                scores = self.classifier.classify(window)
            t3 = clock() if clock else 0
            time_ms = self.spec.frame_end_ms(end - 1)
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
        return detections


@dataclass(frozen=True)
class Model:
    """One model of a :class:`MultiPipeline`: its name (for events), what it runs and its labels."""

    name: str
    spec: FrontendSpec
    classifier: Classifier
    labels: tuple[str, ...]
    settings: DetectionSettings


class MultiPipeline:
    """Several models on one audio stream. Models whose front-end specs are equal share one
    :class:`Features` (the frames are computed once, the gate decides once); a model with
    another spec has its own, fed the same samples. Each model has its own classifier, smoother
    and settings, and each detection names its model.

    All models take the same sample rate (one capture feeds them). A ``micro`` front end with
    ``state: per_clip`` computes each window afresh on its model's schedule, so it is not shared.

    ``labels`` is every model's labels, each once, in model order; :attr:`on_smoothed` is
    called once per window time (any model's), in time order, with each of those labels' latest
    smoothed score (a label two models have, such as ``_silence_``, shows the later model's).
    With several models the calls for a block come when :meth:`feed` has run every model on it.
    """

    def __init__(
        self,
        models: Sequence[Model],
        *,
        profile: bool = False,
        gate: GateSettings | None = None,
        recompute_full_window: bool = False,
    ) -> None:
        if not models:
            raise PipelineError("no model given")
        first = models[0]
        for model in models[1:]:
            if model.spec.sample_rate_hz != first.spec.sample_rate_hz:
                raise PipelineError(
                    f"the models {first.name} ({first.spec.sample_rate_hz} Hz) and {model.name} "
                    f"({model.spec.sample_rate_hz} Hz) take different sample rates; kwsd feeds all "
                    "models from one capture at one rate"
                )
        self.names = tuple(model.name for model in models)
        self.sample_rate_hz = first.spec.sample_rate_hz
        #: One Features per distinct front end, in the order of their first model.
        self.features: list[Features] = []
        self.pipelines: list[Pipeline] = []
        for model in models:
            shared = next((f for f in self.features if f.shareable and f.spec == model.spec), None)
            if shared is None or recompute_full_window:
                shared = Features(model.spec, recompute_full_window=recompute_full_window, gate=gate)
                self.features.append(shared)
            if gate is not None and gate.enabled:
                check_gate(model.name, model.labels)
            self.pipelines.append(
                Pipeline(
                    model.spec,
                    model.classifier,
                    model.labels,
                    model.settings,
                    profile=profile,
                    features=shared,
                )
            )
        self._profile = profile
        self.labels: tuple[str, ...] = tuple(dict.fromkeys(label for m in models for label in m.labels))
        self._latest = np.zeros(len(self.labels), np.float64)
        self._slots = [
            np.array([self.labels.index(label) for label in model.labels], np.intp) for model in models
        ]
        self._on_smoothed: Callable[[int, npt.NDArray[np.float64]], None] | None = None
        self._model_hooks: list[Callable[[int, npt.NDArray[np.float64]], None] | None] = [None] * len(models)
        #: (time, model index, smoothed scores) of the chunk's windows, for :attr:`on_smoothed`.
        self._held: list[tuple[int, int, npt.NDArray[np.float64]]] = []
        self._frontend_ns = 0
        self._gate_ns = 0
        self._total_ns = 0
        self._samples = 0
        self.max_chunk = min(f.max_chunk for f in self.features)

    @property
    def settings(self) -> tuple[DetectionSettings, ...]:
        return tuple(p.settings for p in self.pipelines)

    def sharing(self) -> str:
        """For logs: ``3 models on 1 front end``."""
        fronts = len(self.features)
        return f"{len(self.pipelines)} models on {fronts} front end{'' if fronts == 1 else 's'}"

    def threshold_of(self, label: str) -> float:
        """The threshold of ``label`` in the first model that has it."""
        for pipeline in self.pipelines:
            if label in pipeline.smoother.labels:
                return pipeline.settings.threshold_of(label)
        raise KeyError(label)

    @property
    def gate(self) -> EnergyGate | None:
        """A gate in use (each front end has its own when ``audio.gate`` is on), else None."""
        return self.features[0].gate

    @property
    def samples_seen(self) -> int:
        return self.features[0].samples_seen

    def audio_time_ms(self) -> int:
        return self.samples_seen * 1000 // self.sample_rate_hz

    @property
    def on_smoothed(self) -> Callable[[int, npt.NDArray[np.float64]], None] | None:
        return self._on_smoothed

    @on_smoothed.setter
    def on_smoothed(self, hook: Callable[[int, npt.NDArray[np.float64]], None] | None) -> None:
        self._on_smoothed = hook
        self._wire()

    def set_model_hook(self, index: int, hook: Callable[[int, npt.NDArray[np.float64]], None] | None) -> None:
        """Call ``hook`` after each window of model ``index`` with its own labels' smoothed scores
        (in its own label order), besides :attr:`on_smoothed`."""
        self._model_hooks[index] = hook
        self._wire()

    def _wire(self) -> None:
        union = self._on_smoothed
        single = len(self.pipelines) == 1
        for index, (pipeline, own) in enumerate(zip(self.pipelines, self._model_hooks, strict=True)):
            mine = None if union is None else union if single else self._holder(index)
            hooks = [h for h in (mine, own) if h is not None]
            pipeline.on_smoothed = hooks[0] if len(hooks) == 1 else _call_each(hooks) if hooks else None

    def _holder(self, index: int) -> Callable[[int, npt.NDArray[np.float64]], None]:
        """Model ``index``'s smoothed scores, held until every model has had the chunk's windows."""
        held = self._held

        def hold(time_ms: int, averages: npt.NDArray[np.float64]) -> None:
            held.append((time_ms, index, averages))

        return hold

    def _release_smoothed(self) -> None:
        """:attr:`on_smoothed` once per window time of the chunk, oldest first, each label at its
        model's latest smoothed score (several models' windows come model by model)."""
        hook, held = self._on_smoothed, self._held
        if hook is None or not held:
            held.clear()
            return
        held.sort(key=lambda item: item[0])  # stable: model order within one time
        latest = self._latest
        for position, (time_ms, index, averages) in enumerate(held):
            latest[self._slots[index]] = averages
            if position + 1 == len(held) or held[position + 1][0] != time_ms:
                hook(time_ms, latest.copy())
        held.clear()

    @property
    def stats(self) -> PipelineStats:
        """All models' figures together: the front ends counted once each, every model's windows."""
        total = PipelineStats(
            frontend_ns=self._frontend_ns,
            gate_ns=self._gate_ns,
            total_ns=self._total_ns,
            samples=self._samples,
        )
        for pipeline in self.pipelines:
            total.frontend_ns += pipeline.stats.frontend_ns  # the recompute baseline's only
            total.classifier_ns += pipeline.stats.classifier_ns
            total.smoother_ns += pipeline.stats.smoother_ns
            total.windows += pipeline.stats.windows
            total.gate_skipped += pipeline.stats.gate_skipped
        return total

    def set_detection(self, settings: DetectionSettings | Sequence[DetectionSettings]) -> None:
        """New detection settings, one per model in order (a single one for a single model)."""
        each = [settings] if isinstance(settings, DetectionSettings) else list(settings)
        if len(each) != len(self.pipelines):
            raise PipelineError(f"{len(each)} detection settings for {len(self.pipelines)} models")
        for pipeline, one in zip(self.pipelines, each, strict=True):
            pipeline.set_detection(one)

    def reset(self) -> None:
        """After a gap in the audio: every model's next window starts after it."""
        for pipeline in self.pipelines:
            pipeline.reset()

    def feed(self, samples: npt.NDArray[np.int16]) -> list[Detection]:
        """Process one block of any size; returns every model's detections, oldest first."""
        clock = time.thread_time_ns if self._profile else None
        detections: list[Detection] = []
        single = len(self.pipelines) == 1
        for offset in range(0, len(samples), self.max_chunk):
            chunk = samples[offset : offset + self.max_chunk]
            t0 = clock() if clock else 0
            for features in self.features:
                frontend_ns, gate_ns = features.frontend_ns, features.gate_ns
                features.push(chunk, clock)
                self._frontend_ns += features.frontend_ns - frontend_ns
                self._gate_ns += features.gate_ns - gate_ns
            found: list[Detection] = []
            for name, pipeline in zip(self.names, self.pipelines, strict=True):
                heard = pipeline.windows(clock)
                found += heard if single else [replace(d, model=name) for d in heard]
            found.sort(key=lambda d: d.audio_time_ms)  # stable: model order within one time
            if not single:
                self._release_smoothed()
            detections += found
            self._samples += len(chunk)
            if clock:
                self._total_ns += clock() - t0
        return detections


def _call_each(
    hooks: list[Callable[[int, npt.NDArray[np.float64]], None]],
) -> Callable[[int, npt.NDArray[np.float64]], None]:
    def each(time_ms: int, averages: npt.NDArray[np.float64]) -> None:
        for hook in hooks:
            hook(time_ms, averages)

    return each


def check_rates(models: Sequence[tuple[str, int]]) -> None:
    """Refuse models that take different sample rates (one capture feeds them all).
    ``models``: (where the model came from, its rate in Hz)."""
    for where, rate in models[1:]:
        first, first_rate = models[0]
        if rate != first_rate:
            raise PipelineError(
                f"{first} takes {first_rate} Hz and {where} takes {rate} Hz; kwsd feeds all models "
                "from one capture at one rate"
            )


def check_keywords(bundles: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Refuse two models that both have a keyword: its events, topics and Wyoming name would
    not say which model heard it (a bundle given twice is the plainest case).
    ``bundles``: (where each model came from, its labels)."""
    seen: dict[str, tuple[int, str]] = {}
    for index, (where, labels) in enumerate(bundles):
        for label in labels:
            if label in (SILENCE_LABEL, UNKNOWN_LABEL):
                continue
            if label in seen and seen[label][0] != index:
                first = seen[label][1]
                if first == where:
                    raise PipelineError(f"{where} is given twice; each model may be loaded once")
                raise PipelineError(
                    f"the keyword {label!r} is in two models, {first} and {where}; "
                    "each keyword may be in one loaded model only"
                )
            seen[label] = (index, where)
