"""The embedding front end: a frozen speech embedding's two feature models on ai-edge-litert.

kwsd ships no feature models (openWakeWord's have unsettled terms), so these tests build
stand-ins with TensorFlow that keep the contract kwsd relies on (kwsd.frontend.EmbeddingParams):
a mel model on ``[1, L]`` samples whose frame ``i`` depends on samples ``[160 i, 160 i + 480)``
only and which gives at least ``n`` frames from ``160 n + 480`` samples, and an embedding model
on ``[1, 76, 32, 1]``. Small sizes keep them quick: 8 mel bins, 12 values per embedding.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from kwsd.bundle import FEATURE_MODEL_MEMBERS, make_bundle, read_bundle, write_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.detection import DetectionSettings
from kwsd.embedding import OPENWAKEWORD_FILES, OPENWAKEWORD_TERMS
from kwsd.errors import ModelError, OutputError
from kwsd.frontend import (
    EmbeddingParams,
    FrontendKind,
    FrontendSpec,
    SpecError,
    StreamingFrontend,
    compute_features,
    fit_to_clip,
)
from kwsd.gate import GateSettings, silence_scores
from kwsd.labels import SILENCE_LABEL
from kwsd.pipeline import Pipeline, build_pipeline
from tests.training_tools import missing_tensorflow, missing_training_tools

pytestmark = pytest.mark.skipif(missing_tensorflow() is not None, reason=str(missing_tensorflow()))

MEL_BINS = 8
EMBEDDING_SIZE = 12
MEL_FRAMES = 76
LABELS = ("_silence_", "_unknown_", "yes")


def _tflite(function, signature) -> bytes:
    import tensorflow as tf

    concrete = tf.function(function, input_signature=signature).get_concrete_function()
    return bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert())


def standin_models(mel_bins: int, embedding_size: int) -> tuple[bytes, bytes]:
    """A mel model and an embedding model with the feature models' contract (random weights)."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    kernel = tf.constant(rng.normal(0, 1 / 480, (480, 1, mel_bins)), tf.float32)
    weights = tf.constant(rng.normal(0, 0.1, (MEL_FRAMES * mel_bins, embedding_size)), tf.float32)

    def mel(samples):  # one more frame than asked for, as a VALID convolution gives
        frames = tf.nn.conv1d(samples[:, :, None] / 32768.0, kernel, stride=160, padding="VALID")
        return tf.reshape(tf.math.log(tf.abs(frames) + 1e-3), [1, 1, -1, mel_bins])

    def embed(window):
        return tf.reshape(tf.tanh(tf.reshape(window, [1, -1]) @ weights), [1, 1, 1, embedding_size])

    return (
        _tflite(mel, [tf.TensorSpec([1, None], tf.float32)]),
        _tflite(embed, [tf.TensorSpec([1, MEL_FRAMES, mel_bins, 1], tf.float32)]),
    )


@pytest.fixture(scope="module")
def feature_models() -> tuple[bytes, bytes]:
    return standin_models(MEL_BINS, EMBEDDING_SIZE)


def _spec(mel: bytes, embedding: bytes, window_size_ms: int = 790, **params) -> FrontendSpec:
    spec = FrontendSpec(
        FrontendKind.EMBEDDING,
        clip_duration_ms=2000,
        window_size_ms=window_size_ms,
        window_stride_ms=80,
        embedding=EmbeddingParams(
            mel_model_sha256=hashlib.sha256(mel).hexdigest(),
            embedding_model_sha256=hashlib.sha256(embedding).hexdigest(),
            mel_bins=MEL_BINS,
            embedding_size=EMBEDDING_SIZE,
            **params,
        ),
    )
    return spec.with_embedding_models(mel, embedding)


@pytest.fixture(scope="module")
def spec(feature_models) -> FrontendSpec:
    return _spec(*feature_models)


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3000, int(seconds * 16000)).astype(np.int16)


def test_sizes_come_from_the_spec(spec):
    # 16 embeddings of 790 ms every 80 ms fill 2 s: openWakeWord's (16, 96) at these sizes.
    assert spec.feature_shape == (16, EMBEDDING_SIZE)
    assert spec.span_samples == 15 * 1280 + 12640
    assert spec.mel_step_frames == 8


@pytest.mark.parametrize("block", [1000, 1280, 4001, 32000])
def test_a_stream_gives_the_clip_path_embeddings_whatever_its_blocks(spec, block):
    audio = _noise(2.0)
    clip = compute_features(spec, audio)
    stream = StreamingFrontend(spec)
    pushed = np.concatenate([stream.push(audio[i : i + block]) for i in range(0, len(audio), block)])
    assert np.array_equal(pushed, clip)
    assert stream.frames_emitted == 16


