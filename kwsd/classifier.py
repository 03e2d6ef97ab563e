"""TFLite classifier: feature matrix in, one probability per label out.

Uses ai-edge-litert's interpreter, or tflite-runtime's where only that is installed.
Quantised int8/uint8 input and output are handled from the model's own scale and zero
point, never hard-coded. Loading checks that the model agrees with the bundle's front
end and labels, and names both sides when it does not.
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import sys
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from kwsd.bundle import Bundle
from kwsd.errors import ModelError, RuntimeDependencyError
from kwsd.frontend import FrontendKind

log = logging.getLogger(__name__)

ScoreArray = npt.NDArray[np.float32]

_SUPPORTED_DTYPES = (np.float32, np.int8, np.uint8)


class Classifier(Protocol):
    """Maps one (frame_count, feature_count) float32 window to scores, one per label."""

    def classify(self, features: npt.NDArray[np.float32]) -> ScoreArray: ...


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeDependencyError(
                "no TFLite interpreter installed: expected the ai-edge-litert package (or tflite-runtime)"
            ) from None
        if int(np.__version__.split(".")[0]) >= 2:
            # tflite-runtime (last release 2.14) imports under numpy 2 but fails in Interpreter().
            raise RuntimeDependencyError(
                f"tflite-runtime needs numpy < 2, but numpy {np.__version__} is installed: "
                "install ai-edge-litert (preferred) or numpy<2"
            ) from None
    return Interpreter


class Kernels(enum.Enum):
    """Which kernels run the model's operators.

    ``xnnpack``: the interpreter's default, XNNPACK's delegate where it takes an operator
    (fastest for most models: the demo's int8 DS-CNN runs in half the time of the builtin
    kernels). ``builtin``: TFLite's own kernels only, which give the scores of TFLite's
    reference kernels, whose integer arithmetic TFLite Micro's kernels share (all equal on
    300 random inputs to the int8 tiny_conv of micro_speech, where XNNPACK's differ by up
    to 6 quantisation steps), and which run that model in half XNNPACK's time.
    """

    XNNPACK = "xnnpack"
    BUILTIN = "builtin"


def default_kernels(bundle: Bundle) -> Kernels:
    """``builtin`` for a model with the micro front end (made for TFLite Micro, whose
    integer arithmetic the builtin kernels share), ``xnnpack`` for the rest."""
    if bundle.frontend.kind is FrontendKind.MICRO:
        return Kernels.BUILTIN
    return Kernels.XNNPACK


def interpreter_options(kernels: str) -> tuple[Any, dict[str, Any]]:
    """The interpreter class and its keyword options for ``kernels`` (a :class:`Kernels` value)."""
    interpreter_cls = _interpreter_class()
    options: dict[str, Any] = {}
    if Kernels(kernels) is Kernels.BUILTIN:
        resolvers = sys.modules[interpreter_cls.__module__].OpResolverType
        options["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return interpreter_cls, options


@functools.cache
def _runtime_version() -> str:
    """``ai_edge_litert-2.3.0``: which runtime (and which release of it) ran a probe."""
    from importlib import metadata

    module: str = _interpreter_class().__module__.split(".")[0]
    try:
        return f"{module}-{metadata.version(module.replace('_', '-'))}"
    except metadata.PackageNotFoundError:
        return module


def interpreter_name() -> str:
    module = _interpreter_class().__module__.split(".")[0]
    return str(module)


def model_input_shape(tflite: bytes) -> tuple[int, ...] | None:
    """The first input's shape of a .tflite, or None when the interpreter cannot load it."""
    with _NativeStderr():
        try:
            interpreter = _interpreter_class()(model_content=tflite)
            inputs = interpreter.get_input_details()
        except (ValueError, RuntimeError, RuntimeDependencyError):
            return None
    return tuple(int(d) for d in inputs[0]["shape"]) if inputs else None


