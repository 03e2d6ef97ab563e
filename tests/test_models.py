"""tools/kwsd_tools/training/models.py: train.py's architectures and DS-CNN in tf.keras.

Parameter counts against train.py's (REFERENCE "Architectures"), the errors, and for every
architecture at a small input: float32 and full-int8 conversion (builtin int8 ops only),
the int8 model run in ai_edge_litert's interpreter, and a few training steps that lower
the loss on a fixed batch.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kwsd_tools.training.models import (  # noqa: E402  (after the skip: the module needs TensorFlow to build)
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    DsCnnOptions,
    ModelError,
    build_model,
    describe,
    with_batch_size,
)

#: REFERENCE "Architectures": parameters at 98x40 features, 12 labels (train.py's graphs).
TRAIN_PY_PARAMETERS = {
    "single_fc": 47_052,
    "conv": 926_860,
    "low_latency_conv": 949_862,
    "low_latency_svdf": 751_372,
    "tiny_conv": 94_740,
    "tiny_embedding_conv": 7_804,
}

#: The small input of the conversion and training tests: kwsd's MFCC front end.
FRAMES, FEATURES, LABELS = 49, 13, 4

#: The builtin ops of each int8 model at 49x13 with a fixed batch of 1: no QUANTIZE or
#: DEQUANTIZE (int8 from input to output), nothing outside the builtin set.
INT8_OPS = {
    "single_fc": ["FULLY_CONNECTED", "RESHAPE"],
    "conv": ["CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "RESHAPE"],
    "low_latency_conv": ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"],
    "low_latency_svdf": ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE"],
    "tiny_conv": ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"],
    "tiny_embedding_conv": ["CONV_2D", "FULLY_CONNECTED", "RESHAPE"],
    "ds_cnn": ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "RESHAPE"],
    # LayerNormalization stays partly float (DEQUANTIZE/QUANTIZE around it): fine for kwsd's
    # interpreter; the embedding's feature models are float anyway.
    "mlp": [
        "ADD",
        "DEQUANTIZE",
        "FULLY_CONNECTED",
        "MEAN",
        "MUL",
        "NEG",
        "QUANTIZE",
        "RESHAPE",
        "RSQRT",
        "SQUARED_DIFFERENCE",
    ],
}


pytestmark = pytest.mark.filterwarnings(
    # The converter's note on int8 inputs: the representative dataset calibrates them.
    "ignore:Statistics for quantized inputs were expected:UserWarning"
)


def windows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, FRAMES, FEATURES)).astype(np.float32)


def test_architecture_names() -> None:
    assert ARCHITECTURES == (
        "single_fc",
        "conv",
        "low_latency_conv",
        "low_latency_svdf",
        "tiny_conv",
        "tiny_embedding_conv",
        "ds_cnn",
        "mlp",
    )
    assert DEFAULT_ARCHITECTURE == "ds_cnn"
    assert set(INT8_OPS) == set(ARCHITECTURES)


@pytest.mark.parametrize("architecture", list(TRAIN_PY_PARAMETERS))
def test_parameter_counts_match_train_py(architecture: str) -> None:
    model = build_model(architecture, frames=98, features=40, label_count=12)
    assert model.count_params() == TRAIN_PY_PARAMETERS[architecture]
    assert describe(model) == (
        f"{architecture}: 98x40 features -> 12 logits, {TRAIN_PY_PARAMETERS[architecture]:,} parameters"
    )


def test_tiny_conv_is_micro_speechs_size() -> None:
    assert build_model("tiny_conv", frames=49, features=40, label_count=4).count_params() == 16_652


@pytest.mark.parametrize(
    ("options", "frames", "features", "labels", "text"),
    [
        # Hello Edge's DS-CNN-S: conv 10x4x64 stride 2x2, 4 x (depthwise 3x3, pointwise 64).
        (None, 98, 40, 12, "ds_cnn: 98x40 features -> 12 logits, 24,332 parameters (1,152 non-trainable)"),
        (None, 49, 13, 6, "ds_cnn: 49x13 features -> 6 logits, 23,942 parameters (1,152 non-trainable)"),
        (None, 49, 40, 4, "ds_cnn: 49x40 features -> 4 logits, 23,812 parameters (1,152 non-trainable)"),
        # the demo's temporal variant: conv 5x13 stride 2x13, depthwise 3x1.
        (
            {"temporal": True},
            49,
            13,
            6,
            "ds_cnn: 49x13 features -> 6 logits, 24,006 parameters (1,152 non-trainable)",
        ),
        (
            {"channels": 32, "blocks": 2, "first_kernel": (5, 5), "first_stride": (1, 2)},
            49,
            13,
            6,
            "ds_cnn: 49x13 features -> 6 logits, 4,262 parameters (320 non-trainable)",
        ),
    ],
)
def test_ds_cnn_sizes(
    options: dict[str, Any] | None, frames: int, features: int, labels: int, text: str
) -> None:
    model = build_model("ds_cnn", frames=frames, features=features, label_count=labels, options=options)
    assert describe(model) == text


def test_ds_cnn_normalises_with_the_given_statistics() -> None:
    mean = np.linspace(-5.0, 5.0, FEATURES)
    variance = np.full(FEATURES, 4.0)
    model = build_model(
        "ds_cnn",
        frames=FRAMES,
        features=FEATURES,
        label_count=LABELS,
        options={"mean": mean, "variance": variance},
    )
    normalise = model.layers[1]
    assert type(normalise).__name__ == "Normalization"
    x = windows(1, seed=3)
    assert np.allclose(normalise(x).numpy(), (x - mean) / 2.0, atol=1e-5)


def test_ds_cnn_options_read_back() -> None:
    assert DsCnnOptions.from_mapping({"temporal": True}, features=40) == DsCnnOptions(
        first_kernel=(5, 40), first_stride=(2, 40), temporal=True
    )
    assert DsCnnOptions.from_mapping({}, features=13) == DsCnnOptions()


def test_the_mlp_is_openwakewords_head_form_and_names_bad_options() -> None:
    model = build_model("mlp", frames=16, features=96, label_count=12, dropout=0.3)
    assert describe(model) == "mlp: 16x96 features -> 12 logits, 215,308 parameters"
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Dense") == 3 and kinds.count("LayerNormalization") == 2
    small = build_model(
        "mlp", frames=16, features=96, label_count=4, options={"hidden_units": 8, "layers": 1}
    )
    assert small.count_params() == 16 * 96 * 8 + 8 + 16 + 8 * 4 + 4
    with pytest.raises(ModelError, match=r"mlp options.layers: expected an integer >= 1, got 0"):
        build_model("mlp", frames=16, features=96, label_count=4, options={"layers": 0})
    with pytest.raises(ModelError, match=r"mlp options: unknown \['channels'\]"):
        build_model("mlp", frames=16, features=96, label_count=4, options={"channels": 8})


@pytest.mark.parametrize(
    ("architecture", "kwargs", "message"),
    [
        (
            "cnn",
            {},
            "unknown architecture 'cnn'; expected one of single_fc, conv, low_latency_conv, "
            "low_latency_svdf, tiny_conv, tiny_embedding_conv, ds_cnn, mlp",
        ),
        (
            "low_latency_conv",
            {"features": 7},
            "low_latency_conv needs at least 8 features per frame (its conv is 49x8, VALID), got input 49x7",
        ),
        ("tiny_conv", {"frames": 0}, "tiny_conv: frames must be an integer >= 1, got 0"),
        ("conv", {"label_count": 0}, "conv: label_count must be an integer >= 1, got 0"),
        ("single_fc", {"dropout": 1.0}, "single_fc: dropout must be in [0, 1), got 1.0"),
        ("tiny_conv", {"options": {"channels": 8}}, "tiny_conv takes no options, got ['channels']"),
        (
            "ds_cnn",
            {"options": {"chanels": 8}},
            "ds_cnn options: unknown ['chanels']; expected some of ['channels', 'blocks', "
            "'first_kernel', 'first_stride', 'temporal', 'mean', 'variance']",
        ),
        (
            "ds_cnn",
            {"options": {"temporal": True, "first_kernel": (5, 13)}},
            "ds_cnn options: temporal sets first_kernel and first_stride itself "
            "((5, features) and (2, features)); give one or the other",
        ),
        (
            "ds_cnn",
            {"options": {"first_stride": (2,)}},
            "ds_cnn options.first_stride: expected (frames, features), integers >= 1, got (2,)",
        ),
        ("ds_cnn", {"options": {"channels": 0}}, "ds_cnn options.channels: expected an integer >= 1, got 0"),
        (
            "ds_cnn",
            {"options": {"mean": [0.0] * 13}},
            "ds_cnn options: give mean and variance together (per feature), or neither",
        ),
        (
            "ds_cnn",
            {"options": {"mean": [0.0] * 40, "variance": [1.0] * 40}},
            "ds_cnn options.mean: expected 13 finite numbers (one per feature), got shape [40]",
        ),
    ],
)
def test_errors_name_the_problem(architecture: str, kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"frames": FRAMES, "features": FEATURES, "label_count": LABELS, **kwargs}
    with pytest.raises(ModelError, match=f"^{re.escape(message)}$"):
        build_model(architecture, **arguments)


def test_model_error_is_a_value_error() -> None:
    assert issubclass(ModelError, ValueError)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_keras_file_round_trip(architecture: str, tmp_path: Path) -> None:
    """Standard layers only: a saved model loads without custom objects and computes the same."""
    model = build_model(architecture, frames=FRAMES, features=FEATURES, label_count=LABELS)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    x = windows(2, seed=1)
    assert np.array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


def convert(model: Any, representative: np.ndarray) -> tuple[bytes, bytes]:
    """(float32, full-int8 with int8 input and output) .tflite of ``model``, as export does."""

    def representative_dataset() -> Any:
        for window in representative:
            yield [window[np.newaxis]]

    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its signature
        float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        int8_model = converter.convert()
    return bytes(float_model), bytes(int8_model)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_converts_to_float32_and_int8_and_runs(architecture: str) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    model = build_model(architecture, frames=FRAMES, features=FEATURES, label_count=LABELS)
    x = windows(1, seed=2)
    float_model, int8_model = convert(with_batch_size(model), windows(16, seed=0))

    floating = litert.Interpreter(model_content=float_model)
    floating.allocate_tensors()
    floating.set_tensor(floating.get_input_details()[0]["index"], x)
    floating.invoke()
    logits = floating.get_tensor(floating.get_output_details()[0]["index"])
    assert np.allclose(logits, model(x, training=False).numpy(), rtol=1e-4, atol=1e-6)

    # Without XNNPACK, so the op list below is the model's own, not one DELEGATE node.
    interpreter = litert.Interpreter(
        model_content=int8_model,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    assert (input_detail["dtype"], input_detail["shape"].tolist()) == (np.int8, [1, FRAMES, FEATURES])
    assert (output_detail["dtype"], output_detail["shape"].tolist()) == (np.int8, [1, LABELS])
    assert sorted({op["op_name"] for op in interpreter._get_ops_details()}) == INT8_OPS[architecture]
    scale, zero_point = input_detail["quantization"]
    quantised = np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
    interpreter.set_tensor(input_detail["index"], quantised)
    interpreter.invoke()
    assert interpreter.get_tensor(output_detail["index"]).shape == (1, LABELS)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_few_steps_lower_the_loss(architecture: str) -> None:
    """The graph trains: 15 Adam steps on one fixed batch of 16 at least halve its loss.

    The loss is measured in training mode without dropout (deterministic): the DS-CNN's
    batch-norm moving statistics take some 50 steps to catch up, so its inference-mode
    loss still rises at first.
    """
    tf.keras.utils.set_random_seed(7)
    model = build_model(architecture, frames=FRAMES, features=FEATURES, label_count=LABELS, dropout=0.0)
    x = windows(16, seed=4)
    y = np.arange(16) % LABELS
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = float(loss(y, model(x, training=True)))
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss=loss)
    for _ in range(15):
        model.train_on_batch(x, y)
    after = float(loss(y, model(x, training=True)))
    assert after < before / 2, f"{architecture}: loss {before:.4f} -> {after:.4f}"
