"""The keyword models: every architecture of TensorFlow's speech_commands ``models.py``, plus DS-CNN.

:func:`build_model` returns a ``tf.keras.Model`` that takes one window of front-end features,
float32 ``(frames, features)`` (batch dimension added by Keras), and returns ``label_count``
logits (no softmax: the loss takes logits, and the daemon's classifier or export adds the
softmax). Dropout layers sit where train.py puts them and are active only in training.

Architectures (``T`` frames x ``F`` features in, ``L`` labels out), after train.py's code
rather than its docstrings (``conv`` pools once; ``tiny_embedding_conv`` has two convs):

- ``single_fc``: dense ``T*F -> L``.
- ``conv`` (cnn-trad-fpool3): conv 20x8x64 SAME +ReLU, dropout; max-pool 2x2 stride 2;
  conv 10x4x64 SAME +ReLU, dropout; dense -> L.
- ``low_latency_conv`` (cnn-one-fstride4): conv Tx8x186 VALID +ReLU, dropout; dense 128,
  dropout; dense 128, dropout; dense -> L. The dense layers are linear, as in train.py.
  Needs ``F >= 8``.
- ``low_latency_svdf``: SVDF of rank 2 with 1280 units +bias +ReLU, dropout; dense 256,
  dropout; dense 256, dropout; dense -> L (linear dense layers, as in train.py). The SVDF is
  built from standard layers so that it converts to builtin TFLite ops: the feature
  filters are a conv 1xF with ``rank * units`` filters (one activation per filter and
  frame), the time filters a depthwise conv T x rank over those activations, which also
  sums each unit's rank filters and adds the unit's bias. Its "memory" is the whole input
  window: the model is not streaming (it recomputes all T frames on every call, where
  train.py's inference graph keeps a state of past activations).
- ``tiny_conv`` (micro_speech's model): conv 10x8x8 stride 2 SAME +ReLU, dropout; dense -> L.
- ``tiny_embedding_conv``: conv 10x8x8 stride 2 SAME +ReLU, dropout; conv 10x8x8 stride 8
  SAME +ReLU, dropout; dense -> L.
- ``ds_cnn`` (depthwise-separable CNN, "Hello Edge"), the default: optional per-feature
  normalisation; conv ``first_kernel`` x ``channels`` stride ``first_stride`` SAME +BN+ReLU;
  ``blocks`` x (depthwise 3x3 +BN+ReLU, pointwise 1x1 x ``channels`` +BN+ReLU); global
  average pool; dropout; dense -> L. See :class:`DsCnnOptions`.

TensorFlow is imported only inside the functions that build a model, so this module (its
names, :class:`DsCnnOptions`, :class:`ModelError`) imports without it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)

ARCHITECTURES: tuple[str, ...] = (
    "single_fc",
    "conv",
    "low_latency_conv",
    "low_latency_svdf",
    "tiny_conv",
    "tiny_embedding_conv",
    "ds_cnn",
    "mlp",
)
DEFAULT_ARCHITECTURE = "ds_cnn"

# train.py's layer sizes, named once. Kernels and strides are (frames, features).
CONV_FIRST_KERNEL = (20, 8)
CONV_SECOND_KERNEL = (10, 4)
CONV_FILTERS = 64
CONV_POOL = (2, 2)
LOW_LATENCY_CONV_KERNEL_FEATURES = 8
LOW_LATENCY_CONV_FILTERS = 186
LOW_LATENCY_CONV_DENSE_UNITS = 128
SVDF_RANK = 2
SVDF_UNITS = 1280
SVDF_DENSE_UNITS = 256
TINY_CONV_KERNEL = (10, 8)
TINY_CONV_FILTERS = 8
TINY_CONV_STRIDE = (2, 2)
TINY_EMBEDDING_SECOND_STRIDE = (8, 8)
#: Batch-norm momentum of the DS-CNN (the demo's): Keras' 0.99 leaves the moving statistics
#: far from the batch statistics after a short training run.
BN_MOMENTUM = 0.9
DS_CNN_DEPTHWISE_KERNEL = 3
#: The temporal DS-CNN (the demo recipe's, on 49x13 MFCCs): the first conv spans all the
#: features, so the blocks convolve over time only. Kernel and stride in frames.
TEMPORAL_FIRST_KERNEL_FRAMES = 5
TEMPORAL_FIRST_STRIDE_FRAMES = 2


class ModelError(ValueError):
    """An unknown architecture, bad options, or an input an architecture cannot take.

    The message names the thing and what was expected, in one line.
    """


@dataclass(frozen=True)
class DsCnnOptions:
    """The DS-CNN's size, from ``build_model``'s ``options`` (same keys).

    The defaults are "Hello Edge"'s DS-CNN-S (64 channels, 4 blocks, first conv 10x4
    stride 2x2): 24,332 parameters at 12 labels whatever the input (the blocks end in a
    global average pool), 3.7 M multiply-adds per window at 49x13, 10.6 M at 49x40; int8,
    about 60 and 170 us per window on one x86 core, well inside a Pi's budget.
    ``temporal=True`` gives the demo's variant instead: a first conv of kernel (5, F)
    and stride (2, F), spanning all F features, so the blocks work on T/2 x 1 positions
    (depthwise 3x1): 0.5 M multiply-adds at 49x13, about 6x cheaper. It sets
    ``first_kernel`` and ``first_stride`` itself, so give neither with it.
    ``mean`` and ``variance`` (per feature, over the training features; both or neither)
    add a normalisation layer in front, so the model takes the front end's raw features.
    """

    channels: int = 64
    blocks: int = 4
    #: (frames, features); SAME padding.
    first_kernel: tuple[int, int] = (10, 4)
    first_stride: tuple[int, int] = (2, 2)
    temporal: bool = False
    mean: tuple[float, ...] | None = None
    variance: tuple[float, ...] | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], *, features: int) -> DsCnnOptions:
        """Checked options; raises :class:`ModelError` naming the bad key."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ModelError(f"ds_cnn options: unknown {unknown}; expected some of {known}")
        temporal = options.get("temporal", False)
        if not isinstance(temporal, bool):
            raise ModelError(f"ds_cnn options.temporal: expected true or false, got {temporal!r}")
        if temporal and ("first_kernel" in options or "first_stride" in options):
            raise ModelError(
                "ds_cnn options: temporal sets first_kernel and first_stride itself "
                f"(({TEMPORAL_FIRST_KERNEL_FRAMES}, features) and ({TEMPORAL_FIRST_STRIDE_FRAMES}, "
                "features)); give one or the other"
            )
        defaults = cls()
        if temporal:
            first_kernel = (TEMPORAL_FIRST_KERNEL_FRAMES, features)
            first_stride = (TEMPORAL_FIRST_STRIDE_FRAMES, features)
        else:
            first_kernel = _int_pair("first_kernel", options.get("first_kernel", defaults.first_kernel))
            first_stride = _int_pair("first_stride", options.get("first_stride", defaults.first_stride))
        if ("mean" in options) != ("variance" in options):
            raise ModelError("ds_cnn options: give mean and variance together (per feature), or neither")
        return cls(
            channels=_positive_int("channels", options.get("channels", defaults.channels)),
            blocks=_positive_int("blocks", options.get("blocks", defaults.blocks), minimum=0),
            first_kernel=first_kernel,
            first_stride=first_stride,
            temporal=temporal,
            mean=_per_feature("mean", options["mean"], features) if "mean" in options else None,
            variance=(
                _per_feature("variance", options["variance"], features) if "variance" in options else None
            ),
        )

    def columns(self, features: int) -> int:
        """Feature columns left after the first conv (SAME padding)."""
        return math.ceil(features / self.first_stride[1])


