"""Frozen graphs from TensorFlow's speech_commands ``freeze.py``: the front end read, the model converted.

freeze.py writes one GraphDef holding the whole path: ``wav_data`` (a WAV file's bytes), the
DecodeWav op ``decoded_sample_data`` (``desired_samples`` fixes the clip), the front end
(AudioSpectrogram then Mfcc for ``--preprocess=mfcc``; AudioSpectrogram, ExpandDims and an
AvgPool across frequency for ``average``; AudioMicrofrontend then a multiply by 10/256 for
``micro``), a Reshape to the flat fingerprint, the model, and the Softmax ``labels_softmax``.

:func:`read_graph_facts` reads every front-end number from the ops' attributes, so the user
repeats none of train.py's flags; :func:`frontend_spec` turns them into kwsd's
:class:`~kwsd.frontend.FrontendSpec`, refusing a flag the graph contradicts; :func:`convert`
cuts the graph at the front end's output and converts the model part alone to a ``.tflite``
(kwsd computes the front end itself, in numpy, exactly as those ops do).

Only ``kwsd model import`` uses this module. It needs TensorFlow (the ``train`` extra), which
is imported inside the functions, never at module import: the daemon never loads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from kwsd.bundle import MAX_MODEL_BYTES
from kwsd.errors import InputNotFoundError, ModelError, RuntimeDependencyError, read_limited
from kwsd.frontend import INT16_FULL_SCALE, FrontendKind, FrontendSpec, MicroState, SpecError

log = logging.getLogger(__name__)

#: freeze.py's node names: the WAV input and the scores output.
WAV_INPUT_NODE = "wav_data"
OUTPUT_NODE = "labels_softmax"
#: The placeholder that replaces the front end in the converted model.
FINGERPRINT_NODE = "fingerprint"
#: train.py's defaults, used only where a graph cannot state the value (and then said).
TRAIN_PY_SAMPLE_RATE_HZ = 16000
TRAIN_PY_FEATURE_BIN_COUNT = 40
#: int8 calibration uses at most this many WAVs of --representative-dir (tools/export.py's 500).
REPRESENTATIVE_MAX_FILES = 500


class Preprocess(enum.Enum):
    """train.py's ``--preprocess``: which front end a frozen graph holds, told by its ops."""

    MFCC = "mfcc"
    AVERAGE = "average"
    MICRO = "micro"

    @property
    def kind(self) -> FrontendKind:
        """kwsd's front end that computes it."""
        return _KIND_OF_PREPROCESS[self]

    @property
    def ops(self) -> frozenset[str]:
        """The ops its front end is made of in freeze.py's graph (Const feeds them their numbers)."""
        return _FRONT_END_OPS[self]


_KIND_OF_PREPROCESS = {
    Preprocess.MFCC: FrontendKind.TF_MFCC,
    Preprocess.AVERAGE: FrontendKind.TF_AVERAGE,
    Preprocess.MICRO: FrontendKind.MICRO,
}
_COMMON_OPS = {"Placeholder", "DecodeWav", "Const", "Identity"}
_FRONT_END_OPS = {
    Preprocess.MFCC: frozenset({*_COMMON_OPS, "AudioSpectrogram", "Mfcc"}),
    Preprocess.AVERAGE: frozenset({*_COMMON_OPS, "AudioSpectrogram", "ExpandDims", "AvgPool"}),
    # audio_microfrontend() reshapes its input to one dimension itself.
    Preprocess.MICRO: frozenset({*_COMMON_OPS, "Mul", "Cast", "Reshape", "AudioMicrofrontend"}),
}
#: The op whose presence tells the preprocess mode, checked in this order.
_TELLING_OPS = (
    ("AudioMicrofrontend", Preprocess.MICRO),
    ("Mfcc", Preprocess.MFCC),
    ("AudioSpectrogram", Preprocess.AVERAGE),
)


