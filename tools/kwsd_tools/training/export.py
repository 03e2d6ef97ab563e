"""Export a trained model: float32 and full-int8 kwsd bundles, measured, plus what TFLite Micro needs.

* Both models take one window, ``[1, frames, features]`` float32 (int8 for the int8 model,
  with the scale and zero point the converter chose, read back from the model, never assumed)
  and give softmax scores ``[1, labels]``: the shape kwsd's classifier and TFLite Micro expect.
* The int8 model is calibrated on real training features (``representative_count`` of them).
* Each model's test accuracy is measured with the TFLite interpreter through
  :class:`kwsd.classifier.TfliteClassifier` (the daemon's own path, not TensorFlow) and stored
  in its bundle's metrics, with the confusion matrix.
* ``<name>.kwsd`` (int8, the one to deploy), ``<name>-float.kwsd``, the bare ``.tflite`` files
  with ``<name>_labels.txt``, and ``<name>_model_data.cc``: the int8 model as a C array, as
  ``xxd -i`` writes it, for TFLite Micro.
* The bare ``.tflite`` files (and the C array) take the window flattened, ``[1, frames *
  features]``, as TensorFlow's train.py graph and the TinyML course's conversion give it: the
  input micro_speech's firmware checks for (``[1, 1960]`` at 49 x 40) and what ``kwsd model
  import`` reads. The same weights; the bundles keep ``[1, frames, features]``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.bundle import Bundle, make_bundle, write_bundle
from kwsd.frontend import FrontendSpec
from kwsd_tools.training.layout import features_as_channels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Exported:
    kind: str  # "int8" or "float32"
    bundle: Bundle
    path: Path
    tflite_path: Path
    test_accuracy: float
    summary: str


def convert(
    model: Any, spec: FrontendSpec, representative: npt.NDArray[np.float32], *, flat: bool = False
) -> tuple[bytes, bytes]:
    """(float32 .tflite, full-int8 .tflite with int8 input and output), batch 1, softmax out;
    ``flat``: the input is ``[1, frames * features]`` (train.py's), reshaped inside the model.
    A first conv spanning all the features (the temporal DS-CNN's) reads them as channels:
    the same numbers, and the int8 runtimes' kernels are 2.4x faster on that form."""
    float_model, int8_model = converted_by_tensorflow(model, spec, representative, flat=flat)
    return features_as_channels(float_model).tflite, features_as_channels(int8_model).tflite


def converted_by_tensorflow(
    model: Any, spec: FrontendSpec, representative: npt.NDArray[np.float32], *, flat: bool = False
) -> tuple[bytes, bytes]:
    """:func:`convert`'s two models as TensorFlow's converter writes them."""
    import tensorflow as tf

    frames, features = spec.feature_shape
    shape = (frames * features,) if flat else (frames, features)
    # A fixed [1, frames, features] input (the converter folds the shape arithmetic away) and
    # softmax scores out, around the trained layers and weights.
    inputs = tf.keras.Input(shape=shape, batch_size=1, dtype="float32", name="features")
    window = tf.keras.layers.Reshape((frames, features))(inputs) if flat else inputs
    scores = tf.keras.layers.Softmax(name="scores")(model(window, training=False))
    serving = tf.keras.Model(inputs, scores, name=model.name)

    def representative_dataset() -> Any:
        for one in representative:
            yield [one.reshape(1, *shape).astype(np.float32)]

    chatter = io.StringIO()  # the converter prints its signature to stdout
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the int8 input's scale comes from
        # the representative data, which is what we want.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        float_model = tf.lite.TFLiteConverter.from_keras_model(serving).convert()
        converter = tf.lite.TFLiteConverter.from_keras_model(serving)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        int8_model = converter.convert()
    log.debug("converter output:\n%s", chatter.getvalue())
    return bytes(float_model), bytes(int8_model)


def tflite_ops(tflite: bytes) -> list[str]:
    """The distinct operators of a .tflite, sorted (TFLite Micro users must register each)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - tflite-runtime instead
        from tflite_runtime.interpreter import Interpreter
    interpreter = Interpreter(model_content=tflite)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def c_array(tflite: bytes, name: str) -> str:
    """The model as C source, like ``xxd -i`` (aligned for TFLite Micro)."""
    lines = [
        f"// {name}: {len(tflite)} bytes. Made by kwsd's tools/export.py; for TFLite Micro.",
        "#include <cstdint>",
        "",
        f"alignas(16) const unsigned char g_{name}_model_data[] = {{",
    ]
    for offset in range(0, len(tflite), 12):
        chunk = tflite[offset : offset + 12]
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    lines += ["};", f"const int g_{name}_model_data_len = {len(tflite)};", ""]
    return "\n".join(lines)


def measure(bundle: Bundle, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> tuple[float, Any]:
    """(accuracy, confusion matrix) of a bundle on features, through kwsd's TfliteClassifier."""
    from kwsd_tools.training.trainer import confusion

    predicted = classify_all(bundle, x)
    accuracy = float(np.mean(predicted == y)) if len(y) else 0.0
    return accuracy, confusion(y, predicted, len(bundle.labels))


def classify_all(bundle: Bundle, x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """The top label index of every window, through kwsd's TfliteClassifier."""
    from kwsd.classifier import TfliteClassifier

    classifier = TfliteClassifier(bundle)
    return np.array([int(np.argmax(classifier.classify(window))) for window in x], np.int64)


def export_bundles(
    model: Any,
    *,
    name: str,
    labels: list[str],
    spec: FrontendSpec,
    representative: npt.NDArray[np.float32],
    test_x: npt.NDArray[np.float32],
    test_y: npt.NDArray[np.int64],
    out_dir: Path,
    tool: str,
    dataset: dict[str, Any],
    metrics: dict[str, Any],
    test_source: npt.NDArray[np.int64] | None = None,
    source_names: Sequence[str] = (),
) -> list[Exported]:
    """Convert, measure and write both bundles and the extras; returns what was written.

    The metrics hold the test accuracy over all, and by source and word (``test_by_source``:
    source -> accuracy, count, words -> accuracy, count; one source ``all`` without
    ``test_source``)."""
    from kwsd.classifier import TfliteClassifier
    from kwsd_tools.training.trainer import accuracy_breakdown, breakdown_metrics, confusion

    float_tflite, int8_tflite = convert(model, spec, representative)
    bare = dict(zip(("float32", "int8"), convert(model, spec, representative, flat=True), strict=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    (out_dir / f"{name}_model_data.cc").write_text(c_array(bare["int8"], name))
    exported = []
    for kind, tflite, suffix in (("int8", int8_tflite, ""), ("float32", float_tflite, "-float")):
        draft = make_bundle(tflite, labels, spec, name=name, tool=tool, dataset=dataset)
        predicted = classify_all(draft, test_x)
        accuracy = float(np.mean(predicted == test_y)) if len(test_y) else 0.0
        matrix = confusion(test_y, predicted, len(labels))
        breakdown = accuracy_breakdown(test_y, predicted, labels, test_source, source_names)
        bundle_metrics = {
            **metrics,
            "quantization": kind,
            "test_accuracy": round(accuracy, 5),
            "test_count": len(test_y),
            "test_confusion": matrix.tolist(),
            "test_by_source": breakdown_metrics(breakdown),
        }
        bundle = make_bundle(
            tflite, labels, spec, name=name, tool=tool, dataset=dataset, metrics=bundle_metrics
        )
        path = write_bundle(bundle, out_dir / f"{name}{suffix}.kwsd")
        tflite_path = out_dir / f"{name}{suffix}.tflite"
        tflite_path.write_bytes(bare[kind])
        classifier = TfliteClassifier(bundle)
        summary = (
            f"{path.name}: {kind}, {len(tflite):,} bytes, ops {', '.join(tflite_ops(tflite))}; "
            f"input {classifier.input_description}, output {classifier.output_description}; "
            f"test accuracy {100 * accuracy:.1f}% (N={len(test_y)}, TFLite interpreter)"
        )
        exported.append(Exported(kind, bundle, path, tflite_path, accuracy, summary))
    return exported
