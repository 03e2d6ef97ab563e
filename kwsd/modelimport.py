"""``kwsd model import``: a model made by TensorFlow's own tools, as a kwsd bundle.

A ``.tflite`` (micro_speech's, or train.py's converted) says nothing of how its features were
computed, so the request gives the front end (train.py's defaults for what it leaves out); a
frozen graph from freeze.py states its own, read from its ops (:mod:`kwsd.frozengraph`).
Either way the labels are renamed as train.py names them, the model is run once against
the facts, and the bundle records the detection settings to use: the ones given, and for a
micro front end kwsd's settings measured on real speech for the rest.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwsd.bundle import Bundle
from kwsd.detection import DetectionSettings
from kwsd.errors import InputNotFoundError, ModelError, SettingError, read_limited
from kwsd.frozengraph import Given


@dataclass(frozen=True)
class ImportRequest:
    """What ``kwsd model import`` is asked to do (its flags, parsed). ``None``: not given."""

    model: Path
    output: str
    #: The labels, one per output, or a file with one per line (exactly one of the two).
    labels: Sequence[str] | None = None
    labels_file: Path | None = None
    name: str | None = None
    #: The front-end facts given: required (the kind) for a .tflite, checked against the
    #: graph's own for a .pb.
    given: Given = field(default_factory=Given)
    #: MfccParams fields for ``frontend: mfcc`` (name -> value).
    mfcc: Mapping[str, Any] = field(default_factory=dict)
    #: Detection settings to record (the ``kwsd stream`` flags' names; None: not given).
    detection: Mapping[str, Any] = field(default_factory=dict)
    #: WAVs to calibrate a frozen graph's int8 conversion on (None: float32).
    representative_dir: Path | None = None


@dataclass(frozen=True)
class Imported:
    """The bundle written, and what the command says about it, in order."""

    bundle: Bundle
    path: Path
    notes: tuple[str, ...]
    wrote: str  # "wrote PATH: name, labels ..., front end, input, output"
    detection: DetectionSettings
    #: Where the recorded detection settings came from ("" when none are recorded).
    detection_source: str
    read: str = ""  # for a frozen graph: the facts read from it


def import_model(request: ImportRequest) -> Imported:
    """Read the model, check it against the facts given, and write the bundle (the whole of
    ``kwsd model import``). Raises :class:`SettingError` for facts that do not fit, and
    kwsd's input, model and output errors."""
    from kwsd.bundle import MAX_MODEL_BYTES, TFLITE_IDENTIFIER

    path = Path(request.model)
    if os.path.isdir(path):  # os.path's: False, not an error, for a name too long
        raise InputNotFoundError(f"{path}: is a directory, expected a .pb or .tflite file")
    try:
        model_bytes = read_limited(path, MAX_MODEL_BYTES)  # bounded; a FIFO or /dev/zero refused
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such file") from None
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot read ({err.strerror or err})") from None
    start = model_bytes[:8]
    labels, renames = _import_labels(request)
    if path.suffix.lower() == ".pb" and start[4:8] != TFLITE_IDENTIFIER:
        return _import_frozen_graph(request, path, labels, renames)
    if request.representative_dir is not None:
        raise SettingError(
            "--representative-dir: given for a .tflite (it calibrates the conversion of a .pb; "
            "a .tflite is already converted)"
        )
    if request.given.frontend is None:
        raise SettingError(
            "--frontend: required for a .tflite, which does not say how its features were computed "
            "(a frozen graph .pb states its own)"
        )
    tflite = model_bytes
    spec = _import_frontend_spec(request)
    try:
        return _write_imported(request, path, tflite, labels=labels, renames=renames, spec=spec, notes=[])
    except ModelError as err:
        hint = _stride_hint(tflite, spec)
        if hint is None:
            raise
        raise ModelError(f"{err}; {hint}") from None