def import_tensorflow() -> Any:
    """TensorFlow, quiet; a RuntimeDependencyError naming the extra when it is not installed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # no banner about CPU instructions
    try:
        with _quiet():  # oneDNN and absl notes written by native code at import
            import tensorflow as tf
    except ImportError:
        raise RuntimeDependencyError(
            "importing a frozen graph (.pb) needs TensorFlow, which is not installed: "
            "pip install 'kwsd[train]' (the daemon itself never needs it)"
        ) from None
    tf.get_logger().setLevel(logging.ERROR)
    return tf


def read_graph(path: Path) -> Any:
    """The GraphDef in ``path`` (a binary protobuf, as freeze.py writes it)."""
    import_tensorflow()
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    try:
        raw = read_limited(path, MAX_MODEL_BYTES)
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot read ({err.strerror or err})") from None
    graph_def = graph_pb2.GraphDef()
    try:
        graph_def.ParseFromString(raw)
    except (DecodeError, RuntimeWarning, ValueError) as err:
        raise ModelError(
            f"{path}: not a TensorFlow GraphDef (expected freeze.py's binary .pb; parse error: {err})"
        ) from None
    if not graph_def.node:
        raise ModelError(f"{path}: a GraphDef with no nodes, expected freeze.py's frozen graph")
    return graph_def


@dataclass(frozen=True)
class Fact:
    """One number read from a graph, with the op attribute it came from (for messages)."""

    value: int | float
    source: str


@dataclass(frozen=True)
class GraphFacts:
    """What a freeze.py graph states about its front end and model, each with its source."""

    preprocess: Preprocess
    preprocess_source: str
    clip_samples: Fact
    window_samples: Fact
    stride_samples: Fact
    sample_rate_hz: Fact | None  # None: the graph does not state it (average never uses it)
    #: mfcc: the Mfcc op's four attributes; average: the pooling width in bins; micro: the op's attributes.
    params: dict[str, Fact]
    fingerprint_node: str  # the front end's output: where the model part begins
    fingerprint_shape: tuple[int, ...]
    fingerprint_size: int | None  # the Reshape's flat size, when the graph has freeze.py's Reshape
    #: micro: what freeze.py multiplies audio in [-1, 1] by before the int16 cast (32767).
    input_scale: Fact | None = None


def read_graph_facts(graph_def: Any, where: str) -> GraphFacts:
    """Read the front end from the ops; ModelError naming what was found and what was expected."""
    nodes = {node.name: node for node in graph_def.node}
    _require_node(nodes, WAV_INPUT_NODE, "Placeholder", where)
    _require_node(nodes, OUTPUT_NODE, "Softmax", where)
    decoders = [n for n in nodes.values() if n.op == "DecodeWav"]
    if len(decoders) != 1 or _producer(decoders[0].input[0]) != WAV_INPUT_NODE:
        raise ModelError(
            f"{where}: expected one DecodeWav op reading {WAV_INPUT_NODE!r} "
            "(freeze.py's decoded_sample_data), "
            f"found {len(decoders)}" + (f" ({', '.join(n.name for n in decoders)})" if decoders else "")
        )
    decoder = decoders[0]
    if _int_attr(decoder, "desired_channels") != 1:
        raise ModelError(
            f"{where}: {decoder.name} decodes {_int_attr(decoder, 'desired_channels')} channels, expected 1"
        )
    clip = Fact(_int_attr(decoder, "desired_samples"), f"{decoder.name} desired_samples")
    if clip.value <= 0:
        raise ModelError(f"{where}: {decoder.name} has no desired_samples (found {clip.value}), expected > 0")

    consumers: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for name in node.input:
            consumers.setdefault(_producer(name), []).append(node)
    by_op: dict[str, list[Any]] = {}
    for node in graph_def.node:
        by_op.setdefault(node.op, []).append(node)

    # The op that names the preprocess mode; what feeds it must be ops kwsd computes itself.
    for op, preprocess in _TELLING_OPS:
        if op in by_op:
            for node in by_op[op]:
                _check_mappable(nodes, node.name, preprocess, where)
            break
    if "AudioMicrofrontend" in by_op:
        facts = _micro_facts(nodes, consumers, by_op, clip, where)
    elif "Mfcc" in by_op:
        facts = _mfcc_facts(nodes, by_op, clip, where)
    elif "AudioSpectrogram" in by_op:
        facts = _average_facts(nodes, consumers, by_op, clip, where)
    else:
        after = sorted({n.op for n in consumers.get(decoder.name, [])})
        raise ModelError(
            f"{where}: no front end kwsd can map after {decoder.name}: "
            f"found ops {', '.join(after) or 'none'}, "
            "expected AudioSpectrogram (+ Mfcc or AvgPool) or AudioMicrofrontend, as freeze.py builds them"
        )
    _check_front_end_ops(nodes, facts, where)
    # freeze.py's Reshape to [-1, fingerprint_size] right after the front end: its size is one more fact.
    reshapes = [n for n in consumers.get(facts.fingerprint_node, []) if n.op == "Reshape"]
    if len(reshapes) == 1 and len(reshapes[0].input) > 1:
        shape_node = nodes.get(_producer(reshapes[0].input[1]))
        if shape_node is not None and shape_node.op == "Const":
            shape = [int(d) for d in np.ravel(_const_value(shape_node))]
            if shape and shape[-1] > 0:
                facts = dataclasses.replace(facts, fingerprint_size=shape[-1])
    return facts


def _require_node(nodes: dict[str, Any], name: str, op: str, where: str) -> None:
    node = nodes.get(name)
    if node is None:
        found = ", ".join(sorted(n.name for n in nodes.values() if n.op in ("Placeholder", "Softmax")))
        raise ModelError(
            f"{where}: no node {name!r} ({op}), expected freeze.py's graph: {WAV_INPUT_NODE} -> ... -> "
            f"{OUTPUT_NODE} (found placeholders and softmaxes: {found or 'none'})"
        )
    if node.op != op:
        raise ModelError(f"{where}: node {name!r} is a {node.op} op, expected {op}")


def _producer(input_name: str) -> str:
    """The node name of an input reference (``name``, ``name:1`` or ``^name``)."""
    return input_name.lstrip("^").split(":")[0]


def _int_attr(node: Any, key: str) -> int:
    return int(node.attr[key].i)


def _float_attr(node: Any, key: str) -> float:
    """A float attribute as the op holds it (float32), written as the shortest decimal that is it.

    0.025 is stored as 0.0250000004 in float32: the bundle records 0.025, which reads back as
    the same float32 the op computes with.
    """
    return float(str(np.float32(node.attr[key].f)))


def _single(by_op: dict[str, list[Any]], op: str, where: str) -> Any:
    found = by_op.get(op, [])
    if len(found) != 1:
        raise ModelError(
            f"{where}: expected one {op} op, found {len(found)} ({', '.join(n.name for n in found)})"
        )
    return found[0]


def _spectrogram_facts(spectrogram: Any, where: str) -> tuple[Fact, Fact]:
    if not spectrogram.attr["magnitude_squared"].b:
        raise ModelError(
            f"{where}: {spectrogram.name} has magnitude_squared false, expected true (train.py's setting; "
            "kwsd's tf_* front ends compute squared magnitudes)"
        )
    return (
        Fact(_int_attr(spectrogram, "window_size"), f"{spectrogram.name} window_size"),
        Fact(_int_attr(spectrogram, "stride"), f"{spectrogram.name} stride"),
    )


def _check_reads(node: Any, expected: str, where: str, index: int = 0) -> None:
    if len(node.input) <= index or _producer(node.input[index]) != expected:
        found = _producer(node.input[index]) if len(node.input) > index else "nothing"
        raise ModelError(f"{where}: {node.name} reads {found!r}, expected {expected!r}")


def _mfcc_facts(nodes: dict[str, Any], by_op: dict[str, list[Any]], clip: Fact, where: str) -> GraphFacts:
    spectrogram = _single(by_op, "AudioSpectrogram", where)
    mfcc = _single(by_op, "Mfcc", where)
    decoder = _single(by_op, "DecodeWav", where)
    _check_reads(spectrogram, decoder.name, where)
    _check_reads(mfcc, spectrogram.name, where)
    window, stride = _spectrogram_facts(spectrogram, where)
    rate_node = nodes.get(_producer(mfcc.input[1])) if len(mfcc.input) > 1 else None
    rate: Fact | None = None
    if rate_node is not None and rate_node.op == "Const":
        rate = Fact(int(_const_value(rate_node)), f"{mfcc.name}'s sample_rate input")
    params = {
        "dct_coefficient_count": Fact(
            _int_attr(mfcc, "dct_coefficient_count"), f"{mfcc.name} dct_coefficient_count"
        ),
        "filterbank_channel_count": Fact(
            _int_attr(mfcc, "filterbank_channel_count"), f"{mfcc.name} filterbank_channel_count"
        ),
        "lower_frequency_limit_hz": Fact(
            _float_attr(mfcc, "lower_frequency_limit"), f"{mfcc.name} lower_frequency_limit"
        ),
        "upper_frequency_limit_hz": Fact(
            _float_attr(mfcc, "upper_frequency_limit"), f"{mfcc.name} upper_frequency_limit"
        ),
    }
    frames = _frame_count(clip, window, stride)
    return GraphFacts(
        preprocess=Preprocess.MFCC,
        preprocess_source=f"ops {spectrogram.name} + {mfcc.name}",
        clip_samples=clip,
        window_samples=window,
        stride_samples=stride,
        sample_rate_hz=rate,
        params=params,
        fingerprint_node=mfcc.name,
        fingerprint_shape=(1, frames, int(params["dct_coefficient_count"].value)),
        fingerprint_size=None,
    )


def _average_facts(
    nodes: dict[str, Any],
    consumers: dict[str, list[Any]],
    by_op: dict[str, list[Any]],
    clip: Fact,
    where: str,
) -> GraphFacts:
    spectrogram = _single(by_op, "AudioSpectrogram", where)
    decoder = _single(by_op, "DecodeWav", where)
    _check_reads(spectrogram, decoder.name, where)
    window, stride = _spectrogram_facts(spectrogram, where)
    after = consumers.get(spectrogram.name, [])
    expand = after[0] if len(after) == 1 and after[0].op == "ExpandDims" else None
    pools = consumers.get(expand.name, []) if expand is not None else []
    if expand is None or len(pools) != 1 or pools[0].op != "AvgPool":
        found = ", ".join(f"{n.name} ({n.op})" for n in (pools if expand is not None else after)) or "nothing"
        raise ModelError(
            f"{where}: {spectrogram.name} feeds {found}, expected Mfcc (preprocess mfcc) or ExpandDims then "
            "AvgPool (preprocess average), as freeze.py builds them"
        )
    pool = pools[0]
    ksize = list(pool.attr["ksize"].list.i)
    strides = list(pool.attr["strides"].list.i)
    padding = pool.attr["padding"].s.decode()
    if ksize != [1, 1, ksize[2], 1] or strides != ksize or padding != "SAME":
        raise ModelError(
            f"{where}: {pool.name} pools ksize {ksize}, strides {strides}, padding {padding}; expected "
            "train.py's average: ksize = strides = [1,1,width,1], padding SAME"
        )
    width = Fact(ksize[2], f"{pool.name} ksize")
    frames = _frame_count(clip, window, stride)
    fft_bins = 1 + (1 << (int(window.value) - 1).bit_length()) // 2
    features = -(-fft_bins // int(width.value))
    return GraphFacts(
        preprocess=Preprocess.AVERAGE,
        preprocess_source=f"ops {spectrogram.name} + {pool.name}",
        clip_samples=clip,
        window_samples=window,
        stride_samples=stride,
        sample_rate_hz=None,
        params={"average_window_bins": width},
        fingerprint_node=pool.name,
        fingerprint_shape=(1, frames, features, 1),
        fingerprint_size=None,
    )


def _micro_facts(
    nodes: dict[str, Any],
    consumers: dict[str, list[Any]],
    by_op: dict[str, list[Any]],
    clip: Fact,
    where: str,
) -> GraphFacts:
    micro = _single(by_op, "AudioMicrofrontend", where)
    # Attributes kwsd's micro front end has no equivalent for must hold train.py's values.
    for key, expected in (("left_context", 0), ("right_context", 0), ("frame_stride", 1), ("out_scale", 1)):
        if _int_attr(micro, key) != expected:
            raise ModelError(
                f"{where}: {micro.name} {key} is {_int_attr(micro, key)}, expected {expected} "
                "(train.py's value; kwsd cannot map another)"
            )
    if micro.attr["zero_padding"].b:
        raise ModelError(f"{where}: {micro.name} zero_padding is true, expected false (train.py's value)")
    rate = Fact(_int_attr(micro, "sample_rate"), f"{micro.name} sample_rate")
    window_ms = _int_attr(micro, "window_size")
    step_ms = _int_attr(micro, "window_step")
    rate_hz = int(rate.value)
    window = Fact(rate_hz * window_ms // 1000, f"{micro.name} window_size {window_ms} ms,")
    stride = Fact(rate_hz * step_ms // 1000, f"{micro.name} window_step {step_ms} ms,")
    # freeze.py multiplies the op's output by 10/256 before the Reshape: that Mul ends the front end.
    after = consumers.get(micro.name, [])
    end = micro
    output_scale = Fact(1.0, f"{micro.name} out_scale")
    if len(after) == 1 and after[0].op == "Mul":
        end = after[0]
        output_scale = Fact(_mul_constant(nodes, end, micro.name, where), f"{end.name}'s constant")
    # ... and its input by 32767 (train.py: 32768) before the Cast to int16.
    cast = nodes.get(_producer(micro.input[0]))
    while cast is not None and cast.op in ("Reshape", "Identity"):
        cast = nodes.get(_producer(cast.input[0]))
    scale_node = nodes.get(_producer(cast.input[0])) if cast is not None and cast.op == "Cast" else None
    if scale_node is None or scale_node.op != "Mul":
        raise ModelError(
            f"{where}: {micro.name} reads {cast.name if cast is not None else 'nothing'}, expected "
            "freeze.py's int16 cast of the decoded audio times 32767"
        )
    input_scale = Fact(
        _mul_constant(nodes, scale_node, "decoded_sample_data", where), f"{scale_node.name}'s constant"
    )
    f = micro.attr
    params = {
        "channel_count": Fact(_int_attr(micro, "num_channels"), f"{micro.name} num_channels"),
        "low_freq_hz": Fact(_float_attr(micro, "lower_band_limit"), f"{micro.name} lower_band_limit"),
        "high_freq_hz": Fact(_float_attr(micro, "upper_band_limit"), f"{micro.name} upper_band_limit"),
        "pcan_gain_control": Fact(bool(f["enable_pcan"].b), f"{micro.name} enable_pcan"),
        "log_scale": Fact(bool(f["enable_log"].b), f"{micro.name} enable_log"),
        "output_scale": output_scale,
        "smoothing_bits": Fact(_int_attr(micro, "smoothing_bits"), f"{micro.name} smoothing_bits"),
        "even_smoothing": Fact(_float_attr(micro, "even_smoothing"), f"{micro.name} even_smoothing"),
        "odd_smoothing": Fact(_float_attr(micro, "odd_smoothing"), f"{micro.name} odd_smoothing"),
        "min_signal_remaining": Fact(
            _float_attr(micro, "min_signal_remaining"), f"{micro.name} min_signal_remaining"
        ),
        "pcan_strength": Fact(_float_attr(micro, "pcan_strength"), f"{micro.name} pcan_strength"),
        "pcan_offset": Fact(_float_attr(micro, "pcan_offset"), f"{micro.name} pcan_offset"),
        "gain_bits": Fact(_int_attr(micro, "gain_bits"), f"{micro.name} gain_bits"),
        "scale_shift": Fact(_int_attr(micro, "scale_shift"), f"{micro.name} scale_shift"),
    }
    frames = _frame_count(clip, window, stride)
    return GraphFacts(
        preprocess=Preprocess.MICRO,
        preprocess_source=f"op {micro.name}",
        clip_samples=clip,
        window_samples=window,
        stride_samples=stride,
        sample_rate_hz=rate,
        params=params,
        fingerprint_node=end.name,
        # The op gives [frames, channels]; a batch of one keeps the .tflite's input [1, frames, channels].
        fingerprint_shape=(1, frames, int(params["channel_count"].value)),
        fingerprint_size=None,
        input_scale=input_scale,
    )


def _mul_constant(nodes: dict[str, Any], mul: Any, other: str, where: str) -> float:
    """The scalar constant a Mul multiplies ``other`` by."""
    for ref in mul.input:
        node = nodes.get(_producer(ref))
        if node is not None and node.op == "Const":
            value = np.ravel(_const_value(node))
            if value.size == 1:
                return float(str(np.float32(value[0])))
    raise ModelError(f"{where}: {mul.name} multiplies {other} by no scalar constant, expected freeze.py's")


def _frame_count(clip: Fact, window: Fact, stride: Fact) -> int:
    if int(stride.value) <= 0 or int(window.value) <= 0:
        return 0
    return max(0, 1 + (int(clip.value) - int(window.value)) // int(stride.value))


def _const_value(node: Any) -> Any:
    tf = import_tensorflow()
    return tf.make_ndarray(node.attr["value"].tensor)


def _upstream(nodes: dict[str, Any], start: str, stop: Callable[[str], bool]) -> list[str]:
    """Names of the nodes ``start`` depends on (itself included), not walking past ``stop``."""
    order: list[str] = []
    seen: set[str] = set()
    stack = [start]
    while stack:
        name = stack.pop()
        if name in seen or stop(name):
            continue
        seen.add(name)
        order.append(name)
        node = nodes.get(name)
        if node is None:
            continue
        stack.extend(_producer(i) for i in node.input)
    return order


def _check_mappable(nodes: dict[str, Any], end: str, preprocess: Preprocess, where: str) -> list[str]:
    """The nodes ``end`` depends on, each an op of ``preprocess``'s front end; else ModelError naming them."""
    front = _upstream(nodes, end, lambda _name: False)
    allowed = preprocess.ops
    strange = [
        f"{name} ({nodes[name].op})" for name in front if name in nodes and nodes[name].op not in allowed
    ]
    if strange:
        raise ModelError(
            f"{where}: ops kwsd cannot map in the {preprocess.value} front end: {', '.join(sorted(strange))} "
            f"(expected only {', '.join(sorted(allowed))}, as freeze.py builds it)"
        )
    return front