def test_embedding_k_covers_its_own_samples_only(spec):
    audio = _noise(4.0, seed=1)
    stream = StreamingFrontend(spec)
    embeddings = stream.push(audio)
    # Embedding 10 is the clip path's first embedding of the audio from 10 strides on.
    later = compute_features(spec, audio[10 * 1280 : 10 * 1280 + spec.clip_samples])
    assert np.array_equal(embeddings[10], later[0])
    assert len(embeddings) == 1 + (len(audio) - 12640) // 1280
    # After a reset, the stream starts over at the next sample.
    stream.reset()
    assert np.array_equal(stream.push(audio[:12640]), compute_features(spec, audio[:32000])[:1])


def test_a_detection_is_scored_from_the_start_of_the_second_that_ends_its_window(spec):
    from kwsd.evaluate import clip_start_ms, window_span_ms

    # The truth's clips are Speech Commands' one second, placed at the window's end.
    assert window_span_ms(spec) == 1000.0
    assert clip_start_ms(spec, 5000.0) == 4000.0


def test_a_short_clip_ends_where_the_window_ends(spec):
    word = np.arange(1, 16001, dtype=np.int16)
    placed = fit_to_clip(word, spec)
    assert len(placed) == 32000
    assert np.array_equal(placed[16000:], word)
    assert not placed[:16000].any()
    longer = np.arange(40000).astype(np.int16)
    assert np.array_equal(fit_to_clip(longer, spec), longer[-32000:])


def test_the_spec_names_its_models_by_sha256_and_carries_no_bytes_in_its_dict(spec, feature_models):
    as_dict = spec.to_dict()
    assert set(as_dict["embedding"]) == {
        "mel_model_sha256",
        "embedding_model_sha256",
        "mel_bins",
        "mel_stride_ms",
        "mel_window_ms",
        "mel_frames",
        "mel_scale",
        "mel_offset",
        "embedding_size",
    }
    again = FrontendSpec.from_dict(as_dict)
    assert again == spec
    assert not again.embedding.loaded
    with pytest.raises(SpecError, match=r"embedding: the feature models are not loaded"):
        StreamingFrontend(again)
    _, embedding = feature_models
    with pytest.raises(SpecError, match=r"embedding\.mel_model_sha256: the file given has sha256"):
        again.with_embedding_models(embedding, embedding)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"window_size_ms": 800},
            r"window_size_ms: an embedding of 76 mel frames .* needs 790 ms .* got 800",
        ),
        (
            {"window_stride_ms": 85},
            r"window_stride_ms: expected a multiple of embedding.mel_stride_ms \(10\)",
        ),
        (
            {"embedding": {"mel_model_sha256": "abc"}},
            r"embedding.mel_model_sha256: expected 64 lowercase hex",
        ),
        ({"embedding": {"mel_bins": 0}}, r"embedding.mel_bins: expected a positive integer, got 0"),
        ({"embedding": {"mel_scale": "x"}}, r"embedding.mel_scale: expected a number, got 'x'"),
    ],
)
def test_a_bad_spec_names_its_key(spec, change, message):
    data = spec.to_dict()
    for key, value in change.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(SpecError, match=message):
        FrontendSpec.from_dict(data)


def test_feature_models_of_other_sizes_are_refused_by_name(feature_models):
    mel, embedding = feature_models
    wrong = _spec(mel, embedding, window_size_ms=780, mel_frames=75)
    with pytest.raises(
        ModelError, match=r"embedding_model: takes \[1, 76, 8, 1\], but the spec states \[1, 75, 8, 1\]"
    ):
        StreamingFrontend(wrong)


def _head(spec: FrontendSpec) -> bytes:
    import tensorflow as tf

    weights = tf.constant(
        np.random.default_rng(3).normal(0, 0.3, (16 * EMBEDDING_SIZE, len(LABELS))), tf.float32
    )

    def head(x):
        return tf.nn.softmax(tf.reshape(x, [1, -1]) @ weights)

    return _tflite(head, [tf.TensorSpec([1, *spec.feature_shape], tf.float32)])


@pytest.fixture(scope="module")
def bundle_path(spec, tmp_path_factory):
    bundle = make_bundle(_head(spec), list(LABELS), spec, name="stand-in", tool="tests/test_embedding.py")
    return write_bundle(bundle, tmp_path_factory.mktemp("embedding") / "standin.kwsd")


def test_a_bundle_carries_its_feature_models(bundle_path, spec, feature_models):
    bundle = read_bundle(bundle_path)
    assert bundle.frontend == spec
    assert (bundle.frontend.embedding.mel_model, bundle.frontend.embedding.embedding_model) == feature_models
    with zipfile.ZipFile(bundle_path) as zf:
        assert set(FEATURE_MODEL_MEMBERS.values()) <= set(zf.namelist())