def _stride_hint(tflite: bytes, spec: Any) -> str | None:
    """For a .tflite whose input size the facts given do not make: the stride that would, if any."""
    import math

    from kwsd.classifier import model_input_shape
    from kwsd.frontend import SpecError

    shape = model_input_shape(tflite)
    if shape is None or len(shape) < 2:
        return None
    values = math.prod(shape[1:])
    frames, features = spec.feature_shape
    if values == frames * features:
        return None  # the input fits: the refusal is about something else
    if values % features:
        return (
            f"{values} input values are no whole number of frames of {features} features: "
            "check --frontend and --feature-bin-count"
        )
    wanted = values // features
    fitting = []
    for stride_ms in range(1, spec.clip_duration_ms + 1):
        try:
            candidate = dataclasses.replace(spec, window_stride_ms=stride_ms)
        except SpecError:
            continue
        if candidate.frame_count == wanted:
            fitting.append(stride_ms)
    if not fitting:
        return (
            f"no --window-stride-ms makes {wanted} frames of a {spec.clip_duration_ms} ms clip with a "
            f"{spec.window_size_ms} ms window: check --clip-duration-ms, --window-size-ms and --sample-rate"
        )
    strides = f"{fitting[0]}" if len(fitting) == 1 else f"{fitting[0]} to {fitting[-1]}"
    return f"--window-stride-ms {strides} would make {wanted} frames of {features} ({values} values)"


#: A labels file is one short line per output (this allows a few thousand outputs).
_MAX_LABELS_FILE_BYTES = 1 << 20


