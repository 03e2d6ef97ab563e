#!/usr/bin/env python3
"""Measure `kwsd model import` of a freeze.py graph against the frozen graph itself, on real speech.

    python tools/measure_frozen_import.py --data_dir /tmp/realwav --work_dir /tmp/frozen_import

1. Trains a small model (train.py's ``tiny_conv`` layout: conv 10x8x8 stride 2, relu, dense) on
   TensorFlow's own features of 70% of the speakers, with ``_silence_`` clips cut from
   ``_background_noise_``: AudioSpectrogram + Mfcc at train.py's defaults, or with
   ``--preprocess micro`` the AudioMicrofrontend op at micro_speech's 30/20 ms, on audio x 32768
   as train.py feeds it.
2. Freezes it as freeze.py lays a graph out: ``wav_data`` -> DecodeWav ``decoded_sample_data``
   -> the front end (micro: on audio x 32767, freeze.py's drift) -> Reshape -> model ->
   ``labels_softmax``, variables made constants with
   ``tf.compat.v1.graph_util.convert_variables_to_constants``.
3. Imports the .pb with ``kwsd model import``: float32, and int8 calibrated on training clips.
4. Runs the other speakers' clips through the frozen graph as label_wav.py does (each WAV file's
   bytes into ``wav_data``) and through each bundle as ``kwsd label-wav`` does, and prints how
   often the top label and the top three agree, the largest score difference, and each one's
   accuracy against the truth. For micro, also against the same graph at train.py's 32768.

Needs the train extra (TensorFlow). ``--data_dir`` is a Speech Commands layout of 16 kHz WAVs.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np

from kwsd.dataset_layout import clip_name, speaker_of

WANTED = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABELS = ["_silence_", "_unknown_", *WANTED]
RATE_HZ = 16000
CLIP_SAMPLES = 16000
WINDOW_MS = 30
#: train.py's default stride for mfcc; micro_speech's for micro.
STRIDE_MS = {"mfcc": 10, "micro": 20}
BINS = 40
TRAINING_PERCENT = 70
WINDOW_SAMPLES = RATE_HZ * WINDOW_MS // 1000
#: train.py scales audio by 32768 for the micro front end; freeze.py by 32767.
TRAIN_PY_SCALE = 32768
FREEZE_PY_SCALE = 32767


def frame_count(preprocess: str) -> int:
    return 1 + (CLIP_SAMPLES - WINDOW_SAMPLES) // (RATE_HZ * STRIDE_MS[preprocess] // 1000)


def front_end(audio: Any, preprocess: str, micro_scale: int = TRAIN_PY_SCALE) -> Any:
    """train.py's (or, with ``micro_scale`` 32767, freeze.py's) front end on decoded audio [n, 1]."""
    import tensorflow as tf

    stride_samples = RATE_HZ * STRIDE_MS[preprocess] // 1000
    if preprocess == "micro":
        from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op

        features = audio_microfrontend_op.audio_microfrontend(
            tf.cast(tf.multiply(audio, micro_scale), tf.int16),
            sample_rate=RATE_HZ,
            window_size=WINDOW_MS,
            window_step=STRIDE_MS[preprocess],
            num_channels=BINS,
            out_scale=1,
            out_type=tf.float32,
        )
        return tf.multiply(features, 10.0 / 256.0)
    spectrogram = tf.raw_ops.AudioSpectrogram(
        input=audio, window_size=WINDOW_SAMPLES, stride=stride_samples, magnitude_squared=True
    )
    return tf.raw_ops.Mfcc(spectrogram=spectrogram, sample_rate=RATE_HZ, dct_coefficient_count=BINS)


def silence_clips(data_dir: Path, out_dir: Path, count: int, seed: int) -> list[Path]:
    """``count`` one-second clips of background noise at a random volume in [0, 1), as train.py mixes them."""
    from kwsd.audio import read_wav

    noise = np.concatenate(
        [read_wav(str(p), RATE_HZ) for p in sorted((data_dir / "_background_noise_").glob("*.wav"))]
    )
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        start = int(rng.integers(0, len(noise) - CLIP_SAMPLES))
        clip = np.round(noise[start : start + CLIP_SAMPLES] * rng.uniform(0, 1)).astype(np.int16)
        path = out_dir / clip_name(f"silence{i:04d}", 0)
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(RATE_HZ)
            wav.writeframes(clip.tobytes())
        paths.append(path)
    return paths


def partition(name: str) -> str:
    """training (70%) or testing, by speaker.

    Not train.py's split: the real-speech slice is Speech Commands' own test partition, so
    train.py's hash puts nearly all of it in one partition. A fresh hash of the speaker keeps
    each person in one partition all the same.
    """
    digest = int(hashlib.sha1(f"kwsd-measure/{speaker_of(name)}".encode()).hexdigest(), 16)
    return "training" if digest % 100 < TRAINING_PERCENT else "testing"


def examples(data_dir: Path, work_dir: Path, seed: int) -> dict[str, list[tuple[Path, int]]]:
    """partition -> [(wav, label index)]: wanted words, every other word as _unknown_, and silence."""
    parts: dict[str, list[tuple[Path, int]]] = {"training": [], "testing": []}
    for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name != "_background_noise_"):
        label = LABELS.index(folder.name) if folder.name in WANTED else 1
        for path in sorted(folder.glob("*.wav")):
            parts[partition(path.name)].append((path, label))
    wanted_count = sum(1 for items in parts.values() for _, label in items if label >= 2)
    for path in silence_clips(data_dir, work_dir / "_silence_", wanted_count // 10, seed):
        parts[partition(path.name)].append((path, 0))
    return parts


def tf_features(paths: list[Path], preprocess: str) -> np.ndarray:
    """train.py's features by TensorFlow's own ops, one (frames, 40) window per clip."""
    import tensorflow as tf

    out = []
    for path in paths:
        audio = tf.audio.decode_wav(path.read_bytes(), desired_channels=1, desired_samples=CLIP_SAMPLES).audio
        out.append(np.asarray(front_end(audio, preprocess)).reshape(frame_count(preprocess), BINS))
    return np.stack(out).astype(np.float32)


def train(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> list[np.ndarray]:
    """tiny_conv's layers trained with Keras; returns [conv kernel, conv bias, dense kernel, dense bias]."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((x.shape[1], BINS, 1)),
            tf.keras.layers.Conv2D(8, (10, 8), strides=2, padding="same", activation="relu"),
            tf.keras.layers.Dropout(0.2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(len(LABELS)),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[..., None], y, epochs=epochs, batch_size=64, verbose=2)
    conv, dense = model.layers[0], model.layers[3]
    return [*conv.get_weights(), *dense.get_weights()]