def _rewritten(path, tmp_path, member, data):
    out = tmp_path / "edited.kwsd"
    with zipfile.ZipFile(path) as zf, zipfile.ZipFile(out, "w") as new:
        for name in zf.namelist():
            if name != member:
                new.writestr(name, zf.read(name))
            elif data is not None:
                new.writestr(name, data)
    return out


def test_a_bundle_without_or_with_an_edited_feature_model_is_refused(bundle_path, tmp_path, feature_models):
    member = FEATURE_MODEL_MEMBERS["embedding_model"]
    missing = _rewritten(bundle_path, tmp_path, member, None)
    with pytest.raises(
        ModelError, match=r"bundle has no frontend/embedding_model.tflite \(its embedding front end"
    ):
        read_bundle(missing)
    edited = bytearray(feature_models[1])
    edited[-1] ^= 1
    damaged = _rewritten(bundle_path, tmp_path, member, bytes(edited))
    with pytest.raises(
        ModelError, match=r"frontend\.embedding\.embedding_model_sha256: the file given has sha256"
    ):
        read_bundle(damaged)


def test_the_pipeline_scores_an_embedding_model_every_clip_stride_as_label_wav_would(bundle_path):
    bundle = read_bundle(bundle_path)
    classifier = TfliteClassifier(bundle)
    pipeline = Pipeline(bundle.frontend, classifier, bundle.labels, DetectionSettings(clip_stride_ms=160))
    seen = []
    pipeline.on_scores = lambda t, s: seen.append((t, s.copy()))
    audio = _noise(5.0, seed=2)
    for block in np.array_split(audio, 17):
        pipeline.feed(block)
    times = [t for t, _ in seen]
    # The first window (16 embeddings) is complete at 15 * 80 + 790 = 1990 ms.
    assert times[:2] == [1990, 2150]
    assert np.all(np.diff(times) == 160)
    first = classifier.classify(compute_features(bundle.frontend, audio[: bundle.frontend.clip_samples]))
    assert np.array_equal(seen[0][1], first)
    third = classifier.classify(compute_features(bundle.frontend, audio[2 * 2560 : 2 * 2560 + 32000]))
    assert np.allclose(seen[2][1], third, atol=1e-6)


def test_behind_the_gate_embeddings_are_computed_only_for_the_windows_read_and_equal_the_ungated_ones(
    bundle_path,
):
    bundle = read_bundle(bundle_path)
    rng = np.random.default_rng(4)
    room = rng.normal(0, 3, 16000 * 12)  # -80 dBFS: the gate stays shut
    room[16000 * 6 : 16000 * 7] += rng.normal(0, 4000, 16000)  # one loud second
    audio = room.astype(np.int16)

    def run(gate):
        pipeline = build_pipeline(bundle, DetectionSettings(clip_stride_ms=80), gate=gate)
        seen = []
        pipeline.on_scores = lambda t, s: seen.append((t, s.copy()))
        for block in np.array_split(audio, 23):
            pipeline.feed(block)
        return seen, pipeline.features.embedding

    ungated, all_of_them = run(GateSettings(enabled=False))
    gated, some = run(GateSettings(enabled=True))
    frames = 1 + (len(audio) - 12640) // 1280
    assert all_of_them.computed == frames  # every window read: every embedding, once each
    assert 16 <= some.computed < frames / 2
    silence = silence_scores(bundle.labels, SILENCE_LABEL)
    assert [t for t, _ in gated] == [t for t, _ in ungated]
    read = [(a, b) for (_, a), (_, b) in zip(gated, ungated, strict=True) if not np.array_equal(a, silence)]
    assert len(read) >= 16
    for a, b in read:
        assert np.array_equal(a, b)


def test_writing_needs_the_models_loaded(spec, tmp_path):
    unloaded = FrontendSpec.from_dict(spec.to_dict())
    bundle = make_bundle(_head(spec), list(LABELS), unloaded, name="x", tool="t")
    with pytest.raises(
        OutputError, match=r"x\.kwsd: the embedding front end's feature models are not loaded"
    ):
        write_bundle(bundle, tmp_path / "x.kwsd")
    assert list(tmp_path.iterdir()) == []


# --- training on the embedding: tools/train.py --preprocess embedding ----------------------


@pytest.fixture(scope="module")
def openwakeword_folder(tmp_path_factory):
    """Stand-ins at openWakeWord's sizes (32 mel bins, 96 values) under its file names."""
    folder = tmp_path_factory.mktemp("oww")
    for name, data in zip(OPENWAKEWORD_FILES, standin_models(32, 96), strict=True):
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    if missing_training_tools() is not None:
        pytest.skip(str(missing_training_tools()))
    from kwsd_tools.synth import synthesise

    out = tmp_path_factory.mktemp("speech")
    synthesise(out, ["yes", "no"], ["up", "down"], voice_count=20, repetitions=1, seed=5)
    return out


