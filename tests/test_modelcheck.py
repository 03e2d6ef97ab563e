"""A model that aborts the TFLite runtime is refused (exit 67), not a crash of kwsd (exit 134).

The damaged model is made here: a small int8 model with a SUB (an input normalisation, as
kwsd's own DS-CNN has with mean/variance), whose constant's quantisation scale is then
emptied, as one changed byte in the 2026-11 demo did. LiteRT then calls abort() in
allocate_tensors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kwsd.bundle import demo_bundle_path, make_bundle, read_bundle, write_bundle
from kwsd.cli import EXIT_BAD_MODEL
from kwsd.modelcheck import CACHE_FILE

tf = pytest.importorskip("tensorflow")


def _models(tmp_path: Path) -> tuple[bytes, bytes]:
    """(a good int8 model, the same with the SUB constant's scale emptied)."""
    from tensorflow.lite.tools import flatbuffer_utils

    spec = read_bundle(demo_bundle_path()).frontend
    frames, features = spec.feature_shape
    inputs = tf.keras.Input((frames, features), batch_size=1)
    mean = tf.constant(np.linspace(-1, 1, features, dtype=np.float32).reshape(1, 1, features))
    x = tf.keras.layers.Lambda(lambda t: t - mean)(inputs)
    x = tf.keras.layers.Flatten()(x)
    outputs = tf.keras.layers.Dense(2, activation="softmax")(x)
    model = tf.keras.Model(inputs, outputs)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: (
        [rng.normal(size=(1, frames, features)).astype(np.float32)] for _ in range(20)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    good = bytes(converter.convert())
    damaged = flatbuffer_utils.read_model_from_bytearray(bytearray(good))
    graph = damaged.subgraphs[0]
    (sub,) = [
        op
        for op in graph.operators
        if damaged.operatorCodes[op.opcodeIndex].builtinCode == 41  # SUB
    ]
    constant = next(
        i
        for i in sub.inputs
        if graph.tensors[i].buffer and damaged.buffers[graph.tensors[i].buffer].data is not None
    )
    graph.tensors[constant].quantization.scale = []
    return good, bytes(flatbuffer_utils.convert_object_to_bytearray(damaged))


def test_a_model_that_aborts_the_runtime_is_refused_with_exit_67(tmp_path: Path) -> None:
    good, damaged = _models(tmp_path)
    spec = read_bundle(demo_bundle_path()).frontend
    paths = {}
    for name, tflite in (("good", good), ("damaged", damaged)):
        bundle = make_bundle(tflite, ["_silence_", "yes"], spec, name=name, tool="test")
        paths[name] = write_bundle(bundle, tmp_path / f"{name}.kwsd")
        (tmp_path / f"{name}.tflite").write_bytes(tflite)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("CACHE_DIRECTORY", None)
    env.pop("STATE_DIRECTORY", None)

    def kwsd(*args: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "kwsd", *map(str, args)],
            capture_output=True,
            env=env,
            timeout=300,
            check=False,
        )

    # The damaged model really aborts the runtime when loaded in a process of its own.
    loader = (
        "import sys; from kwsd.classifier import interpreter_options as o; "
        "o('xnnpack')[0](model_content=sys.stdin.buffer.read()).allocate_tensors()"
    )
    aborted = subprocess.run([sys.executable, "-c", loader], input=damaged, capture_output=True, check=False)
    assert aborted.returncode < 0, aborted

    for args in (
        ["model", "info", paths["damaged"]],
        ["label-wav", "-m", paths["damaged"], demo_bundle_path().with_name("demo.wav")],
        [
            "model",
            "import",
            tmp_path / "damaged.tflite",
            "--labels",
            "_silence_,yes",
            "--frontend",
            "mfcc",
            "--window-stride-ms",
            "20",
            "-o",
            tmp_path / "imported.kwsd",
        ],
    ):
        done = kwsd(*args)
        stderr = done.stderr.decode().strip()
        assert done.returncode == EXIT_BAD_MODEL, (args, done.returncode, stderr)
        assert stderr.startswith("kwsd: error: ") and "\n" not in stderr
        assert "the TFLite runtime crashed loading it (SIGABRT)" in stderr, stderr
    assert not (tmp_path / "imported.kwsd").exists()
    cache = tmp_path / "cache" / "kwsd" / CACHE_FILE
    assert not cache.exists()  # nothing remembered for a model that crashed

    # A good model is probed once, then remembered by its checksum.
    assert kwsd("model", "info", paths["good"]).returncode == 0
    (line,) = cache.read_text().splitlines()
    assert line.startswith(read_bundle(paths["good"]).sha256 + " ")
    assert kwsd("model", "info", paths["good"]).returncode == 0
    assert len(cache.read_text().splitlines()) == 1