def _positive_int(key: str, value: Any, *, minimum: int = 1, architecture: str = "ds_cnn") -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ModelError(f"{architecture} options.{key}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _int_pair(key: str, value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ModelError(f"ds_cnn options.{key}: expected (frames, features), integers >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def _per_feature(key: str, value: Any, features: int) -> tuple[float, ...]:
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (features,) or not np.all(np.isfinite(array)):
        raise ModelError(
            f"ds_cnn options.{key}: expected {features} finite numbers (one per feature), "
            f"got shape {list(array.shape)}"
        )
    if key == "variance" and np.any(array < 0):
        raise ModelError("ds_cnn options.variance: expected values >= 0")
    return tuple(float(v) for v in array)


# --------------------------------------------------------------------------------------
# The architectures. Each takes the Keras layers module, the (batch, frames, features)
# input tensor and the checked sizes, and returns the logits tensor.


@dataclass(frozen=True)
class _Shape:
    frames: int
    features: int
    label_count: int
    dropout: float


def _image(layers: Any, x: Any, shape: _Shape) -> Any:
    """(frames, features) -> (frames, features, 1): a one-channel image for the convs."""
    return layers.Reshape((shape.frames, shape.features, 1))(x)


def _logits(layers: Any, x: Any, shape: _Shape) -> Any:
    return layers.Dense(shape.label_count, name="logits")(x)


def _single_fc(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    return _logits(layers, layers.Flatten()(x), shape)


def _conv(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    x = _image(layers, x, shape)
    x = layers.Conv2D(CONV_FILTERS, CONV_FIRST_KERNEL, padding="same", activation="relu")(x)
    x = layers.Dropout(shape.dropout)(x)
    x = layers.MaxPooling2D(CONV_POOL, strides=CONV_POOL, padding="same")(x)
    x = layers.Conv2D(CONV_FILTERS, CONV_SECOND_KERNEL, padding="same", activation="relu")(x)
    x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, layers.Flatten()(x), shape)


def _low_latency_conv(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    x = _image(layers, x, shape)
    kernel = (shape.frames, LOW_LATENCY_CONV_KERNEL_FEATURES)
    x = layers.Conv2D(LOW_LATENCY_CONV_FILTERS, kernel, padding="valid", activation="relu")(x)
    x = layers.Dropout(shape.dropout)(x)
    x = layers.Flatten()(x)
    for _ in range(2):
        x = layers.Dense(LOW_LATENCY_CONV_DENSE_UNITS)(x)
        x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, x, shape)


def _low_latency_svdf(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    filters = SVDF_RANK * SVDF_UNITS
    x = _image(layers, x, shape)
    # Feature filters: one weight vector over the features per filter, applied to every
    # frame -> (frames, 1, rank * units). No bias (train.py's SVDF has one bias per unit).
    x = layers.Conv2D(filters, (1, shape.features), padding="valid", use_bias=False, name="svdf_features")(x)
    # Filter k = r * units + u: unit u's rank-r filter. A depthwise conv of kernel
    # (frames, rank) over (frames, rank, units) is then each filter's time filter, summed
    # over the unit's rank filters, plus the unit's bias: (1, 1, units).
    x = layers.Reshape((shape.frames, SVDF_RANK, SVDF_UNITS))(x)
    x = layers.DepthwiseConv2D((shape.frames, SVDF_RANK), padding="valid", name="svdf_time")(x)
    x = layers.Flatten()(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(shape.dropout)(x)
    for _ in range(2):
        x = layers.Dense(SVDF_DENSE_UNITS)(x)
        x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, x, shape)


def _tiny_conv(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    x = _image(layers, x, shape)
    x = layers.Conv2D(
        TINY_CONV_FILTERS, TINY_CONV_KERNEL, strides=TINY_CONV_STRIDE, padding="same", activation="relu"
    )(x)
    x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, layers.Flatten()(x), shape)


def _tiny_embedding_conv(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    x = _image(layers, x, shape)
    for stride in (TINY_CONV_STRIDE, TINY_EMBEDDING_SECOND_STRIDE):
        x = layers.Conv2D(
            TINY_CONV_FILTERS, TINY_CONV_KERNEL, strides=stride, padding="same", activation="relu"
        )(x)
        x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, layers.Flatten()(x), shape)


def _ds_cnn(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    ds = DsCnnOptions.from_mapping(options, features=shape.features)
    if ds.mean is not None:
        x = layers.Normalization(axis=-1, mean=list(ds.mean), variance=list(ds.variance or ()))(x)
    x = _image(layers, x, shape)
    first = layers.Conv2D(
        ds.channels, ds.first_kernel, strides=ds.first_stride, padding="same", use_bias=False
    )
    x = first(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    # One column left (the temporal variant): the blocks convolve over time only.
    depthwise_kernel = (DS_CNN_DEPTHWISE_KERNEL, min(DS_CNN_DEPTHWISE_KERNEL, ds.columns(shape.features)))
    for _ in range(ds.blocks):
        x = layers.DepthwiseConv2D(depthwise_kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(ds.channels, (1, 1), use_bias=False)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, x, shape)


@dataclass(frozen=True)
class MlpOptions:
    """The ``mlp``'s size, from ``build_model``'s ``options`` (same keys): ``layers`` blocks of
    Dense(``hidden_units``) -> LayerNormalization -> ReLU -> Dropout on the flattened window,
    then the logits. openWakeWord's heads on its speech embedding have this form (a window of
    16 x 96 embeddings); at the defaults, 215,308 parameters for 12 labels on that window."""

    hidden_units: int = 128
    layers: int = 2

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> MlpOptions:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ModelError(f"mlp options: unknown {unknown}; expected some of {known}")
        defaults = cls()
        return cls(
            hidden_units=_positive_int(
                "hidden_units", options.get("hidden_units", defaults.hidden_units), architecture="mlp"
            ),
            layers=_positive_int("layers", options.get("layers", defaults.layers), architecture="mlp"),
        )


def _mlp(layers: Any, x: Any, shape: _Shape, options: Mapping[str, Any]) -> Any:
    mlp = MlpOptions.from_mapping(options)
    x = layers.Flatten()(x)
    for _ in range(mlp.layers):
        x = layers.Dense(mlp.hidden_units)(x)
        x = layers.LayerNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(shape.dropout)(x)
    return _logits(layers, x, shape)


_Builder = Callable[[Any, Any, _Shape, Mapping[str, Any]], Any]
_BUILDERS: dict[str, _Builder] = {
    "single_fc": _single_fc,
    "conv": _conv,
    "low_latency_conv": _low_latency_conv,
    "low_latency_svdf": _low_latency_svdf,
    "tiny_conv": _tiny_conv,
    "tiny_embedding_conv": _tiny_embedding_conv,
    "ds_cnn": _ds_cnn,
    "mlp": _mlp,
}
#: Architectures that read ``options``; the others take none.
_TAKES_OPTIONS = frozenset({"ds_cnn", "mlp"})


def check_input(architecture: str, *, frames: int, features: int, label_count: int) -> None:
    """Raise :class:`ModelError` unless ``architecture`` is known and can take this input."""
    if architecture not in _BUILDERS:
        raise ModelError(f"unknown architecture {architecture!r}; expected one of {', '.join(ARCHITECTURES)}")
    for name, value in (("frames", frames), ("features", features), ("label_count", label_count)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ModelError(f"{architecture}: {name} must be an integer >= 1, got {value!r}")
    if architecture == "low_latency_conv" and features < LOW_LATENCY_CONV_KERNEL_FEATURES:
        raise ModelError(
            f"low_latency_conv needs at least {LOW_LATENCY_CONV_KERNEL_FEATURES} features per frame "
            f"(its conv is {frames}x{LOW_LATENCY_CONV_KERNEL_FEATURES}, VALID), "
            f"got input {frames}x{features}"
        )


def build_model(
    architecture: str,
    *,
    frames: int,
    features: int,
    label_count: int,
    dropout: float = 0.5,
    options: Mapping[str, Any] | None = None,
) -> tf.keras.Model:
    """The Keras model of ``architecture`` for ``(frames, features)`` float32 input -> ``label_count`` logits.

    ``dropout`` is the rate of every dropout layer (train.py's default 0.5; Keras applies
    it only in training). ``options`` sizes the DS-CNN (keys of :class:`DsCnnOptions`); the
    other architectures take none. Raises :class:`ModelError` for an unknown architecture,
    bad options, or an input the architecture cannot take. The model is named after the
    architecture, its input ``features`` and its output ``logits``.
    """
    check_input(architecture, frames=frames, features=features, label_count=label_count)
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"{architecture}: dropout must be in [0, 1), got {dropout!r}")
    given = dict(options or {})
    if given and architecture not in _TAKES_OPTIONS:
        raise ModelError(f"{architecture} takes no options, got {sorted(given)}")

    import tensorflow as tf

    layers = tf.keras.layers
    shape = _Shape(frames=int(frames), features=int(features), label_count=int(label_count), dropout=dropout)
    inputs = tf.keras.Input(shape=(shape.frames, shape.features), dtype="float32", name="features")
    outputs = _BUILDERS[architecture](layers, inputs, shape, given)
    model = tf.keras.Model(inputs, outputs, name=architecture)
    log.debug("built %s", describe(model))
    return model


def describe(model: tf.keras.Model) -> str:
    """One line: architecture, input shape, output size, parameter count.

    For example ``tiny_conv: 49x40 features -> 4 logits, 16,652 parameters``; non-trainable
    parameters (batch-norm statistics) are counted, and named when there are any.
    """
    _batch, frames, features = model.inputs[0].shape
    labels = model.outputs[0].shape[-1]
    total = model.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    text = f"{model.name}: {frames}x{features} features -> {labels} logits, {total:,} parameters"
    if trainable != total:
        text += f" ({total - trainable:,} non-trainable)"
    return text


def with_batch_size(model: tf.keras.Model, batch_size: int = 1) -> tf.keras.Model:
    """The same model (the same layers and weights) with a fixed batch dimension, for export.

    A model from :func:`build_model` takes any batch, so each reshape inside it reads the
    batch size at run time (SHAPE, STRIDED_SLICE and PACK ops in the ``.tflite``). With a
    fixed ``[batch_size, frames, features]`` input, the converter folds that arithmetic
    away; the daemon classifies one window at a time, so export with ``batch_size=1``.
    """
    import tensorflow as tf

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ModelError(f"{model.name}: batch_size must be an integer >= 1, got {batch_size!r}")
    _batch, frames, features = model.inputs[0].shape
    inputs = tf.keras.Input(shape=(frames, features), batch_size=batch_size, dtype="float32", name="features")
    return tf.keras.Model(inputs, model(inputs), name=model.name)