def _train(tmp_path, speech, *flags):
    from kwsd_tools.train import main

    return main(
        [
            "--data_url=",
            f"--data_dir={speech}",
            "--wanted_words=yes,no",
            "--how_many_training_steps=6,2",
            "--learning_rate=0.01,0.001",
            "--batch_size=16",
            "--eval_step_interval=4",
            "--augment_copies=1",
            "--workers=1",
            "--representative_count=10",
            f"--work_dir={tmp_path}",
            *flags,
        ]
    )


def test_train_py_trains_a_head_on_the_embedding_and_its_bundles_carry_the_feature_models(
    tmp_path, speech, openwakeword_folder, capsys
):
    code = _train(
        tmp_path,
        speech,
        "--preprocess=embedding",
        f"--feature_models={openwakeword_folder}",
        "--model_architecture=mlp",
        '--model_options={"hidden_units": 16, "layers": 1}',
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "padded with zeros at the start, to end where the window ends" in err
    bundles = sorted((tmp_path / "models").glob("*.kwsd"))
    assert [b.name for b in bundles] == ["mlp-float.kwsd", "mlp.kwsd"]
    for path in bundles:
        bundle = read_bundle(path)
        assert bundle.frontend.kind is FrontendKind.EMBEDDING
        assert bundle.frontend.feature_shape == (16, 96)
        carried = (bundle.frontend.embedding.mel_model, bundle.frontend.embedding.embedding_model)
        assert carried == tuple((openwakeword_folder / name).read_bytes() for name in OPENWAKEWORD_FILES)
        assert bundle.provenance["dataset"]["feature_models"] == OPENWAKEWORD_TERMS
        # kwsd model info says what is inside and on what terms.
        info = subprocess.run(
            [sys.executable, "-m", "kwsd", "model", "info", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        mel_sha256 = bundle.frontend.embedding.mel_model_sha256
        assert f"features:   mel_model {len(carried[0])} bytes, sha256 {mel_sha256}" in info
        assert "treat this bundle as non-commercial" in info
        # The daemon's classifier takes it, on the front end's own features.
        classifier = TfliteClassifier(bundle)
        clip = np.zeros(16000, np.int16)
        assert classifier.classify(compute_features(bundle.frontend, clip)).shape == (4,)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preprocess=embedding"], "--preprocess embedding: give --feature_models, the folder with"),
        (
            ["--preprocess=embedding", "--feature_models=OWW", "--window_stride_ms=20"],
            "--window_stride_ms: the embedding's feature models fix the window (2000 ms clip, "
            "790/80 ms embeddings of 96 values); leave --window_stride_ms out, got 20",
        ),
        (["--feature_models=OWW"], "--feature_models: only --preprocess embedding reads feature models"),
        (
            ["--preprocess=embedding", "--feature_models=OWW/nowhere"],
            "--feature_models: OWW/nowhere/melspectrogram.tflite: cannot read openWakeWord's feature model",
        ),
    ],
)
def test_bad_embedding_flags_are_one_line_naming_the_flag(
    tmp_path, openwakeword_folder, capsys, flags, message
):
    from kwsd_tools.train import main

    flags = [flag.replace("OWW", str(openwakeword_folder)) for flag in flags]
    code = main(["--data_url=", f"--data_dir={tmp_path}", f"--work_dir={tmp_path}", *flags])
    err = capsys.readouterr().err
    assert code == 64, err
    assert f"train: error: {message.replace('OWW', str(openwakeword_folder))}" in err
    assert not (tmp_path / "models").exists()


def test_clips_end_the_window_and_move_only_earlier_when_aligned_to_its_end(speech):
    from kwsd_tools.training.dataset import DatasetSettings, load_dataset
    from kwsd_tools.training.features import Augmentation, make_recipe

    settings = DatasetSettings(clip_duration_ms=2000, wanted_words=("yes", "no"), align_end=True)
    dataset = load_dataset(speech, settings, seed=1)
    item = next(i for i in dataset.items["training"] if i.path is not None)
    clip = dataset.clip(item.path)
    assert len(clip) == 32000
    assert not clip[:16000].any() and clip[16000:].any()
    rng = np.random.default_rng(0)
    augmentation = Augmentation(time_shift_ms=100)
    shifts = [
        make_recipe(item, 2, dataset, augmentation, rng, augment=True).shift_samples for _ in range(200)
    ]
    assert max(shifts) <= 0 and min(shifts) >= -1600 and len(set(shifts)) > 100
