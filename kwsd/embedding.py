"""The ``embedding`` front end: a frozen speech embedding run by ai-edge-litert.

openWakeWord hears people it has never heard by putting small heads on a speech embedding
Google trained on a great deal of real speech (arXiv:2002.01322). Its two feature models do
it: ``melspectrogram.tflite`` (int16 samples as float32 -> 32 mel bins every 10 ms) and
``embedding_model.tflite`` (76 mel frames -> 96 values). This module runs them as
openWakeWord does (mel frames scaled ``x / 10 + 2``; an embedding every 8 mel frames), for a
clip (:func:`clip_embeddings`, training and ``label-wav``) and for a stream
(:class:`EmbeddingStream`, the daemon), with the same numbers: every mel frame is a function
of its own 30 ms of samples, so a stream computes each mel frame once, from the samples it
needs, and each embedding from the kept mel frames, and gets what the clip path gets.

kwsd ships neither model. Their terms are unsettled (openWakeWord's README puts its
pre-trained models under CC BY-NC-SA 4.0 and says the embedding was re-implemented from
Google's Apache-2.0 TF Hub module); a user who has them (openWakeWord's pip package installs
them) puts them into a bundle with ``tools/benchmark_embedding.py --export``, and the bundle
carries them and says where they came from.

The interpreters are made lazily, per stream (one listener thread owns it) and once per spec
for clips (behind a lock), from the bytes in the spec.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.errors import InputNotFoundError, ModelError
from kwsd.frontend import FeatureArray, FrontendKind, FrontendSpec, Int16Array, SpecError

log = logging.getLogger(__name__)


class FeatureModels:
    """The two feature models of one spec on ai-edge-litert, one thread each.

    Raises :class:`ModelError` naming the model when either does not have the shapes the
    spec states (a wrong file under the right sha256 cannot happen; a spec written by hand
    for other models can).
    """

    def __init__(self, spec: FrontendSpec) -> None:
        from kwsd.classifier import interpreter_options

        p = spec.embedding
        if p is None:
            raise SpecError(
                f"kind: the embedding feature models need an embedding front end, got {spec.kind.value}"
            )
        if not p.loaded:
            raise SpecError(
                "embedding: the feature models are not loaded (a bundle carries them; "
                "FrontendSpec.with_embedding_models attaches them)"
            )
        self.params = p
        self.mel_stride_samples = spec.sample_rate_hz * p.mel_stride_ms // 1000
        self.mel_window_samples = spec.sample_rate_hz * p.mel_window_ms // 1000
        interpreter_cls, options = interpreter_options("xnnpack")
        try:
            self._mel = interpreter_cls(model_content=p.mel_model, num_threads=1, **options)
            self._embedding = interpreter_cls(model_content=p.embedding_model, num_threads=1, **options)
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"frontend.embedding: a feature model does not load ({err})") from None
        self._mel_input = self._mel.get_input_details()[0]
        self._mel_output = self._mel.get_output_details()[0]
        self._mel_samples = -1
        shape = tuple(int(n) for n in self._embedding.get_input_details()[0]["shape"])
        if shape != (1, p.mel_frames, p.mel_bins, 1):
            raise ModelError(
                f"frontend.embedding.embedding_model: takes {list(shape)}, but the spec states "
                f"[1, {p.mel_frames}, {p.mel_bins}, 1] (mel_frames, mel_bins)"
            )
        size = int(np.prod(self._embedding.get_output_details()[0]["shape"]))
        if size != p.embedding_size:
            raise ModelError(
                f"frontend.embedding.embedding_model: returns {size} values, the spec states "
                f"embedding_size {p.embedding_size}"
            )
        self._embedding.allocate_tensors()
        self._embedding_input = self._embedding.get_input_details()[0]["index"]
        self._embedding_output = self._embedding.get_output_details()[0]["index"]

    def mel(self, samples: Int16Array, count: int) -> npt.NDArray[np.float32]:
        """The first ``count`` (scaled) mel frames of ``samples``, which must be exactly
        ``count * stride + window`` long."""
        p = self.params
        if len(samples) != self._mel_samples:
            self._mel.resize_tensor_input(self._mel_input["index"], [1, len(samples)], strict=True)
            self._mel.allocate_tensors()
            self._mel_samples = len(samples)
        self._mel.set_tensor(self._mel_input["index"], samples.astype(np.float32)[None])
        self._mel.invoke()
        out = self._mel.get_tensor(self._mel_output["index"])
        if out.size % p.mel_bins or out.size // p.mel_bins < count:
            raise ModelError(
                f"frontend.embedding.mel_model: {len(samples)} samples gave output {list(out.shape)}, "
                f"expected at least {count} frames of {p.mel_bins} (mel_bins)"
            )
        frames: npt.NDArray[np.float32] = out.reshape(-1, p.mel_bins)[:count] * np.float32(p.mel_scale)
        frames += np.float32(p.mel_offset)
        return frames

    def embed(self, mel_window: npt.NDArray[np.float32]) -> FeatureArray:
        """One embedding of ``mel_frames`` mel frames."""
        self._embedding.set_tensor(self._embedding_input, mel_window[None, :, :, None])
        self._embedding.invoke()
        out: FeatureArray = self._embedding.get_tensor(self._embedding_output).reshape(-1).astype(np.float32)
        return out


_CLIP_MODELS: dict[FrontendSpec, FeatureModels] = {}
_CLIP_LOCK = threading.Lock()


def clip_embeddings(spec: FrontendSpec, clip: Int16Array) -> FeatureArray:
    """The (frame_count, embedding_size) embeddings of one clip of ``clip_samples``."""
    with _CLIP_LOCK:
        models = _CLIP_MODELS.get(spec)
        if models is None:
            models = _CLIP_MODELS[spec] = FeatureModels(spec)
        p = models.params
        step = spec.mel_step_frames
        count = (spec.frame_count - 1) * step + p.mel_frames
        mel = models.mel(clip[: count * models.mel_stride_samples + models.mel_window_samples], count)
        return np.stack(
            [models.embed(mel[k * step : k * step + p.mel_frames]) for k in range(spec.frame_count)]
        )


class _MelStream:
    """The mel frames of a stream, computed as the embeddings that need them become complete
    (eight at a time in the steady state: one mel model call of a fixed size), and kept from
    the embedding :meth:`keep_from` names on."""

    def __init__(self, spec: FrontendSpec) -> None:
        if spec.kind is not FrontendKind.EMBEDDING:
            raise SpecError(f"kind: the embedding streams need an embedding front end, got {spec.kind.value}")
        self.spec = spec
        self.models = FeatureModels(spec)
        self.reset()

    def reset(self) -> None:
        #: Samples from the first mel frame not yet computed onwards.
        self._audio = np.zeros(0, np.int16)
        self._mel = np.zeros((0, self.models.params.mel_bins), np.float32)
        #: Stream index of ``_mel``'s first row.
        self._mel_first = 0
        #: Embeddings whose mel frames are all computed (a count from the stream's start).
        self.complete = 0

    def push(self, samples: Int16Array) -> int:
        """Feed mono int16 samples; returns how many embeddings are complete now."""
        models = self.models
        p = models.params
        stride, window = models.mel_stride_samples, models.mel_window_samples
        step = self.spec.mel_step_frames
        self._audio = np.concatenate((self._audio, np.asarray(samples, np.int16)))
        while True:
            # Embedding `complete` needs mel frames up to complete * step + mel_frames (exclusive).
            needed = self.complete * step + p.mel_frames - (self._mel_first + len(self._mel))
            if needed > 0:
                if len(self._audio) < needed * stride + window:
                    break
                new = models.mel(self._audio[: needed * stride + window], needed)
                self._mel = np.concatenate((self._mel, new))
                self._audio = self._audio[needed * stride :]
            self.complete += 1
        return self.complete

    def embed(self, index: int) -> FeatureArray:
        """Embedding ``index`` (complete, and its mel frames still kept)."""
        p = self.models.params
        start = index * self.spec.mel_step_frames - self._mel_first
        if not 0 <= index < self.complete or start < 0:
            raise ValueError(
                f"embedding {index}: embeddings {self._mel_first // self.spec.mel_step_frames}.."
                f"{self.complete} are available"
            )
        return self.models.embed(self._mel[start : start + p.mel_frames])

    def keep_from(self, index: int) -> None:
        """Drop the mel frames no embedding from ``index`` on needs."""
        drop = min(index * self.spec.mel_step_frames - self._mel_first, len(self._mel))
        if drop > 0:
            self._mel = self._mel[drop:]
            self._mel_first += drop


class EmbeddingStream:
    """Push int16 audio in blocks of any size; get back the embeddings it completes.

    Embedding ``k`` covers stream samples ``[k * stride, k * stride + window)`` of the spec,
    as every front end's frame ``k`` does, and equals :func:`clip_embeddings`' of the same
    samples. Each mel frame is computed once and kept until no embedding needs it.
    Not thread-safe: one listener thread owns it.
    """

    def __init__(self, spec: FrontendSpec) -> None:
        self.spec = spec
        self._mel = _MelStream(spec)
        self._next = 0

    def reset(self) -> None:
        self._mel.reset()
        self._next = 0

    def push(self, samples: Int16Array) -> FeatureArray:
        """Feed mono int16 samples; returns the (n_new, embedding_size) embeddings they complete."""
        complete = self._mel.push(samples)
        out = [self._mel.embed(k) for k in range(self._next, complete)]
        self._next = complete
        self._mel.keep_from(complete)
        if not out:
            return np.zeros((0, self.spec.feature_count), np.float32)
        return np.stack(out)


class EmbeddingWindows:
    """The embedding front end as the pipeline uses it: mel frames as the audio arrives (the
    cheap part, about a tenth), embeddings only when a window that holds them is read (the
    costly part), each once however many windows and models read it.

    A window the audio gate keeps from every model is never read, so in a quiet room the
    embedding model hardly runs. What a read window gets is exactly what
    :class:`EmbeddingStream` (and :func:`clip_embeddings`) give. Windows are named by their
    end frame (exclusive), as :class:`kwsd.frontend.PerClipMicroFrontend` names them; those
    ending within ``kept_frames`` of the newest can be read. Not thread-safe.
    """

    def __init__(self, spec: FrontendSpec, *, kept_frames: int) -> None:
        self.spec = spec
        self._mel = _MelStream(spec)
        self._kept = max(kept_frames, spec.frame_count)
        self._embeddings: dict[int, FeatureArray] = {}
        #: Embeddings computed since the start (for the stats and the tests).
        self.computed = 0

    @property
    def frames_total(self) -> int:
        return self._mel.complete

    def push(self, samples: Int16Array) -> int:
        """Feed mono int16 samples; returns the number of complete frames (embeddings) so far."""
        total = self._mel.push(samples)
        oldest = max(0, total - self._kept)
        self._mel.keep_from(oldest)
        for stale in [k for k in self._embeddings if k < oldest]:
            del self._embeddings[stale]
        return total

    def window(self, end_frame: int) -> FeatureArray:
        """The (frame_count, embedding_size) features of the window ending at ``end_frame``."""
        out = np.empty((self.spec.frame_count, self.spec.feature_count), np.float32)
        for row, k in enumerate(range(end_frame - self.spec.frame_count, end_frame)):
            embedding = self._embeddings.get(k)
            if embedding is None:
                embedding = self._embeddings[k] = self._mel.embed(k)
                self.computed += 1
            out[row] = embedding
        return out


#: openWakeWord's file names for its two feature models, in the folder its package installs.
OPENWAKEWORD_FILES = ("melspectrogram.tflite", "embedding_model.tflite")
#: What a bundle made on openWakeWord's feature models says of them (its provenance).
OPENWAKEWORD_TERMS = (
    "openWakeWord's melspectrogram.tflite and embedding_model.tflite (dscripka/openWakeWord) are in "
    "this bundle. openWakeWord's code is Apache-2.0; its README puts its included pre-trained models "
    "under CC BY-NC-SA 4.0 and says the embedding model was re-implemented from Google's Apache-2.0 "
    "speech_embedding TF Hub module (arXiv:2002.01322). Which terms cover these two files is unsettled "
    "upstream (openWakeWord issues 313, 338, 346, 348): treat this bundle as non-commercial and do not "
    "redistribute it unless you have settled them."
)
#: openWakeWord's window: 2 s of audio, 16 embeddings, one every 8 mel frames (80 ms).
OPENWAKEWORD_WINDOW_MS = 2000
OPENWAKEWORD_WINDOW_EMBEDDINGS = 16
OPENWAKEWORD_STEP_FRAMES = 8


def openwakeword_spec(folder: Path) -> FrontendSpec:
    """The ``embedding`` front end on openWakeWord's feature models in ``folder``, loaded, with
    openWakeWord's window: 16 embeddings of 76 mel frames, one every 80 ms, so 2 s of audio.

    Raises :class:`InputNotFoundError` naming a missing file, :class:`ModelError` for one that
    is not a TFLite model of the expected shapes."""
    from kwsd.bundle import check_tflite_bytes
    from kwsd.frontend import EmbeddingParams

    data = []
    for name in OPENWAKEWORD_FILES:
        path = folder / name
        try:
            data.append(path.read_bytes())
        except OSError as err:
            raise InputNotFoundError(
                f"{path}: cannot read openWakeWord's feature model ({err.strerror or err}); expected "
                f"{' and '.join(OPENWAKEWORD_FILES)} in {folder}"
            ) from None
        check_tflite_bytes(data[-1], str(path))
    mel, embedding = data
    params = EmbeddingParams(
        mel_model_sha256=hashlib.sha256(mel).hexdigest(),
        embedding_model_sha256=hashlib.sha256(embedding).hexdigest(),
    )
    spec = FrontendSpec(
        FrontendKind.EMBEDDING,
        clip_duration_ms=OPENWAKEWORD_WINDOW_MS,
        window_size_ms=params.mel_frames * params.mel_stride_ms + params.mel_window_ms,
        window_stride_ms=OPENWAKEWORD_STEP_FRAMES * params.mel_stride_ms,
        embedding=params,
    ).with_embedding_models(mel, embedding)
    assert spec.frame_count == OPENWAKEWORD_WINDOW_EMBEDDINGS, spec.describe()
    FeatureModels(spec)  # the shapes, checked now
    return spec


def describe_models(spec: FrontendSpec) -> dict[str, Any]:
    """The feature models' sha256s and sizes, for reports."""
    p = spec.embedding
    if p is None:
        return {}
    return {
        "mel_model": {"sha256": p.mel_model_sha256, "bytes": len(p.mel_model)},
        "embedding_model": {"sha256": p.embedding_model_sha256, "bytes": len(p.embedding_model)},
    }