def freeze(weights: list[np.ndarray], preprocess: str, micro_scale: int = FREEZE_PY_SCALE) -> bytes:
    """The graph freeze.py writes for this model, as bytes (micro: audio x ``micro_scale``)."""
    import tensorflow as tf

    frames = frame_count(preprocess)
    graph = tf.Graph()
    with graph.as_default():
        wav = tf.compat.v1.placeholder(tf.string, [], name="wav_data")
        decoded = tf.audio.decode_wav(
            wav, desired_channels=1, desired_samples=CLIP_SAMPLES, name="decoded_sample_data"
        )
        fingerprint = front_end(decoded.audio, preprocess, micro_scale)
        flat = tf.reshape(fingerprint, [-1, frames * BINS])
        image = tf.reshape(flat, [-1, frames, BINS, 1])
        names = ("first_weights", "first_bias", "final_fc_weights", "final_fc_bias")
        variables = [tf.compat.v1.get_variable(n, initializer=w) for n, w in zip(names, weights, strict=True)]
        conv = tf.nn.relu(
            tf.nn.conv2d(input=image, filters=variables[0], strides=[1, 2, 2, 1], padding="SAME")
            + variables[1]
        )
        flattened = tf.reshape(conv, [-1, int(np.prod(conv.shape[1:]))])
        logits = tf.matmul(flattened, variables[2]) + variables[3]
        tf.nn.softmax(logits, name="labels_softmax")
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), ["labels_softmax"]
            )
    return bytes(frozen.SerializeToString())


