"""Rewrite a .tflite so that a first conv spanning all the features reads them as channels.

The temporal DS-CNN (the demo recipe's) starts with a conv whose kernel spans all F
features of a (T, F) window: Keras sees a one-channel image (T, F, 1) and a (K, F) kernel
with stride (S, F). The same sums come out of a (T, 1, F) input with a (K, 1) kernel over F
channels, and the TFLite runtimes' int8 kernels are much faster on that form: XNNPACK's
packs channels, and one channel leaves most of each vector empty (the demo's int8 model:
49 -> 20 us per window on this x86 host, 2.4x; float barely changes, 18 -> 17 us).

:func:`features_as_channels` makes that change in the flatbuffer: the reshape in front of
the conv and the conv's filter shape and stride. No weight, scale or zero point moves (OHWI
filters of shape [O, K, F, 1] and [O, K, 1, F] have the same bytes), so the model computes
exactly the same numbers: int8 scores are bit for bit equal, float ones to the last bit in
every case measured. TensorFlow (the ``train`` extra) is needed; the daemon never runs this.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Relaid:
    """What :func:`features_as_channels` changed: one entry per rewritten conv."""

    tflite: bytes
    #: (frames, features) of each rewritten conv's input.
    convs: tuple[tuple[int, int], ...]


def _builtin_code(opcode: Any) -> int:
    # The schema's two fields for the operator code (the old one tops out at 127).
    return int(max(opcode.builtinCode, opcode.deprecatedBuiltinCode))


def _shape(values: Any) -> list[int]:
    return [int(v) for v in values] if values is not None else []


def _consumers(subgraph: Any, tensor: int) -> int:
    readers = sum(tensor in _shape(op.inputs) for op in subgraph.operators)
    return readers + (tensor in _shape(subgraph.outputs))


def _buffer_users(model: Any, buffer: int) -> int:
    return sum(tensor.buffer == buffer for subgraph in model.subgraphs for tensor in subgraph.tensors)


def _relay(model: Any, subgraph: Any, reshape: Any, conv: Any) -> tuple[int, int] | None:
    """Rewrite one reshape -> conv pair if it has the form; its (frames, features), else None."""
    from tensorflow.lite.python import schema_py_generated as schema

    image = _shape(reshape.outputs)[0]
    if _shape(conv.inputs)[0] != image or _consumers(subgraph, image) != 1:
        return None
    image_tensor = subgraph.tensors[image]
    if len(_shape(image_tensor.shape)) != 4:
        return None
    batch, frames, features, channels = _shape(image_tensor.shape)
    kernel_tensor = subgraph.tensors[_shape(conv.inputs)[1]]
    out_channels, kernel_frames, kernel_features, kernel_channels = _shape(kernel_tensor.shape)
    options = conv.builtinOptions
    if channels != 1 or features < 2 or (kernel_channels, kernel_features) != (1, features):
        return None
    if options.strideW != features or options.dilationWFactor != 1:
        return None
    new_shape = [batch, frames, 1, features]
    # The reshape's target: a constant second input (TFLite's converter) and/or its options.
    reshape_inputs = _shape(reshape.inputs)
    if len(reshape_inputs) > 1 and reshape_inputs[1] >= 0:
        target = subgraph.tensors[reshape_inputs[1]]
        if model.buffers[target.buffer].data is None or _consumers(subgraph, reshape_inputs[1]) != 1:
            return None  # computed at run time, or read by another operator too
        if _buffer_users(model, target.buffer) > 1:  # a constant the converter shared
            model.buffers.append(schema.BufferT())
            target.buffer = len(model.buffers) - 1
        target_bytes = np.array(new_shape, "<i4").tobytes()
        model.buffers[target.buffer].data = np.frombuffer(target_bytes, np.uint8)
    if getattr(reshape.builtinOptions, "newShape", None) is not None:
        reshape.builtinOptions.newShape = np.array(new_shape, np.int32)
    image_tensor.shape = np.array(new_shape, np.int32)
    if image_tensor.shapeSignature is not None:
        signature = _shape(image_tensor.shapeSignature)
        image_tensor.shapeSignature = np.array([signature[0], signature[1], 1, features], np.int32)
    kernel_shape = np.array([out_channels, kernel_frames, 1, features], np.int32)
    kernel_tensor.shape = kernel_shape
    if kernel_tensor.shapeSignature is not None:
        kernel_tensor.shapeSignature = kernel_shape.copy()
    options.strideW = 1
    log.debug(
        "first conv %dx%d over 1 channel -> %dx1 over %d", kernel_frames, features, kernel_frames, features
    )
    return frames, features


def features_as_channels(tflite: bytes) -> Relaid:
    """``tflite`` with each reshape -> one-channel conv spanning the full width relaid out.

    Returns the bytes unchanged (and no convs) when no operator pair has that form.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(tflite))
    codes = [_builtin_code(code) for code in model.operatorCodes]
    wanted = (schema.BuiltinOperator.RESHAPE, schema.BuiltinOperator.CONV_2D)
    convs = []
    for subgraph in model.subgraphs:
        for reshape, conv in itertools.pairwise(subgraph.operators or []):
            if (codes[reshape.opcodeIndex], codes[conv.opcodeIndex]) == wanted:
                relaid = _relay(model, subgraph, reshape, conv)
                if relaid is not None:
                    convs.append(relaid)
    if not convs:
        return Relaid(tflite=tflite, convs=())
    return Relaid(tflite=bytes(flatbuffer_utils.convert_object_to_bytearray(model)), convs=tuple(convs))