class TfliteClassifier:
    """One interpreter, one thread. Builds and checks the model at construction."""

    def __init__(self, bundle: Bundle, num_threads: int = 1, kernels: Kernels | None = None) -> None:
        """``kernels``: None for :func:`default_kernels`."""
        from kwsd.modelcheck import check_in_child

        self.bundle = bundle
        self.kernels = default_kernels(bundle) if kernels is None else kernels
        where = bundle.source
        interpreter_cls, options = interpreter_options(self.kernels.value)
        # A model that aborts the runtime would take this process with it: first in a child.
        check_in_child(
            bundle.tflite, where, sha256=bundle.sha256, runtime=_runtime_version(), kernels=self.kernels.value
        )
        with _NativeStderr() as native:
            try:
                self._interpreter = interpreter_cls(
                    model_content=bundle.tflite, num_threads=num_threads, **options
                )
                self._interpreter.allocate_tensors()
                error = None
            except (ValueError, RuntimeError) as err:
                error = err
        if error is not None:
            lines = [line for line in (str(error).strip().splitlines() + native.lines) if line.strip()]
            reason = lines[0].strip() if lines else type(error).__name__
            raise ModelError(f"{where}: the TFLite interpreter rejects the model ({reason})")
        for line in native.lines:
            log.debug("interpreter: %s", line)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"{where}: expected a model with 1 input and 1 output tensor, "
                f"got {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self._check_input(where)
        self._check_output(where)
        self._input_view = self._interpreter.tensor(self._input["index"])
        self._input_shape = tuple(int(d) for d in self._input["shape"])
        self._in_scale, self._in_zero = self._quantisation(self._input)
        self._out_scale, self._out_zero = self._quantisation(self._output)
        info = np.iinfo(self._input["dtype"]) if self._input["dtype"] != np.float32 else None
        # Scale, zero point and range as float32 scalars: numpy computes a Python scalar against
        # a float32 array in float32 anyway (NEP 50), but converts it on every call, which costs
        # more than the arithmetic on one window.
        self._in_scale32, self._in_zero32 = np.float32(self._in_scale), np.float32(self._in_zero)
        self._in_range32 = (np.float32(info.min), np.float32(info.max)) if info is not None else None
        self._out_scale32, self._out_zero32 = np.float32(self._out_scale), np.float32(self._out_zero)
        self._scratch = np.empty(bundle.frontend.feature_shape, np.float32)
        self._output_index = self._output["index"]
        # One run now: a model that loads but cannot run (an input with no data, a kernel that
        # fails) is refused here, not at the first window of a stream.
        try:
            self.classify(np.zeros(bundle.frontend.feature_shape, np.float32))
        except (ValueError, RuntimeError) as err:
            reason = " ".join(str(err).split()[:40]) or type(err).__name__
            raise ModelError(f"{where}: the TFLite interpreter cannot run the model ({reason})") from None

    # Checks -------------------------------------------------------------------------

    def _check_input(self, where: str) -> None:
        spec = self.bundle.frontend
        shape = [int(d) for d in self._input["shape"]]
        dtype = np.dtype(self._input["dtype"])
        frames, features = spec.feature_shape
        accepted = ([1, frames, features], [1, frames * features], [1, frames, features, 1])
        if shape not in accepted:
            raise ModelError(
                f"{where}: model.tflite expects input {_shape(shape)} {dtype.name} but the bundle's "
                f"front end ({spec.describe()}) makes [{frames},{features}] "
                f"(accepted model inputs: {', '.join(_shape(a) for a in accepted)})"
            )
        if dtype not in _SUPPORTED_DTYPES:
            raise ModelError(f"{where}: model input is {dtype.name}; kwsd feeds float32, int8 or uint8")
        if dtype != np.float32:
            scale, _ = self._quantisation(self._input)
            if not scale > 0:
                raise ModelError(f"{where}: model input is {dtype.name} but has no quantisation scale")

    def _check_output(self, where: str) -> None:
        shape = [int(d) for d in self._output["shape"]]
        size = int(np.prod(shape))
        labels = self.bundle.labels
        if size != len(labels) or (len(shape) > 1 and shape[0] != 1):
            raise ModelError(
                f"{where}: model output {_shape(shape)} has {size} scores but the bundle has "
                f"{len(labels)} labels ({', '.join(labels)})"
            )
        dtype = np.dtype(self._output["dtype"])
        if dtype not in _SUPPORTED_DTYPES:
            raise ModelError(f"{where}: model output is {dtype.name}; kwsd reads float32, int8 or uint8")
        if dtype != np.float32:
            scale, _ = self._quantisation(self._output)
            if not scale > 0:
                raise ModelError(f"{where}: model output is {dtype.name} but has no quantisation scale")

    @staticmethod
    def _quantisation(detail: dict[str, Any]) -> tuple[float, int]:
        params = detail.get("quantization_parameters") or {}
        scales = params.get("scales")
        zeros = params.get("zero_points")
        if scales is not None and len(scales) >= 1:
            return float(scales[0]), int(zeros[0]) if zeros is not None and len(zeros) else 0
        scale, zero = detail.get("quantization", (0.0, 0))
        return float(scale), int(zero)

    # Description --------------------------------------------------------------------

    @property
    def input_description(self) -> str:
        return _describe(self._input, self._in_scale, self._in_zero)

    @property
    def output_description(self) -> str:
        return _describe(self._output, self._out_scale, self._out_zero)

    # Inference ----------------------------------------------------------------------

    def invoke(self) -> None:
        """Run the model once on the input it already holds, and nothing else: the least a
        window costs, whatever the front end does (tools/benchmark.py measures it)."""
        self._interpreter.invoke()

    def classify(self, features: npt.NDArray[np.float32]) -> ScoreArray:
        """Scores for one window, as float32 probabilities in label order (a new array).

        Called ~50 times per second: in-place arithmetic on a preallocated buffer keeps
        the Python around the ~10 us interpreter call as small as the interpreter itself.
        """
        if self._in_range32 is None:
            scaled = features
        else:
            # TFLite's rule: q = round(x / scale) + zero_point, saturated to the dtype.
            scaled = self._scratch
            np.divide(features, self._in_scale32, out=scaled)
            np.rint(scaled, out=scaled)
            scaled += self._in_zero32
            np.maximum(scaled, self._in_range32[0], out=scaled)  # np.clip costs 3x these two
            np.minimum(scaled, self._in_range32[1], out=scaled)
        target = self._input_view()
        target[...] = scaled.reshape(self._input_shape)
        del target  # the interpreter refuses to run while a view into its buffers is alive
        self._interpreter.invoke()
        raw: npt.NDArray[Any] = self._interpreter.get_tensor(self._output_index).reshape(-1)
        if raw.dtype == np.float32:
            return raw
        scores = raw.astype(np.float32)
        scores -= self._out_zero32
        scores *= self._out_scale32
        return scores


class _NativeStderr:
    """Capture what the interpreter's C++ code writes to file descriptor 2 while loading.

    LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate" on every load and its
    real reasons for refusing a model only there. Capturing both keeps stderr to kwsd's own
    one-line messages and lets a refusal quote the interpreter's reason. Used at start-up
    only, from one thread.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __enter__(self) -> _NativeStderr:
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.lines = self._file.read().decode(errors="replace").splitlines()
        self._file.close()


def _shape(shape: list[int] | tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _describe(detail: dict[str, Any], scale: float, zero: int) -> str:
    dtype = np.dtype(detail["dtype"]).name
    shape = _shape([int(d) for d in detail["shape"]])
    if dtype == "float32":
        return f"{dtype} {shape}"
    return f"{dtype} {shape} (scale {scale:.6g}, zero point {zero})"