def graph_scores(graph_bytes: bytes, paths: list[Path]) -> np.ndarray:
    """label_wav.py's way: each WAV file's bytes into wav_data, labels_softmax out."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return np.stack(
                [session.run("labels_softmax:0", {"wav_data:0": p.read_bytes()})[0] for p in paths]
            )


def bundle_scores(bundle_path: Path, paths: list[Path]) -> np.ndarray:
    """``kwsd label-wav``'s way: kwsd's reader, front end and TFLite classifier."""
    from kwsd.audio import read_wav
    from kwsd.bundle import read_bundle
    from kwsd.classifier import TfliteClassifier
    from kwsd.frontend import compute_features

    bundle = read_bundle(bundle_path)
    classifier = TfliteClassifier(bundle)
    spec = bundle.frontend
    return np.stack(
        [classifier.classify(compute_features(spec, read_wav(str(p), spec.sample_rate_hz))) for p in paths]
    )


def compare(name: str, reference: np.ndarray, ours: np.ndarray, truth: np.ndarray) -> str:
    top1 = np.mean(np.argmax(reference, 1) == np.argmax(ours, 1))
    top3 = np.mean(
        [
            list(np.argsort(-r, kind="stable")[:3]) == list(np.argsort(-o, kind="stable")[:3])
            for r, o in zip(reference, ours, strict=True)
        ]
    )
    return (
        f"{name}: top-1 the same on {top1:.2%}, top-3 (in order) on {top3:.2%}, largest score difference "
        f"{np.max(np.abs(reference - ours)):.5f}, accuracy {np.mean(np.argmax(ours, 1) == truth):.2%} "
        f"(frozen graph {np.mean(np.argmax(reference, 1) == truth):.2%})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", type=Path, required=True, help="Speech Commands layout, 16 kHz WAVs")
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/frozen_import"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--representative_count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--preprocess",
        choices=sorted(STRIDE_MS),
        default="mfcc",
        help="mfcc: train.py's default (30/10 ms); micro: micro_speech's (30/20 ms)",
    )
    args = parser.parse_args(argv)

    from kwsd.cli import main as kwsd_main

    args.work_dir.mkdir(parents=True, exist_ok=True)
    parts = examples(args.data_dir, args.work_dir, args.seed)
    train_paths = [p for p, _ in parts["training"]]
    train_y = np.array([label for _, label in parts["training"]])
    test_paths = [p for p, _ in parts["testing"]]
    test_y = np.array([label for _, label in parts["testing"]])
    print(f"{len(train_paths)} training clips, {len(test_paths)} testing clips")
    weights = train(tf_features(train_paths, args.preprocess), train_y, args.epochs, args.seed)
    graph = freeze(weights, args.preprocess)
    pb = args.work_dir / "tiny_conv.pb"
    pb.write_bytes(graph)
    labels = args.work_dir / "tiny_conv_labels.txt"
    labels.write_text("".join(f"{label}\n" for label in LABELS))
    calibration = args.work_dir / "calibration"
    calibration.mkdir(exist_ok=True)
    pick = np.random.default_rng(args.seed).permutation(len(train_paths))[: args.representative_count]
    for i in pick:
        link = calibration / f"{i:05d}_{train_paths[i].name}"
        if not link.exists():
            link.symlink_to(train_paths[i].resolve())
    common = ["model", "import", str(pb), "--labels-file", str(labels)]
    float_bundle = args.work_dir / "tiny_conv-float.kwsd"
    int8_bundle = args.work_dir / "tiny_conv.kwsd"
    if kwsd_main([*common, "-o", str(float_bundle)]) != 0:
        return 1
    if kwsd_main([*common, "--representative-dir", str(calibration), "-o", str(int8_bundle)]) != 0:
        return 1
    reference = graph_scores(graph, test_paths)
    print(f"on {len(test_paths)} testing clips, against the frozen graph run as label_wav.py runs it:")
    print(compare("float32 bundle", reference, bundle_scores(float_bundle, test_paths), test_y))
    print(compare("int8 bundle", reference, bundle_scores(int8_bundle, test_paths), test_y))
    if args.preprocess == "micro":
        # freeze.py's graph scales by 32767; the features the model was trained on used 32768.
        as_trained = graph_scores(freeze(weights, args.preprocess, TRAIN_PY_SCALE), test_paths)
        print("against the same graph with train.py's x 32768 (the features the model was trained on):")
        print(compare("float32 bundle", as_trained, bundle_scores(float_bundle, test_paths), test_y))
        print(compare("int8 bundle", as_trained, bundle_scores(int8_bundle, test_paths), test_y))
        print(compare("freeze.py's graph", as_trained, reference, test_y))
    return 0


if __name__ == "__main__":
    sys.exit(main())