def _import_labels(request: ImportRequest) -> tuple[list[str], list[str]]:
    """The labels given, renamed as train.py names them, and the renames made (to be said)."""
    if request.labels is not None:
        labels = [label.strip() for label in request.labels]
    else:
        assert request.labels_file is not None
        labels_path = Path(request.labels_file)
        try:
            text = read_limited(labels_path, _MAX_LABELS_FILE_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise InputNotFoundError(f"{labels_path}: no such labels file") from None
        except OSError as err:
            raise InputNotFoundError(f"{labels_path}: cannot read ({err.strerror or err})") from None
        except UnicodeDecodeError:
            raise SettingError(
                f"--labels-file {labels_path}: not UTF-8 text, expected one label per line"
            ) from None
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    # micro_speech's C++ names its first two labels silence and unknown; train.py and kwsd's
    # smoother call them _silence_ and _unknown_. Said in the output line, not done silently.
    renamed = [_REFERENCE_LABELS.get(label, label) for label in labels]
    renames = [f"{a} -> {b}" for a, b in zip(labels, renamed, strict=True) if a != b]
    return renamed, renames


def _import_frontend_spec(request: ImportRequest) -> Any:
    """A .tflite's front end, from the flags (train.py's defaults where one is not given)."""
    from kwsd.frontend import (
        FrontendKind,
        FrontendSpec,
        MfccParams,
        MicroParams,
        MicroState,
        SpecError,
        TfAverageParams,
        TfMfccParams,
    )

    given = request.given
    kind = FrontendKind(given.frontend)
    mfcc_fields = dict(request.mfcc)
    if mfcc_fields and kind is not FrontendKind.MFCC:
        raise SettingError(f"--mfcc: given for a {kind.value} front end (it is for --frontend mfcc)")
    if given.feature_bin_count is not None and not kind.truncates_samples:
        raise SettingError(
            f"--feature-bin-count: given for a {kind.value} front end "
            "(it is for --frontend tf_mfcc or tf_average)"
        )
    if given.micro_state is not None and kind is not FrontendKind.MICRO:
        raise SettingError(f"--micro-state: given for a {kind.value} front end (it is for --frontend micro)")
    stride_ms = given.window_stride_ms
    if stride_ms is None:
        stride_ms = TF_DEFAULT_STRIDE_MS if kind.truncates_samples else MICRO_DEFAULT_STRIDE_MS
    bin_count = TF_DEFAULT_FEATURE_BIN_COUNT if given.feature_bin_count is None else given.feature_bin_count
    try:
        frontend_dict: dict[str, Any] = {
            "kind": kind.value,
            "sample_rate_hz": DEFAULT_RATE_HZ if given.sample_rate_hz is None else given.sample_rate_hz,
            "clip_duration_ms": DEFAULT_CLIP_MS if given.clip_duration_ms is None else given.clip_duration_ms,
            "window_size_ms": DEFAULT_WINDOW_MS if given.window_size_ms is None else given.window_size_ms,
            "window_stride_ms": stride_ms,
        }
        if kind is FrontendKind.MFCC:
            base = FrontendSpec(FrontendKind.MFCC, mfcc=MfccParams()).to_dict()["mfcc"]
            unknown = sorted(set(mfcc_fields) - set(base))
            if unknown:
                raise SettingError(f"--mfcc {unknown[0]}: unknown parameter (expected one of {sorted(base)})")
            frontend_dict["mfcc"] = {**base, **mfcc_fields}
        elif kind is FrontendKind.MICRO:
            # Every micro parameter is the op's default (train.py passes no others); the state is chosen.
            micro = MicroParams(state=MicroState(given.micro_state or MicroState.PER_CLIP.value))
            frontend_dict["micro"] = FrontendSpec(FrontendKind.MICRO, micro=micro).to_dict()["micro"]
        elif kind is FrontendKind.TF_MFCC:
            # train.py sets only the coefficient count; the Mfcc op's defaults are recorded.
            frontend_dict["tf_mfcc"] = dataclasses.asdict(TfMfccParams(dct_coefficient_count=bin_count))
        else:
            frontend_dict["tf_average"] = dataclasses.asdict(TfAverageParams(feature_bin_count=bin_count))
        return FrontendSpec.from_dict(frontend_dict, where="front end")
    except SpecError as err:
        raise SettingError(str(err)) from None


def _import_frozen_graph(
    request: ImportRequest, path: Path, labels: list[str], renames: list[str]
) -> Imported:
    """freeze.py's .pb: front end read from its ops, model part converted with TensorFlow."""
    from kwsd import frozengraph

    if request.mfcc:
        raise SettingError("--mfcc: given for a frozen graph (its front end is read from its ops)")
    where = str(path)
    graph_def = frozengraph.read_graph(path)
    facts = frozengraph.read_graph_facts(graph_def, where)
    given = request.given
    if given.micro_state is not None and facts.preprocess is not frozengraph.Preprocess.MICRO:
        raise SettingError(
            f"--micro-state: given for a graph whose front end is {facts.preprocess.value} (it is for micro)"
        )
    spec, notes = frozengraph.frontend_spec(facts, given, where)
    model_def = frozengraph.model_part(graph_def, facts, where)
    count = frozengraph.output_count(model_def, where)
    if count is not None and count != len(labels):
        source = f"--labels-file {request.labels_file}" if request.labels_file else "--labels"
        raise ModelError(
            f"{where}: {frozengraph.OUTPUT_NODE} gives {count} scores, but {source} has "
            f"{len(labels)} labels ({', '.join(labels)}); expected one label per score"
        )
    read = f"read from {path.name}: {', '.join(frozengraph.describe_facts(facts))}"
    tflite = frozengraph.convert(model_def, facts, None, where)
    metrics: dict[str, Any] = {"quantization": "float32"}
    if request.representative_dir is None:
        notes.append("converted to float32: no --representative-dir given (int8 needs audio to calibrate on)")
    else:
        windows, files, found = frozengraph.representative_features(
            Path(request.representative_dir), spec, "--representative-dir"
        )
        float_tflite, tflite = tflite, frozengraph.convert(model_def, facts, windows, where)
        spread = f" (of {found}, evenly spaced)" if found > len(files) else ""
        notes.append(
            f"converted to int8, calibrated on kwsd's features of {len(files)} WAVs "
            f"in {request.representative_dir}{spread}"
        )
        # Said, not hidden: how much the 8 bits cost on the user's own audio; kept in the bundle too.
        agreement = frozengraph.agreement(float_tflite, tflite, spec, labels, windows)
        notes.append(agreement.describe())
        metrics = {
            "quantization": "int8",
            "calibration_clips": len(files),
            "int8_vs_float32_top1_same": agreement.top1_agree,
            "int8_vs_float32_max_score_difference": round(agreement.max_score_difference, 5),
        }
    imported = _write_imported(
        request, path, tflite, labels=labels, renames=renames, spec=spec, notes=notes, metrics=metrics
    )
    return dataclasses.replace(imported, read=read)


def _write_imported(
    request: ImportRequest,
    path: Path,
    tflite: bytes,
    *,
    labels: list[str],
    renames: list[str],
    spec: Any,
    notes: list[str],
    metrics: dict[str, Any] | None = None,
) -> Imported:
    from kwsd.bundle import make_bundle, write_bundle
    from kwsd.classifier import TfliteClassifier
    from kwsd.detection import DetectionError, check_detection, resolve_detection

    try:
        given = check_detection({k: v for k, v in request.detection.items() if v is not None})
        detection, source = _import_detection(spec, given)
        settings = resolve_detection(detection, {}, window_stride_ms=spec.window_stride_ms)
    except DetectionError as err:
        raise SettingError(str(err)) from None
    bundle = make_bundle(
        tflite,
        labels,
        spec,
        name=request.name or path.stem,
        tool="kwsd model import",
        dataset={"imported_from": path.name},
        metrics=metrics,
        detection=detection,
    )
    bundle = dataclasses.replace(bundle, source=str(path))
    classifier = TfliteClassifier(bundle)  # refuses a model that disagrees with the facts
    out = write_bundle(bundle, request.output)
    wrote = (
        f"wrote {out}: {bundle.name}, labels {', '.join(labels)}, {spec.describe()}, "
        f"input {classifier.input_description}, output {classifier.output_description}"
        + (f" (labels renamed as train.py names them: {', '.join(renames)})" if renames else "")
    )
    return Imported(
        bundle=bundle,
        path=Path(out),
        notes=tuple(notes),
        wrote=wrote,
        detection=settings,
        detection_source=source,
    )


def _import_detection(spec: Any, given: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The detection settings an import records, and where they came from ("" when none are).

    A micro front end gets kwsd's measured settings for imported micro models wherever a flag
    does not give one; other front ends record only the flags given (kwsd then uses
    TensorFlow's defaults for the rest, as for any bundle).
    """
    from kwsd.detection import MICRO_IMPORT_DETECTION
    from kwsd.frontend import FrontendKind

    if spec.kind is not FrontendKind.MICRO:
        return given, ("from the flags given" if given else "")
    defaults = dict(MICRO_IMPORT_DETECTION)
    if defaults["clip_stride_ms"] % spec.window_stride_ms:
        # Measured at micro_speech's 20 ms; a front end that cannot step 20 ms runs every frame.
        defaults["clip_stride_ms"] = spec.window_stride_ms
    measured = "kwsd's settings measured for imported micro models, see the README's import section"
    if not given:
        return defaults, measured
    if set(defaults) <= set(given):
        return given, "from the flags given"
    flags = ", ".join(f"--{key.replace('_', '-')}" for key in given)
    return {**defaults, **given}, f"{flags} as given, the rest {measured}"


#: ``model import``'s default stride: micro_speech's 20 ms, or train.py's 10 ms for its front ends.
MICRO_DEFAULT_STRIDE_MS = 20
TF_DEFAULT_STRIDE_MS = 10
#: train.py's --feature_bin_count default.
TF_DEFAULT_FEATURE_BIN_COUNT = 40
#: ``model import``'s defaults for a .tflite: train.py's --sample_rate, --clip_duration_ms, --window_size_ms.
DEFAULT_RATE_HZ = 16000
DEFAULT_CLIP_MS = 1000
DEFAULT_WINDOW_MS = 30

#: micro_speech's C++ label names -> the names train.py writes and the smoother knows.
_REFERENCE_LABELS = {"silence": "_silence_", "unknown": "_unknown_"}