def _check_front_end_ops(nodes: dict[str, Any], facts: GraphFacts, where: str) -> None:
    """Every op before the cut is one kwsd computes itself; the model reads audio only through the cut."""
    front = _check_mappable(nodes, facts.fingerprint_node, facts.preprocess, where)
    front_names = {name for name in front if name in nodes and nodes[name].op != "Const"}
    model = _upstream(nodes, OUTPUT_NODE, lambda name: name == facts.fingerprint_node)
    leaks = sorted(name for name in model if name in front_names)
    if leaks:
        raise ModelError(
            f"{where}: the model reads {', '.join(leaks)} besides the front end's output "
            f"{facts.fingerprint_node}; expected it to see the audio only through the features"
        )
    missing = sorted(name for name in model if name not in nodes)
    if missing:
        raise ModelError(f"{where}: the graph refers to nodes it does not have: {', '.join(missing)}")


@dataclass(frozen=True)
class Given:
    """The front-end flags the user gave on the command line (None: not given)."""

    frontend: str | None = None
    sample_rate_hz: int | None = None
    clip_duration_ms: int | None = None
    window_size_ms: int | None = None
    window_stride_ms: int | None = None
    feature_bin_count: int | None = None
    micro_state: str | None = None


def frontend_spec(facts: GraphFacts, given: Given, where: str) -> tuple[FrontendSpec, list[str]]:
    """kwsd's spec for the graph's front end, and notes on anything not stated by the graph itself.

    A flag the user gave must agree with the graph: ModelError naming both when it does not.
    """
    notes: list[str] = []
    kind = facts.preprocess.kind
    if given.frontend is not None and given.frontend != kind.value:
        raise ModelError(
            f"{where}: --frontend {given.frontend} contradicts the graph: its {facts.preprocess_source} "
            f"are train.py's --preprocess={facts.preprocess.value}, kwsd's {kind.value}"
        )
    if facts.sample_rate_hz is not None:
        rate = int(facts.sample_rate_hz.value)
        if given.sample_rate_hz is not None and given.sample_rate_hz != rate:
            raise ModelError(
                f"{where}: --sample-rate {given.sample_rate_hz} contradicts the graph: "
                f"{facts.sample_rate_hz.source} is {rate}"
            )
    elif given.sample_rate_hz is not None:
        rate = given.sample_rate_hz
    else:
        rate = TRAIN_PY_SAMPLE_RATE_HZ
        notes.append(
            f"sample rate {rate} Hz assumed (train.py's default): the graph's {facts.preprocess.value} "
            "front end does not state it; give --sample-rate if the model was trained at another"
        )
    if rate <= 0:
        raise ModelError(f"{where}: sample rate {rate} Hz, expected a positive rate")
    clip_ms = _whole_ms(facts.clip_samples, rate, given.clip_duration_ms, "--clip-duration-ms", where)
    window_ms = _whole_ms(facts.window_samples, rate, given.window_size_ms, "--window-size-ms", where)
    stride_ms = _whole_ms(facts.stride_samples, rate, given.window_stride_ms, "--window-stride-ms", where)
    frontend: dict[str, Any] = {
        "kind": kind.value,
        "sample_rate_hz": rate,
        "clip_duration_ms": clip_ms,
        "window_size_ms": window_ms,
        "window_stride_ms": stride_ms,
    }
    if kind is FrontendKind.MICRO:
        frontend["micro"] = _micro_section(facts, given, notes, where)
    elif kind is FrontendKind.TF_MFCC:
        count = facts.params["dct_coefficient_count"]
        if given.feature_bin_count is not None and given.feature_bin_count != count.value:
            raise ModelError(
                f"{where}: --feature-bin-count {given.feature_bin_count} contradicts the graph: "
                f"{count.source} is {count.value}"
            )
        frontend["tf_mfcc"] = {key: fact.value for key, fact in facts.params.items()}
    else:
        width = facts.params["average_window_bins"]
        bins = 1 + (1 << (int(facts.window_samples.value) - 1).bit_length()) // 2
        fitting = [n for n in range(1, bins + 1) if bins // n == width.value]
        if given.feature_bin_count is not None:
            if given.feature_bin_count not in fitting:
                wanted = bins // given.feature_bin_count if given.feature_bin_count > 0 else 0
                raise ModelError(
                    f"{where}: --feature-bin-count {given.feature_bin_count} contradicts the graph: it gives "
                    f"a pooling width of {wanted} bins, {width.source} is {width.value}"
                )
            count_value = given.feature_bin_count
        elif not fitting:
            raise ModelError(
                f"{where}: {width.source} is {width.value} bins, which no --feature_bin_count gives for "
                f"{bins} spectrogram bins (train.py's width is floor(bins / feature_bin_count))"
            )
        else:
            # Every count in ``fitting`` gives the same width and features; train.py's default if it fits.
            count_value = TRAIN_PY_FEATURE_BIN_COUNT if TRAIN_PY_FEATURE_BIN_COUNT in fitting else fitting[0]
        frontend["tf_average"] = {"feature_bin_count": count_value}
    try:
        spec = FrontendSpec.from_dict(frontend, where="front end")
    except SpecError as err:
        raise ModelError(f"{where}: the graph's front end does not fit kwsd's: {err}") from None
    expected = int(np.prod(facts.fingerprint_shape))
    frames, features = spec.feature_shape
    if frames * features != expected:  # pragma: no cover - the same arithmetic on both sides
        raise ModelError(f"{where}: front end makes {frames}x{features} features, the graph {expected}")
    if facts.fingerprint_size is not None and facts.fingerprint_size != expected:
        raise ModelError(
            f"{where}: the model's Reshape takes {facts.fingerprint_size} values, but the front end "
            f"({spec.describe()}) makes {frames}x{features} = {expected}"
        )
    return spec, notes


def _micro_section(facts: GraphFacts, given: Given, notes: list[str], where: str) -> dict[str, Any]:
    """The micro front end's parameters, every one from the op; the state from --micro-state."""
    channels = facts.params["channel_count"]
    if given.feature_bin_count is not None and given.feature_bin_count != channels.value:
        raise ModelError(
            f"{where}: --feature-bin-count {given.feature_bin_count} contradicts the graph: "
            f"{channels.source} is {channels.value}"
        )
    section: dict[str, Any] = {key: fact.value for key, fact in facts.params.items()}
    section["noise_reduction"] = True  # the op always applies it
    section["state"] = given.micro_state or MicroState.PER_CLIP.value
    scale = facts.input_scale
    if scale is not None and scale.value != INT16_FULL_SCALE:
        notes.append(
            f"the graph feeds the micro front end audio x {scale.value:g} ({scale.source}, freeze.py's); "
            f"train.py trained on x {INT16_FULL_SCALE:g}, and kwsd computes the features as training "
            "did, so its scores can differ slightly from this graph's"
        )
    return section


def _whole_ms(fact: Fact, rate_hz: int, given_ms: int | None, flag: str, where: str) -> int:
    """The whole ms that gives ``fact`` samples by train.py's ``int(rate * ms / 1000)``."""
    samples = int(fact.value)
    if given_ms is not None:
        if rate_hz * given_ms // 1000 != samples:
            raise ModelError(
                f"{where}: {flag} {given_ms} contradicts the graph: {fact.source} is {samples} samples, "
                f"{samples * 1000 / rate_hz:g} ms at {rate_hz} Hz"
            )
        return given_ms
    low = samples * 1000 // rate_hz
    for ms in (low, low + 1):
        if ms > 0 and rate_hz * ms // 1000 == samples:
            return ms
    raise ModelError(
        f"{where}: {fact.source} is {samples} samples, {samples * 1000 / rate_hz:g} ms at {rate_hz} Hz; "
        "expected a whole number of ms (kwsd's front-end spec holds whole ms)"
    )


def model_part(graph_def: Any, facts: GraphFacts, where: str) -> Any:
    """The model alone: the front end's output replaced by a float32 placeholder ``fingerprint``.

    The placeholder has the shape the front-end op gives (``[1, frames, bins]`` for Mfcc,
    ``[1, frames, features, 1]`` for the pooling), so freeze.py's Reshape is kept as it is.
    """
    tf = import_tensorflow()
    from tensorflow.core.framework import graph_pb2

    nodes = {node.name: node for node in graph_def.node}
    keep = _upstream(nodes, OUTPUT_NODE, lambda name: name == facts.fingerprint_node)
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    placeholder = out.node.add()
    placeholder.name = FINGERPRINT_NODE
    placeholder.op = "Placeholder"
    placeholder.attr["dtype"].type = tf.float32.as_datatype_enum
    placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape(list(facts.fingerprint_shape)).as_proto())
    cut = facts.fingerprint_node
    for name in reversed(keep):
        node = out.node.add()
        node.CopyFrom(nodes[name])
        for i, ref in enumerate(node.input):
            if ref in (cut, f"{cut}:0"):
                node.input[i] = FINGERPRINT_NODE
    return out


def output_count(model_def: Any, where: str) -> int | None:
    """labels_softmax's width, from the model part's static shapes (None when not static)."""
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        try:
            tf.compat.v1.import_graph_def(model_def, name="")
        except (ValueError, tf.errors.OpError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"{where}: the model part does not load in TensorFlow ({first})") from None
        shape = graph.get_tensor_by_name(f"{OUTPUT_NODE}:0").shape
    if shape.rank is None or shape[-1] is None:
        return None
    return int(shape[-1])


def representative_features(
    directory: Path, spec: FrontendSpec, where: str
) -> tuple[npt.NDArray[np.float32], list[Path], int]:
    """kwsd's own features of the WAVs under ``directory`` (recursively), for int8 calibration.

    At most ``REPRESENTATIVE_MAX_FILES`` of them, evenly spaced in path order. Returns the
    windows, the files they came from and how many WAVs the folder holds.
    """
    from kwsd.audio import read_wav
    from kwsd.frontend import compute_features

    if not directory.is_dir():
        raise InputNotFoundError(f"--representative-dir {directory}: no such folder")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
    if not paths:
        raise InputNotFoundError(
            f"--representative-dir {directory}: no .wav files in it, expected clips like the training data"
        )
    found = len(paths)
    if found > REPRESENTATIVE_MAX_FILES:
        # Evenly spaced over the sorted list: every folder (label) keeps its share, and the same
        # folder always gives the same model.
        picks = np.linspace(0, len(paths) - 1, REPRESENTATIVE_MAX_FILES).round().astype(int)
        paths = [paths[i] for i in picks]
    windows = [compute_features(spec, read_wav(str(path), spec.sample_rate_hz)) for path in paths]
    return np.stack(windows).astype(np.float32), paths, found


def convert(
    model_def: Any, facts: GraphFacts, representative: npt.NDArray[np.float32] | None, where: str
) -> bytes:
    """The model part as a .tflite: full int8 (input and output) given calibration data, else float32."""
    tf = import_tensorflow()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(model_def, name="")
        inputs = [graph.get_tensor_by_name(f"{FINGERPRINT_NODE}:0")]
        outputs = [graph.get_tensor_by_name(f"{OUTPUT_NODE}:0")]
        with tf.compat.v1.Session(graph=graph) as session, _quiet():
            converter = tf.compat.v1.lite.TFLiteConverter.from_session(session, inputs, outputs)
            if representative is not None:
                shape = facts.fingerprint_shape

                def windows() -> Iterator[list[npt.NDArray[np.float32]]]:
                    for window in representative:
                        yield [window.reshape(shape)]

                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = windows
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
            try:
                tflite = converter.convert()
            except Exception as err:  # the converter raises several classes; its first line says why
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ModelError(
                    f"{where}: TensorFlow's converter refuses the model part ({first})"
                ) from None
    return bytes(tflite)


@dataclass(frozen=True)
class Agreement:
    """How an int8 model's scores compare with the float32 model's on the same windows."""

    windows: int
    top1_agree: int
    max_score_difference: float

    def describe(self) -> str:
        return (
            f"int8 vs float32 on those {self.windows} clips: top label the same on {self.top1_agree}, "
            f"largest score difference {self.max_score_difference:.3f}"
        )


def agreement(
    float_tflite: bytes,
    int8_tflite: bytes,
    spec: FrontendSpec,
    labels: list[str],
    windows: npt.NDArray[np.float32],
) -> Agreement:
    """Both models through kwsd's own classifier on ``windows`` ((n, frames, features) float32)."""
    from kwsd.bundle import make_bundle
    from kwsd.classifier import TfliteClassifier

    classifiers = [
        TfliteClassifier(make_bundle(tflite, labels, spec, name="compare", tool="kwsd model import"))
        for tflite in (float_tflite, int8_tflite)
    ]
    agree = 0
    largest = 0.0
    for window in windows:
        exact, quantised = (classifier.classify(window) for classifier in classifiers)
        agree += int(np.argmax(exact) == np.argmax(quantised))
        largest = max(largest, float(np.max(np.abs(exact - quantised))))
    return Agreement(len(windows), agree, largest)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter's own chatter (MLIR notes on fds 1 and 2, Python warnings) kept to the debug log."""
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                log.debug("converter: %s", line)


def describe_facts(facts: GraphFacts) -> Iterable[str]:
    """One phrase per fact: the op attribute it was read from, and its value."""
    yield f"preprocess {facts.preprocess.value} ({facts.preprocess_source})"
    if facts.sample_rate_hz is not None:
        yield f"{facts.sample_rate_hz.source} {facts.sample_rate_hz.value} Hz"
    for fact in (facts.clip_samples, facts.window_samples, facts.stride_samples):
        yield f"{fact.source} {fact.value} samples"
    for fact in facts.params.values():
        value = str(fact.value).lower() if isinstance(fact.value, bool) else f"{fact.value:g}"
        yield f"{fact.source} {value}"
