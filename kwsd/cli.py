"""The ``kwsd`` command line. ``main(argv) -> int``; the only place errors become exit codes."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from kwsd import __version__
from kwsd.config import ConfigError
from kwsd.errors import (
    AudioFormatError,
    EvaluationError,
    InputNotFoundError,
    ModelError,
    OutputError,
    RuntimeDependencyError,
    SettingError,
    StreamError,
)
from kwsd.sources import AudioDeviceError

log = logging.getLogger(__name__)

# Exit codes: one per kind of problem, documented in the README.
EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own: a malformed command line
EXIT_BAD_SETTING = 64  # a setting with a value outside what it accepts
EXIT_BAD_AUDIO = 65  # audio that is not valid or not convertible
EXIT_NO_INPUT = 66  # an input file that does not exist or cannot be read
EXIT_BAD_MODEL = 67  # a model bundle or .tflite that cannot be used
EXIT_MISSING_DEPENDENCY = 69  # a runtime library missing or unusable here
EXIT_INTERNAL = 70  # a bug in kwsd: reported with a traceback
EXIT_CANT_WRITE = 73  # an output file that cannot be written
EXIT_STREAM_BROKEN = 74  # an audio stream that broke off mid-sample
EXIT_NO_DEVICE = 75  # the capture device is missing or unusable at start (EX_TEMPFAIL: it may appear)
EXIT_CONFIG = 78  # config.yaml has problems (systemd: RestartPreventExitStatus=78)
EXIT_INTERRUPTED = 130

#: A file is read in blocks of this much audio; stdin in blocks of one clip stride (low latency).
FILE_BLOCK_MS = 250


def main(argv: Sequence[str] | None = None) -> int:
    _names_print_as_given()
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="kwsd: %(levelname)s: %(message)s",
        stream=_log_stream(),
    )
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result: int = args.handler(args)
        return result
    except InputNotFoundError as err:
        return _fail(err, EXIT_NO_INPUT)
    except AudioFormatError as err:
        return _fail(err, EXIT_BAD_AUDIO)
    except ModelError as err:
        return _fail(err, EXIT_BAD_MODEL)
    except StreamError as err:
        return _fail(err, EXIT_STREAM_BROKEN)
    except RuntimeDependencyError as err:
        return _fail(err, EXIT_MISSING_DEPENDENCY)
    except OutputError as err:
        return _fail(err, EXIT_CANT_WRITE)
    except ConfigError as err:
        return _fail(err, EXIT_CONFIG)
    except EvaluationError as err:
        return _fail(err, EXIT_BAD_AUDIO)  # a ground-truth file that does not fit (input data)

    except AudioDeviceError as err:
        return _fail(err, EXIT_NO_DEVICE)
    except _SettingError as err:
        return _fail(err, EXIT_BAD_SETTING)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed by the reader (`kwsd stream x.wav | head -1`): not an error of ours.
        _silence_stdout()
        return EXIT_OK
    except Exception:
        # Not a user error: a bug. The traceback is what a bug report needs.
        log.exception("internal error (please report it with the lines below)")
        return EXIT_INTERNAL


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


#: The command line's own name for it (exit 64).
_SettingError = SettingError


def _names_print_as_given() -> None:
    """A file name that is not UTF-8 (``bad\\xff.wav``) prints as the bytes it is, as ``ls``
    prints it, instead of failing in print() under a strict UTF-8 stdout or stderr."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="surrogateescape")


def _fail(err: Exception, code: int) -> int:
    # One line per problem (a config file can have several), each saying it is an error.
    for line in str(err).splitlines() or [type(err).__name__]:
        print(f"kwsd: error: {line}", file=sys.stderr)
    return code


def _log_stream() -> TextIO:
    """Where log lines go: stderr, through a descriptor of their own.

    PortAudio's initialisation (sounddevice's, at import and at every device rescan) points
    descriptor 2 at /dev/null for a moment, and so does kwsd's capture of the TFLite runtime's
    messages at a model load: a line another thread logged then (paho's, a reload's) was lost.
    """
    try:
        if sys.stderr.fileno() != 2:
            return sys.stderr
        return open(os.dup(2), "w", encoding=sys.stderr.encoding, errors=sys.stderr.errors, buffering=1)
    except (AttributeError, OSError, ValueError):  # replaced by a test harness, or closed
        return sys.stderr


def _silence_stdout() -> None:
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


# --------------------------------------------------------------------------------------
# Argument parsing


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kwsd",
        description="Keyword spotting with TFLite models: on audio files, stdin, or a microphone "
        "(kwsd run), with events on stdout or over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"kwsd {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output on stderr (-vv for debug)"
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    stream = sub.add_parser(
        "stream",
        help="run the whole detection pipeline over a WAV or stdin; one JSON line per detection",
        description="Run ring buffer -> front end -> classifier -> smoother over audio and print "
        'one JSON line per detection: {"label", "score", "audio_time_ms"}, where audio_time_ms is the '
        "audio time at the end of the window that fired (and model, the bundle's name, when -m "
        "is given more than once). Audio at another sample rate is resampled; stereo is mixed down.",
    )
    stream.add_argument(
        "audio",
        nargs="?",
        metavar="FILE|-",
        help="a WAV file, or - for stdin (raw signed 16-bit little-endian PCM, "
        "or a WAV stream as arecord writes it)",
    )
    stream.add_argument(
        "--demo", action="store_true", help="use the built-in demo model and its demo WAV (no file needed)"
    )
    stream.add_argument(
        "-m",
        "--model",
        action="append",
        metavar="BUNDLE",
        help="a .kwsd model bundle (default: the built-in demo model); repeat it to run several on "
        "the same audio, each keyword in one only (models with equal front ends share one)",
    )
    stream.add_argument(
        "--raw-rate", type=int, metavar="HZ", help="sample rate of raw PCM on stdin (default: the model's)"
    )
    stream.add_argument(
        "--raw-channels",
        type=int,
        default=1,
        metavar="N",
        help="interleaved channels of raw PCM on stdin (default: 1)",
    )
    _add_detection_arguments(
        stream, "detection settings (default: the bundle's recommended values, else TensorFlow's)"
    )
    stream.add_argument(
        "--gate",
        action="store_true",
        help="the audio gate on, with config.yaml's default audio.gate settings: windows with nothing "
        "louder than the noise floor skip the model (needs a model with a _silence_ label)",
    )
    stream.add_argument(
        "--stats", action="store_true", help="print a summary (audio time, windows, CPU) on stderr at the end"
    )
    _add_scores_argument(stream)
    stream.set_defaults(handler=_cmd_stream)

    label = sub.add_parser(
        "label-wav",
        help="the top labels of each WAV's first clip, as TensorFlow's label_wav prints them",
    )
    label.add_argument("files", nargs="+", metavar="FILE")
    _add_model_argument(label)
    label.add_argument(
        "--how-many-labels",
        "--how_many_labels",
        type=int,
        default=3,
        metavar="N",
        help="labels to print per file (default: 3)",
    )
    label.add_argument("--json", action="store_true", help="one JSON object per file")
    label.set_defaults(handler=_cmd_label_wav)

    run = sub.add_parser(
        "run",
        help="listen on a microphone and report detections (the daemon)",
        description="Listen on a capture device and report each detection as a JSON event, over MQTT "
        "when mqtt.host is set, else on stdout. With no config file: the built-in demo model, the "
        "system's default input device, events on stdout.",
    )
    run.add_argument("-c", "--config", metavar="FILE", help="a config.yaml (default: built-in defaults)")
    _add_scores_argument(run)
    run.set_defaults(handler=_cmd_run)

    wyoming = sub.add_parser(
        "wyoming",
        help="a Wyoming wake-word server for Home Assistant's Assist (needs kwsd[wyoming])",
        description="Serve the models as a Wyoming wake-word service: Home Assistant (or any Wyoming "
        "client) streams audio to it and gets a detection event per keyword heard. The models, "
        "detection settings and audio gate come as for `kwsd run`: the config's models or model "
        "(or each -m) and its detection section over each bundle's recommended values, and "
        "audio.gate. Announced over zeroconf (_wyoming._tcp.local.) on a tcp uri when the "
        "zeroconf package is installed.",
    )
    wyoming.add_argument("-c", "--config", metavar="FILE", help="a config.yaml (default: built-in defaults)")
    wyoming.add_argument(
        "-m",
        "--model",
        action="append",
        metavar="BUNDLE",
        help="a .kwsd model bundle; repeat it to serve several, each keyword in one only "
        "(default: the config's models or model)",
    )
    wyoming.add_argument(
        "--uri",
        default="tcp://0.0.0.0:10400",
        help="where to listen: tcp://HOST:PORT, unix://PATH or stdio:// (default: tcp://0.0.0.0:10400)",
    )
    wyoming.add_argument(
        "--no-zeroconf", action="store_true", help="do not announce the server over zeroconf (mDNS)"
    )
    wyoming.set_defaults(handler=_cmd_wyoming)

    check = sub.add_parser(
        "check-config",
        help="make every check `kwsd run` makes before it opens the device, and exit",
        description="Check a config.yaml as `kwsd run` does before it opens the device: every key, "
        "the model it names (loaded), the detection settings against that model, the TLS files and "
        "the spool folder. Exit 0 if `kwsd run` would start; else the same message and exit code "
        "as `kwsd run` (78 config, 66 model file missing, 67 model unusable).",
    )
    check.add_argument("config", metavar="FILE")
    check.set_defaults(handler=_cmd_check_config)

    devices = sub.add_parser("devices", help="list capture devices and the sample rates they support")
    devices.set_defaults(handler=_cmd_devices)

    _add_record_parser(sub)
    _add_review_parser(sub)
    _add_evaluate_parsers(sub)

    model = sub.add_parser("model", help="inspect or create model bundles")
    model_sub = model.add_subparsers(title="model commands", metavar="COMMAND")
    model.set_defaults(handler=lambda _args: _usage(model))
    info = model_sub.add_parser("info", help="describe a bundle and check that it loads")
    info.add_argument("bundle", metavar="BUNDLE")
    info.add_argument("--json", action="store_true", help="the manifest as JSON")
    info.set_defaults(handler=_cmd_model_info)

    imp = model_sub.add_parser(
        "import",
        help="make a bundle from a frozen graph (freeze.py's .pb) or a foreign .tflite",
        description="Make a kwsd bundle from what TensorFlow's speech_commands tools write. A frozen "
        "graph (.pb, from freeze.py) states its own front end: every number is read from its ops, the "
        "model part is converted to .tflite (needs TensorFlow, the train extra), int8 when "
        "--representative-dir gives audio to calibrate on, else float32; a front-end flag given here "
        "must agree with the graph. A .tflite carries no front end: give it with --frontend and the "
        "flags below. The model is loaded and checked before anything is written. Examples: "
        "kwsd model import conv.pb --labels-file conv_labels.txt --representative-dir clips/ -o conv.kwsd; "
        "kwsd model import micro_speech.tflite --labels silence,unknown,yes,no --frontend micro "
        "--window-stride-ms 20 -o micro.kwsd",
    )
    imp.add_argument("tflite", metavar="MODEL", help="a frozen graph (.pb) or a .tflite")
    imp.add_argument("-o", "--output", required=True, metavar="OUT.kwsd")
    labels = imp.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", metavar="A,B,...", help="labels in output order")
    labels.add_argument(
        "--labels-file", metavar="FILE", help="labels in output order, one per line (train.py's *_labels.txt)"
    )
    imp.add_argument(
        "--frontend",
        choices=["tf_mfcc", "tf_average", "micro", "mfcc"],
        help="required for a .tflite (a .pb states its own). "
        "micro: the TFLite Micro front end (train.py --preprocess=micro, micro_speech); "
        "tf_mfcc / tf_average: TensorFlow's train.py --preprocess=mfcc (its default) / average, "
        "computed exactly as its Spectrogram and Mfcc ops do; "
        "mfcc: python_speech_features MFCC as kwsd's own training tool computes it",
    )
    imp.add_argument(
        "--micro-state",
        choices=["per_clip", "continuous"],
        help="micro only: per_clip (default) computes each window's features with a front end "
        "started afresh at the window's first sample, as train.py trains on; continuous runs one "
        "front end over the whole stream, as the micro_speech firmware does",
    )
    imp.add_argument("--sample-rate", type=int, metavar="HZ", help="default 16000")
    imp.add_argument("--clip-duration-ms", type=int, metavar="MS", help="default 1000")
    imp.add_argument("--window-size-ms", type=int, metavar="MS", help="default 30")
    imp.add_argument(
        "--window-stride-ms",
        type=int,
        metavar="MS",
        help="default: 10 for tf_mfcc and tf_average (train.py's default), 20 for micro and mfcc",
    )
    imp.add_argument(
        "--feature-bin-count",
        type=int,
        metavar="N",
        help="tf_mfcc and tf_average only: train.py's --feature_bin_count (default 40). tf_mfcc: "
        "MFCC coefficients; tf_average: pooling width floor(spectrogram bins / N), which gives "
        "ceil(bins / width) features (43 at 16 kHz, 30 ms, 40)",
    )
    imp.add_argument(
        "--representative-dir",
        metavar="DIR",
        help=".pb only: WAVs (searched recursively; at most 500, evenly spaced) whose features, "
        "computed by kwsd's front end, calibrate a full-int8 model; without it the model is "
        "converted to float32",
    )
    imp.add_argument(
        "--mfcc",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="mfcc only: an MFCC parameter (filter_count, cepstrum_count, fft_size, "
        "low_freq_hz, high_freq_hz, preemphasis, lifter, append_energy, "
        "window_function); the rest take kwsd's defaults and are recorded",
    )
    imp.add_argument("--name", help="bundle name (default: the file's stem)")
    _add_detection_arguments(
        imp,
        "recommended detection settings to record in the bundle (kwsd stream uses them by default); "
        "a micro model gets kwsd's measured settings for micro models where none is given",
    )
    imp.set_defaults(handler=_cmd_model_import)
    return parser


def _add_detection_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    from kwsd.smoother import FiringRule

    tuning = parser.add_argument_group(title)
    tuning.add_argument(
        "--clip-stride-ms",
        type=int,
        metavar="MS",
        help="run the model every MS of audio (a multiple of the window stride)",
    )
    tuning.add_argument(
        "--average-window-ms", type=int, metavar="MS", help="average scores over this much audio"
    )
    tuning.add_argument(
        "--threshold", type=float, metavar="P", help="fire when the averaged score is above P (0..1)"
    )
    tuning.add_argument(
        "--label-threshold",
        action="append",
        default=[],
        metavar="LABEL=P",
        help="a threshold for one label (repeatable)",
    )
    tuning.add_argument(
        "--suppression-ms", type=int, metavar="MS", help="after a detection, wait this long before another"
    )
    tuning.add_argument(
        "--minimum-count", type=int, metavar="N", help="windows needed in the average before deciding"
    )
    tuning.add_argument(
        "--rule",
        choices=[rule.value for rule in FiringRule],
        help="tf: a held word fires once; micro: it re-fires after suppression",
    )


def _add_scores_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scores",
        action="store_true",
        help="also print each window's smoothed score per label on stdout, to set thresholds by: a "
        "meter redrawn in place on a terminal, else one JSON line per window "
        '({"audio_time_ms", "scores": {LABEL: P}})',
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", metavar="BUNDLE", help="a .kwsd model bundle (default: the built-in demo model)"
    )


# --------------------------------------------------------------------------------------
# Commands


def _load(model_path: str | None) -> tuple[Any, Any]:
    from kwsd.bundle import demo_bundle_path, read_bundle
    from kwsd.classifier import TfliteClassifier

    bundle = read_bundle(model_path or demo_bundle_path())
    return bundle, TfliteClassifier(bundle)


def _cmd_stream(args: argparse.Namespace) -> int:
    from kwsd.audio import open_audio
    from kwsd.bundle import demo_wav_path
    from kwsd.gate import GateSettings
    from kwsd.pipeline import MultiPipeline, PipelineError
    from kwsd.smoother import SmootherError

    started = time.perf_counter()
    if args.demo and args.audio:
        raise _SettingError("give either --demo or an audio file, not both")
    if not args.demo and not args.audio:
        raise _SettingError("no audio given: name a WAV file, - for stdin, or --demo")
    source = str(demo_wav_path()) if args.demo else args.audio
    if args.raw_channels < 1:
        raise _SettingError(f"--raw-channels: expected at least 1, got {args.raw_channels}")
    if args.raw_rate is not None and args.raw_rate <= 0:
        raise _SettingError(f"--raw-rate: expected a positive rate in Hz, got {args.raw_rate}")
    # Check everything that can be checked before any audio is read.
    models = _stream_models(args)
    try:
        gate = GateSettings(enabled=True) if args.gate else None
        pipeline = MultiPipeline(models, profile=args.stats, gate=gate)
    except (SmootherError, PipelineError) as err:
        raise _SettingError(str(err)) from None
    rate_hz = pipeline.sample_rate_hz
    reader = open_audio(source, rate_hz, raw_rate_hz=args.raw_rate, raw_channels=args.raw_channels)
    if len(models) == 1:
        log.info("model %s (%s); audio %s", models[0].name, models[0].spec.describe(), reader.info.describe())
    else:
        described = ", ".join(f"{m.name} ({m.spec.describe()})" for m in models)
        log.info("%s: %s; audio %s", pipeline.sharing(), described, reader.info.describe())
    display = _StreamScores(pipeline) if args.scores else None
    first_window_s: float | None = None
    detections = 0
    # Blocks of one clip stride keep live latency low (and put each score line in order with
    # the detections); a file is otherwise read in bigger blocks.
    block = (
        rate_hz * FILE_BLOCK_MS // 1000
        if source != "-" and display is None
        else rate_hz * min(m.settings.clip_stride_ms for m in models) // 1000
    )
    with reader:
        for samples in reader.blocks(block):
            for detection in pipeline.feed(samples):
                line = json.dumps(detection.to_dict())
                if display is not None:
                    display.line(line, detection.audio_time_ms)
                else:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                detections += 1
            if display is not None:
                display.release()
            if first_window_s is None and pipeline.stats.windows:
                first_window_s = time.perf_counter() - started
    if display is not None:
        display.close()
    if not pipeline.stats.windows:
        clip_ms = min(m.spec.clip_duration_ms for m in models)
        heard_ms = pipeline.samples_seen * 1000 // rate_hz
        raise AudioFormatError(
            f"{'stdin' if source == '-' else source}: {heard_ms} ms of audio, shorter than one clip "
            f"({clip_ms} ms): nothing to classify"
        )
    if args.stats:
        _print_stats(pipeline, detections, first_window_s)
    return EXIT_OK


def _stream_models(args: argparse.Namespace) -> list[Any]:
    """``kwsd stream``'s models (:class:`kwsd.pipeline.Model`), one per ``-m`` (none: the demo),
    each with the detection flags over its bundle's recommended settings. Refuses, naming the
    bundles, a bundle given twice, a keyword in two models and models at different rates."""
    from kwsd.bundle import read_bundle
    from kwsd.classifier import TfliteClassifier
    from kwsd.pipeline import Model, PipelineError, check_keywords, check_rates

    paths: list[str] = args.model or []
    if len(paths) <= 1:
        bundle, classifier = _load(paths[0] if paths else None)
        settings = _detection_settings(bundle, args)
        return [Model(bundle.name, bundle.frontend, classifier, tuple(bundle.labels), settings)]
    for index, path in enumerate(paths):
        if path in paths[:index]:
            raise _SettingError(f"-m {path}: given twice; each model may be loaded once")
    bundles = [read_bundle(path) for path in paths]
    try:
        check_keywords([(path, bundle.labels) for path, bundle in zip(paths, bundles, strict=True)])
        check_rates([(path, b.frontend.sample_rate_hz) for path, b in zip(paths, bundles, strict=True)])
    except PipelineError as err:
        raise _SettingError(f"-m: {err}") from None
    overrides = _detection_overrides(args)
    given = overrides["label_thresholds"] or {}
    labels = sorted({label for bundle in bundles for label in bundle.labels})
    for label in given:
        if label not in labels:
            raise _SettingError(
                f"--label-threshold: {label!r} is not a label of any of the models (they have: "
                f"{', '.join(labels)})"
            )
    names: dict[str, int] = {}
    models = []
    for bundle in bundles:
        # Each flag applies to every model; a label's threshold to the models that have it.
        own = {label: value for label, value in given.items() if label in bundle.labels}
        settings = _resolve_stream_detection(bundle, {**overrides, "label_thresholds": own or None})
        names[bundle.name] = names.get(bundle.name, 0) + 1
        name = bundle.name if names[bundle.name] == 1 else f"{bundle.name}#{names[bundle.name]}"
        models.append(Model(name, bundle.frontend, TfliteClassifier(bundle), tuple(bundle.labels), settings))
    return models


def _resolve_stream_detection(bundle: Any, overrides: dict[str, Any]) -> Any:
    from kwsd.detection import DetectionError, resolve_detection

    try:
        return resolve_detection(
            bundle.detection, overrides, window_stride_ms=bundle.frontend.window_stride_ms
        )
    except DetectionError as err:
        raise _SettingError(f"{err} (model {bundle.name})") from None


class _StreamScores:
    """``kwsd stream --scores``: each window's smoothed scores on stdout, every model's labels
    each once, from the pipeline's own hook, in audio-time order with the detection lines.

    With one model each window is shown as it comes. With several, a block's windows come only
    once every model has run on it (one call per audio time, every model's latest scores), so
    they are held until the block's detections are written, each before the detections at or
    after its time.
    """

    def __init__(self, pipeline: Any) -> None:
        from kwsd.scores import ScoreDisplay

        self._display = ScoreDisplay(sys.stdout, pipeline.labels, lambda: pipeline)
        self._held: dict[int, Any] = {}
        several = len(pipeline.pipelines) > 1
        pipeline.on_smoothed = self._hold if several else self._display.window

    def _hold(self, time_ms: int, scores: Any) -> None:
        self._held[time_ms] = scores

    def release(self, until_ms: int | None = None) -> None:
        """Show the held windows up to ``until_ms`` of audio time (None: all), oldest first."""
        for time_ms in sorted(self._held):
            if until_ms is not None and time_ms > until_ms:
                break
            self._display.window(time_ms, self._held.pop(time_ms))

    def line(self, text: str, audio_time_ms: int) -> None:
        """A detection's line, after the held windows up to its time."""
        self.release(audio_time_ms)
        self._display.line(text)

    def close(self) -> None:
        self.release()
        self._display.close()


def _detection_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The detection settings given on the command line (None where a flag was not given)."""
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "clip_stride_ms",
            "average_window_ms",
            "threshold",
            "suppression_ms",
            "minimum_count",
            "rule",
        )
    }
    label_thresholds: dict[str, float] = {}
    for item in args.label_threshold:
        label, sep, value = item.partition("=")
        try:
            label_thresholds[label] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label:
            raise _SettingError(f"--label-threshold: expected LABEL=P, got {item!r}")
    overrides["label_thresholds"] = label_thresholds or None
    return overrides


def _detection_settings(bundle: Any, args: argparse.Namespace) -> Any:
    """Command-line flags, else the bundle's recommended values, else TensorFlow's defaults."""
    from kwsd.detection import DetectionError, resolve_detection

    try:
        return resolve_detection(
            bundle.detection, _detection_overrides(args), window_stride_ms=bundle.frontend.window_stride_ms
        )
    except DetectionError as err:
        raise _SettingError(str(err)) from None


def _print_stats(pipeline: Any, detections: int, first_window_s: float | None) -> None:
    """``--stats``: every model's figures together (each front end counted once)."""
    stats = pipeline.stats
    audio_s = stats.samples / pipeline.sample_rate_hz
    cpu_ms = stats.total_ns / 1e6
    per_s = cpu_ms / audio_s if audio_s else 0.0
    first = f"{first_window_s * 1000:.0f} ms" if first_window_s is not None else "never"
    served = f"{pipeline.sharing()}, " if len(pipeline.pipelines) > 1 else ""
    print(
        f"kwsd: {audio_s:.2f} s of audio, {served}{stats.windows} windows, {detections} detections; "
        f"pipeline CPU {cpu_ms:.1f} ms ({per_s:.3f} ms per audio second: front end "
        f"{stats.frontend_ns / 1e6:.1f}, interpreter {stats.classifier_ns / 1e6:.1f}, "
        f"smoother {stats.smoother_ns / 1e6:.1f} ms); start to first window {first}"
        + (
            f"; audio gate skipped {stats.gate_skipped} of {stats.windows} windows"
            if pipeline.gate is not None
            else ""
        ),
        file=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from kwsd.daemon import run_daemon

    run_daemon(args.config, verbose=bool(args.verbose), scores=args.scores)
    return EXIT_OK


def _cmd_wyoming(args: argparse.Namespace) -> int:
    import asyncio

    try:
        from kwsd import wyoming_server
    except ImportError as err:
        if not (err.name or "").startswith("wyoming"):
            raise
        raise RuntimeDependencyError(
            "kwsd wyoming needs the wyoming package: pip install 'kwsd[wyoming]'"
        ) from None
    from kwsd.daemon import prepare_model

    wyoming_server.check_uri(args.uri)
    prepared = prepare_model(args.config, args.model or [])
    if not args.verbose:
        logging.getLogger().setLevel(prepared.config.log_level.logging_level)
    settings = wyoming_server.WakeServerSettings(
        tuple(wyoming_server.ServedModel(m.bundle, m.detection, m.key) for m in prepared.models),
        gate=prepared.config.audio.gate,
    )
    try:
        asyncio.run(wyoming_server.serve(settings, args.uri, zeroconf=not args.no_zeroconf))
    except wyoming_server.ListenError as err:
        return _fail(err, EXIT_NO_DEVICE)  # 75, EX_TEMPFAIL: the port may be free next time
    return EXIT_OK


def _add_record_parser(sub: Any) -> None:
    rec = sub.add_parser(
        "record",
        help="record training clips from a microphone: guided words, background noise, or long chunks",
        description="Record training data in the layout tools/train.py reads: "
        "<out>/<word>/<speaker>_nohash_<n>.wav, <out>/_background_noise_/, <out>/<label>/. "
        "`kwsd record MODE --help` shows each mode's options.",
    )
    # What every mode takes.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", default="data", metavar="DIR", help="the data folder (default ./data)")
    common.add_argument(
        "--device", help="capture device: a name substring or an index (default: the system's)"
    )
    common.add_argument(
        "--sample-rate", type=int, default=16000, metavar="HZ", help="the model's rate (16000)"
    )
    common.add_argument("--channels", type=int, default=1, help="channels to open the device with (mixed)")
    common.add_argument("--block-ms", type=int, default=20, metavar="MS", help=argparse.SUPPRESS)
    modes = rec.add_subparsers(dest="mode", metavar="MODE", required=True)
    guided = modes.add_parser(
        "guided",
        parents=[common],
        help="say each word when asked; each take is trimmed to one clip around the word",
        description="Record --takes clips of each of --words, spoken by --speaker. Each take is "
        "trimmed to --clip-ms around the word; a take that is too quiet, clipped, too long or cut "
        "off is refused with the reason and retaken.",
    )
    guided.add_argument("--words", metavar="A,B,...", help="the words to record, each a folder")
    guided.add_argument("--speaker", help="who speaks: the file names' speaker part, kept in one partition")
    guided.add_argument("--takes", type=int, default=5, help="clips of each word (5)")
    guided.add_argument("--clip-ms", type=int, default=1000, metavar="MS", help="clip length (1000)")
    guided.add_argument(
        "--take-ms", type=int, default=2000, metavar="MS", help="audio recorded per take (2000)"
    )
    guided.add_argument("--countdown", type=int, default=3, metavar="S", help="seconds of countdown (3)")
    guided.add_argument("--retries", type=int, default=3, help="retakes of a refused take (3)")
    guided.add_argument("--yes", action="store_true", help="do not wait for Enter before each word")
    noise = modes.add_parser(
        "background",
        parents=[common],
        help="one long recording of the room, for _background_noise_",
        description="Record the room with nobody speaking, into <out>/_background_noise_/.",
    )
    noise.add_argument("--seconds", type=float, default=300.0, help="length of the recording (300)")
    noise.add_argument("--name", help="file name in _background_noise_ (default: room-<date-time>)")
    chunks = modes.add_parser(
        "continuous",
        parents=[common],
        help="fixed-length chunks with no gap, until stopped (e.g. hours of a baby crying)",
        description="Record chunks of --chunk-seconds into <out>/<label>/ with no gap between them, "
        "until Ctrl-C, SIGTERM, --hours or a nearly full disk; the chunk so far is kept.",
    )
    chunks.add_argument("--label", help="the folder the chunks go to (e.g. crying)")
    chunks.add_argument("--prefix", help="file name prefix (default: rec-<date>)")
    chunks.add_argument("--chunk-seconds", type=float, default=30.0, help="length of each chunk (30)")
    chunks.add_argument("--hours", type=float, help="stop after this long (default: until Ctrl-C or SIGTERM)")
    chunks.add_argument(
        "--min-free-mb", type=int, default=500, help="stop before the disk has less free (500)"
    )
    for mode in (guided, noise, chunks):
        mode.set_defaults(handler=_cmd_record)


def _cmd_record(args: argparse.Namespace) -> int:
    import datetime as dt
    from collections import Counter

    from kwsd import record
    from kwsd.dataset_layout import BACKGROUND_NOISE_DIR
    from kwsd.sources import MicrophoneSource

    for flag in ("sample_rate", "channels", "takes", "clip_ms", "take_ms", "chunk_seconds", "seconds"):
        value = getattr(args, flag, 1)  # each mode has its own flags
        if value <= 0:
            raise _SettingError(f"--{flag.replace('_', '-')}: expected a positive number, got {value}")
    for flag in ("countdown", "retries", "min_free_mb"):
        if getattr(args, flag, 0) < 0:
            raise _SettingError(f"--{flag.replace('_', '-')}: expected 0 or more, got {getattr(args, flag)}")
    if args.mode == "guided" and args.take_ms < args.clip_ms:
        raise _SettingError(f"--take-ms {args.take_ms}: must be at least --clip-ms ({args.clip_ms})")
    out_dir = Path(args.out)
    # Every name is checked before the device opens.
    try:
        names = _record_names(args, dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    except record.RecordError as err:
        raise _SettingError(str(err)) from None
    source = MicrophoneSource(
        int(args.device) if args.device and args.device.isdigit() else args.device,
        args.sample_rate,
        channels=args.channels,
        block_ms=args.block_ms,
    )
    capture = record.Capture(source, args.sample_rate, sys.stderr, meter=sys.stderr.isatty())
    saved: Counter[str] = Counter()
    try:
        with record.stop_on_signals(capture):
            if args.mode == "guided":
                settings = record.GuidedSettings(
                    words=names["words"],
                    speaker=names["speaker"][0],
                    takes=args.takes,
                    clip_ms=args.clip_ms,
                    take_ms=args.take_ms,
                    countdown_s=args.countdown,
                    retries=args.retries,
                    ask=not args.yes,
                )
                saved = record.guided(capture, out_dir, settings)
            elif args.mode == "background":
                path = record.background(capture, out_dir, names["name"][0], args.seconds)
                print(f"saved {path}" if path else "nothing recorded", file=sys.stderr)
                saved[BACKGROUND_NOISE_DIR] += 1 if path else 0
            else:
                label = names["label"][0]
                paths = record.continuous(
                    capture,
                    out_dir,
                    label=label,
                    prefix=names["prefix"][0],
                    chunk_s=args.chunk_seconds,
                    total_s=args.hours * 3600 if args.hours else None,
                    min_free_mb=args.min_free_mb,
                )
                saved[label] += len(paths)
    finally:
        source.close()
        print(record.summary(saved, out_dir), file=sys.stderr)
    return EXIT_OK


def _record_names(args: argparse.Namespace, stamp: str) -> dict[str, tuple[str, ...]]:
    """The words, speaker, label, name and prefix ``kwsd record`` will use, each checked."""
    from kwsd.record import check_name

    if args.mode == "guided":
        if not args.words or not args.speaker:
            raise _SettingError("guided: give --words A,B,... and --speaker NAME")
        words = tuple(check_name("--words", w.strip()) for w in args.words.split(",") if w.strip())
        return {"words": words, "speaker": (check_name("--speaker", args.speaker),)}
    if args.mode == "background":
        return {"name": (check_name("--name", args.name or f"room-{stamp}"),)}
    if not args.label:
        raise _SettingError("continuous: give --label (the folder the chunks go to)")
    return {
        "label": (check_name("--label", args.label, allow_reserved=True),),
        "prefix": (check_name("--prefix", args.prefix or f"rec-{stamp}"),),
    }


def _add_review_parser(sub: Any) -> None:
    review = sub.add_parser(
        "review",
        help="file the captures of kwsd run (capture.enabled) one key at a time",
        description="Walk the pending captures in CAPTURE_DIR (capture.directory): each is shown "
        "(kind, label, score, time, score and level sparklines), played with the system's player, "
        "and filed with one key: c correct, w wrong (-> _unknown_), o other word, s skip, d delete, "
        "p play again, q quit. Filed captures go to CAPTURE_DIR/reviewed/<label>/, a data set "
        "tools/train.py reads.",
    )
    review.add_argument("directory", metavar="CAPTURE_DIR")
    review.add_argument("--list", action="store_true", help="print the pending captures and exit")
    review.add_argument(
        "--accept-all", metavar="LABEL", help="file every pending capture of LABEL as correct"
    )
    review.add_argument("--no-play", action="store_true", help="never play the audio")
    review.add_argument("-m", "--model", metavar="BUNDLE", help="skip captures made with another model")
    review.set_defaults(handler=_cmd_review)


def _cmd_review(args: argparse.Namespace) -> int:
    from kwsd import review

    directory = Path(args.directory)
    sha = None
    if args.model:
        bundle, _ = _load(args.model)
        sha = bundle.sha256
    if args.list:
        for item in review.pending_captures(directory, sha):
            print(item if isinstance(item, str) else item.describe())
        return EXIT_OK
    if args.accept_all:
        count = review.accept_all(directory, args.accept_all, sys.stdout, sha)
        print(f"{count} captures of {args.accept_all} filed as correct", file=sys.stderr)
        return EXIT_OK
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise _SettingError(
            "kwsd review asks one key per capture: run it on a terminal, or use --list or --accept-all"
        )
    done = review.interactive(
        directory,
        sys.stdout,
        _read_key,
        input,
        play=None if args.no_play else review.player(),
        model_sha256=sha,
    )
    print(", ".join(f"{count} {what}" for what, count in done.items()))
    return EXIT_OK


def _read_key() -> str:
    """One key from the terminal, without Enter."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # not the default TCSAFLUSH: keys typed ahead count
        key = os.read(fd, 1).decode(errors="replace")
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    if key == "\x03":
        raise KeyboardInterrupt
    return key


def _cmd_check_config(args: argparse.Namespace) -> int:
    from kwsd.daemon import prepare

    # Every check `kwsd run` makes before it opens the device, with the same exit codes.
    prepared = prepare(args.config)
    config = prepared.config
    events = f"events to {'mqtt ' + str(config.mqtt.host) if config.mqtt.host else 'stdout'}"
    if len(prepared.models) == 1:
        bundle, settings = prepared.bundle, prepared.detection
        print(
            f"{args.config}: OK (model {config.model or 'built-in demo'}: {bundle.name}, "
            f"{', '.join(bundle.labels)}; clip stride {settings.clip_stride_ms} ms, "
            f"threshold {settings.threshold:g}; {events})"
        )
        return EXIT_OK
    specs = []
    for model in prepared.models:
        if model.bundle.frontend not in specs:
            specs.append(model.bundle.frontend)
    shared = f"{len(prepared.models)} models on {len(specs)} front end{'s' * (len(specs) > 1)}"
    print(f"{args.config}: OK ({shared}; {events})")
    for model in prepared.models:
        settings = model.detection
        print(
            f"  {model.key} ({model.bundle.source}): {', '.join(model.bundle.labels)}; front end "
            f"{specs.index(model.bundle.frontend) + 1}; clip stride {settings.clip_stride_ms} ms, "
            f"threshold {settings.threshold:g}"
        )
    return EXIT_OK


def _cmd_devices(args: argparse.Namespace) -> int:
    from kwsd.sources import NO_CAPTURE_DEVICES, AudioDeviceError, list_devices

    devices = list_devices()
    if not devices:
        raise AudioDeviceError(NO_CAPTURE_DEVICES)  # exit 75, as `kwsd record` with no device
    for device in devices:
        print(device.describe())
    return EXIT_OK


def _cmd_label_wav(args: argparse.Namespace) -> int:
    import numpy as np

    from kwsd.audio import read_wav
    from kwsd.frontend import compute_features

    if args.how_many_labels < 1:
        raise _SettingError(f"--how-many-labels: expected at least 1, got {args.how_many_labels}")
    bundle, classifier = _load(args.model)
    spec = bundle.frontend
    # Read and check every file before printing anything.
    # The first clip is all a model looks at (label_wav.py's decode_wav keeps as much): a
    # file or stream of any length costs one clip.
    clips = [
        (path, read_wav(path, spec.sample_rate_hz, max_samples=spec.clip_samples)) for path in args.files
    ]
    for path, samples in clips:
        if len(samples) == 0:
            raise AudioFormatError(f"{path}: no audio samples")
        scores = classifier.classify(compute_features(spec, samples))
        order = np.argsort(-scores, kind="stable")[: args.how_many_labels]
        if args.json:
            ranked = [{"label": bundle.labels[i], "score": round(float(scores[i]), 5)} for i in order]
            print(json.dumps({"file": path, "labels": ranked}))
            continue
        if len(clips) > 1:
            print(f"{path}:")
        for i in order:
            print(f"{bundle.labels[i]} (score = {float(scores[i]):.5f})")
    return EXIT_OK


def _cmd_model_info(args: argparse.Namespace) -> int:
    bundle, classifier = _load(args.bundle)
    if args.json:
        print(json.dumps(bundle.manifest(), indent=2, sort_keys=True))
        return EXIT_OK
    prov = bundle.provenance
    print(f"name:       {bundle.name}")
    print(f"labels:     {', '.join(bundle.labels)}")
    print(f"front end:  {bundle.frontend.describe()}")
    print(f"input:      {classifier.input_description}")
    print(f"output:     {classifier.output_description}")
    print(f"model:      {len(bundle.tflite)} bytes, sha256 {bundle.sha256}")
    embedding = bundle.frontend.embedding
    if embedding is not None:
        for key in ("mel_model", "embedding_model"):
            data, digest = getattr(embedding, key), getattr(embedding, f"{key}_sha256")
            print(f"features:   {key} {len(data)} bytes, sha256 {digest}")
        terms = (prov.get("dataset") or {}).get("feature_models")
        if terms:
            print(f"            {' '.join(str(terms).split())}")
    print(f"made by:    {prov.get('tool')} ({prov.get('tool_version')}) on {prov.get('created')}")
    sources = (prov.get("dataset") or {}).get("sources") or {}
    for name, source in sorted(sources.items()) if isinstance(sources, dict) else ():
        if not isinstance(source, dict):
            continue
        weight = source.get("weight")
        use = ""
        if isinstance(weight, int | float):
            use = " (evaluation only)" if weight == 0 else f" (weight {weight:g})"
        print(f"data:       {name}{use}: {source.get('data_dir')}")
        if source.get("attribution"):
            print(f"            {' '.join(str(source['attribution']).split())}")
    for key, value in sorted(bundle.metrics.items()):
        print(f"metric:     {key} = {value}")
    if bundle.detection:
        print(f"detection:  {json.dumps(bundle.detection, sort_keys=True)}")
    return EXIT_OK


def _cmd_model_import(args: argparse.Namespace) -> int:
    from kwsd.frozengraph import Given
    from kwsd.modelimport import ImportRequest, import_model

    mfcc: dict[str, Any] = {}
    for item in args.mfcc:
        key, sep, value = item.partition("=")
        if not sep:
            raise _SettingError(f"--mfcc: expected KEY=VALUE, got {item!r}")
        mfcc[key] = _yaml_scalar(value)
    request = ImportRequest(
        model=Path(args.tflite),
        output=args.output,
        labels=args.labels.split(",") if args.labels is not None else None,
        labels_file=Path(args.labels_file) if args.labels_file is not None else None,
        name=args.name,
        given=Given(
            frontend=args.frontend,
            sample_rate_hz=args.sample_rate,
            clip_duration_ms=args.clip_duration_ms,
            window_size_ms=args.window_size_ms,
            window_stride_ms=args.window_stride_ms,
            feature_bin_count=args.feature_bin_count,
            micro_state=args.micro_state,
        ),
        mfcc=mfcc,
        detection=_detection_overrides(args),
        representative_dir=Path(args.representative_dir) if args.representative_dir is not None else None,
    )
    imported = import_model(request)
    if imported.read:
        print(imported.read)
    for note in imported.notes:
        print(f"note: {note}")
    print(imported.wrote)
    if imported.detection_source:
        settings = imported.detection
        print(
            f"detection: clip stride {settings.clip_stride_ms} ms, {_setting_text(settings)}, minimum count "
            f"{settings.minimum_count}, rule {settings.rule.value} ({imported.detection_source})"
        )
    return EXIT_OK


def _yaml_scalar(text: str) -> Any:
    """``true``/``512``/``0.97``/``hamming`` as the YAML scalar they read as."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


# --------------------------------------------------------------------------------------
# Streaming accuracy and calibration (kwsd/evaluate/).


def _add_evaluate_parsers(sub: Any) -> None:
    from kwsd.evaluate import (
        DEFAULT_AVERAGE_WINDOWS_MS,
        DEFAULT_SUPPRESSIONS_MS,
        DEFAULT_TARGET_FA_PER_HOUR,
        DEFAULT_THRESHOLDS,
        DEFAULT_TOLERANCE_MS,
    )
    from kwsd.smoother import FiringRule

    evaluate = sub.add_parser(
        "evaluate",
        help="streaming accuracy of a model on a long WAV with its ground truth",
        description="Run a long WAV through the daemon's pipeline (in accelerated audio time) and score "
        "its detections against a ground-truth file (TensorFlow's streaming test format: 'label, "
        "time_ms' lines, the start of each word's clip; a detection's clip start is its window's end "
        "minus the window's span; a state label's on is scored at the window where the sound "
        "started, its off not at all). Prints TensorFlow's matched / correct / wrong / false positive "
        "figures, false accepts per hour (keyword detections that are wrong or match no word) and "
        "the miss rate per label; --json gives the report as JSON.",
    )
    evaluate.add_argument("--audio", required=True, metavar="LONG.wav", help="the audio (a WAV file)")
    evaluate.add_argument(
        "--truth", required=True, metavar="LONG.txt", help="its ground truth ('label, time_ms' lines)"
    )
    _add_model_argument(evaluate)
    evaluate.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="a config.yaml: its model and detection settings, loaded and checked as `kwsd run` does "
        "(with several models, -m picks one of them); the flags below go over them",
    )
    _add_detection_arguments(
        evaluate,
        "detection settings (default: the config's with -c, else the bundle's recommended values, "
        "else TensorFlow's)",
    )
    _add_truth_arguments(evaluate, DEFAULT_TOLERANCE_MS)
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.set_defaults(handler=_cmd_evaluate)

    cal = sub.add_parser(
        "calibrate",
        help="sweep threshold, averaging window and suppression; pick them for a false-accept target",
        description="Run the audio through the daemon's pipeline once, replay the smoother with every "
        "setting of a grid on the recorded scores, and pick the setting with the lowest miss rate "
        "whose false accepts per hour (over all the audio: the words audio, any background "
        "audio, and the listening that reviewed captures stand for) are within the target. "
        "Shows the trade-off as a table (and a DET plot with "
        "--plot) and writes the values into config.yaml's detection section in place, comments "
        "kept, the old file kept as .bak (--dry-run, or no --config: print the snippet). Exit 1 "
        "when no setting reaches the target (the closest is shown, nothing is written).",
    )
    cal.add_argument("--audio", metavar="LONG.wav", help="audio with words (a WAV file)")
    cal.add_argument("--truth", metavar="LONG.txt", help="its ground truth")
    cal.add_argument(
        "--captures",
        metavar="DIR",
        help="a capture folder (capture.directory) whose captures were filed by `kwsd review`: its "
        "false alarms count per hour of the listening they were kept from, its right ones as words",
    )
    cal.add_argument(
        "--background-audio",
        action="append",
        default=[],
        metavar="NOISE.wav",
        help="audio with no words, for false accepts (repeatable)",
    )
    _add_model_argument(cal)
    cal.add_argument(
        "--target-fa-per-hour",
        type=float,
        default=DEFAULT_TARGET_FA_PER_HOUR,
        metavar="N",
        help=f"false accepts per hour allowed (default {DEFAULT_TARGET_FA_PER_HOUR})",
    )
    cal.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="the config.yaml to write (and whose model and settings to use)",
    )
    cal.add_argument(
        "--set-model",
        action="store_true",
        help="with -m and -c: also write the calibrated model into the config's model: key (without "
        "it, a config that uses another model is refused: its settings would not fit)",
    )
    cal.add_argument("--dry-run", action="store_true", help="print the detection snippet, write nothing")
    cal.add_argument("--plot", metavar="DET.png", help="write a DET plot (needs matplotlib)")
    cal.add_argument("--per-label", action="store_true", help="also tune a threshold per keyword")
    cal.add_argument("--json", action="store_true", help="print the result as JSON")
    fixed = cal.add_argument_group("fixed detection settings (default: the config's, else the bundle's)")
    fixed.add_argument("--clip-stride-ms", type=int, metavar="MS", help="run the model every MS of audio")
    fixed.add_argument("--minimum-count", type=int, metavar="N", help="windows needed before deciding")
    fixed.add_argument("--rule", choices=[rule.value for rule in FiringRule], help="firing rule")
    grid = cal.add_argument_group("the grid")
    grid.add_argument(
        "--thresholds",
        metavar="P,P,...",
        default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
        help="thresholds to try (default %(default)s)",
    )
    grid.add_argument(
        "--average-windows-ms",
        metavar="MS,MS,...",
        default=",".join(map(str, DEFAULT_AVERAGE_WINDOWS_MS)),
        help="averaging windows to try (default %(default)s)",
    )
    grid.add_argument(
        "--suppressions-ms",
        metavar="MS,MS,...",
        default=",".join(map(str, DEFAULT_SUPPRESSIONS_MS)),
        help="suppression times to try (default %(default)s)",
    )
    _add_truth_arguments(cal, DEFAULT_TOLERANCE_MS)
    cal.set_defaults(handler=_cmd_calibrate)


def _warn_about_captures(captures: Any, labels: Sequence[str], thresholds: Sequence[float]) -> None:
    """What the reviewed captures cannot tell, said before the sweep."""
    for line in captures.left_out:
        log.warning("--captures: %s", line)
    if captures.pending:
        log.warning(
            "--captures: %d capture(s) in the span counted are still pending: review them "
            "(`kwsd review %s`); until then they count as neither false alarms nor words",
            captures.pending,
            captures.directory,
        )
    if captures.other_models:
        log.warning(
            "--captures: %d capture(s) were kept with another model: they hold what that model fired "
            "on; false alarms this model makes elsewhere are not in them",
            captures.other_models,
        )
    low = [t for t in thresholds if captures.kept_above is not None and t < captures.kept_above]
    if low:
        log.warning(
            "--captures: only scores above %.2f were kept (near_miss_threshold, else threshold); at "
            "thresholds %s the captures hold only some of the false alarms",
            captures.kept_above,
            ", ".join(f"{t:g}" for t in sorted(low)),
        )


def _add_truth_arguments(parser: argparse.ArgumentParser, tolerance_ms: float) -> None:
    parser.add_argument(
        "--tolerance-ms",
        type=float,
        default=tolerance_ms,
        metavar="MS",
        help=f"a detection matches a word whose clip starts within MS of its own (default {tolerance_ms:g})",
    )
    parser.add_argument(
        "--skip-malformed",
        action="store_true",
        help="leave out malformed ground-truth lines (counted and listed) instead of refusing the file",
    )


def _check_tolerance(args: argparse.Namespace) -> None:
    import math

    if not math.isfinite(args.tolerance_ms) or args.tolerance_ms <= 0:
        raise _SettingError(
            f"--tolerance-ms: expected a positive number of milliseconds, got {args.tolerance_ms}"
        )


def _run_stream(path: str, bundle: Any, classifier: Any, settings: Any) -> Any:
    from kwsd.evaluate import run_stream
    from kwsd.pipeline import PipelineError
    from kwsd.smoother import SmootherError

    try:
        return run_stream(
            path,
            bundle.frontend,
            classifier,
            bundle.labels,
            settings=settings,
        )
    except (SmootherError, PipelineError) as err:
        raise _SettingError(str(err)) from None


def _truth_lines(truth: Any) -> list[str]:
    if not truth.skipped:
        return []
    shown = "; ".join(f"line {n}: {why}" for n, why in truth.skipped[:5])
    more = f" (and {len(truth.skipped) - 5} more)" if len(truth.skipped) > 5 else ""
    return [f"{truth.source}: skipped {len(truth.skipped)} malformed line(s): {shown}{more}"]


def _evaluated_model(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The bundle, its classifier and the detection settings ``kwsd evaluate`` runs: with
    ``--config``, the config's model (``-m`` picks one of several) with the settings `kwsd run`
    would give it; else ``-m`` (or the demo) with its recommended settings; flags over either."""
    if args.config is None:
        bundle, classifier = _load(args.model)
        return bundle, classifier, _detection_settings(bundle, args)
    from kwsd.bundle import demo_bundle_path
    from kwsd.daemon import prepare_model
    from kwsd.detection import DetectionError, resolve_detection

    prepared = prepare_model(args.config)  # kwsd run's loading and checks: a bad config exits 78
    paths = [Path(e.path if e is not None else demo_bundle_path()) for e in prepared.config.model_entries()]
    if args.model is not None:
        wanted = Path(args.model).absolute()
        chosen = [m for m, path in zip(prepared.models, paths, strict=True) if path.absolute() == wanted]
        if not chosen:
            raise _SettingError(
                f"-m {args.model}: {args.config} does not use it (its model{'s' if len(paths) > 1 else ''}: "
                f"{', '.join(map(str, paths))}); its settings are for those: leave out -m, or give one "
                "of them"
            )
        model = chosen[0]
    elif len(prepared.models) > 1:
        raise _SettingError(
            f"-c {args.config}: it has {len(prepared.models)} models and evaluate measures one: give -m "
            f"with one of {', '.join(map(str, paths))}"
        )
    else:
        model = prepared.models[0]
    bundle = model.bundle
    try:
        settings = resolve_detection(
            model.detection.to_dict(),
            _detection_overrides(args),
            window_stride_ms=bundle.frontend.window_stride_ms,
        )
    except DetectionError as err:
        raise _SettingError(str(err)) from None
    return bundle, model.classifier, settings


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from kwsd.evaluate import (
        check_truth,
        figures,
        read_truth,
        score_detections,
        state_scoring,
        stream_report,
    )

    _check_tolerance(args)
    truth = read_truth(args.truth, skip_malformed=args.skip_malformed)
    bundle, classifier, settings = _evaluated_model(args)
    check_truth(truth, bundle.labels)
    detections, recorded, audio = _run_stream(args.audio, bundle, classifier, settings)
    check_truth(truth, bundle.labels, audio.audio_ms)
    scored = score_detections(
        detections, truth.words, window_ms=recorded.window_ms, tolerance_ms=args.tolerance_ms
    )
    result = figures(scored, truth.words, bundle.labels, audio.audio_ms)
    detection = settings.to_dict()
    states = state_scoring(detections, list(settings.states))
    report = stream_report(
        audio=audio,
        truth=truth,
        model={"name": bundle.name, "sha256": bundle.sha256},
        detection=detection,
        tolerance_ms=args.tolerance_ms,
        result=result,
        states=states,
    )
    for line in _truth_lines(truth):
        print(f"kwsd: warning: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(
        f"audio:   {audio.path} ({audio.audio_ms / 1000:.1f} s = {audio.hours:.4f} h, sha256 "
        f"{audio.sha256[:16]}...); truth {truth.source}: {len(truth.words)} words"
    )
    print(f"model:   {bundle.name} (sha256 {bundle.sha256[:16]}...); detection {json.dumps(detection)}")
    if states is not None:
        print(
            f"state labels ({', '.join(states['labels'])}): {states['scored']} ({states['ons']} on, "
            f"{states['offs_not_counted']} off in this audio)"
        )
    miss = result.miss_rate
    if miss is not None:
        heard = result.keyword_words - round(miss * result.keyword_words)
        print(
            f"heard:   {heard} of {result.keyword_words} keyword words ({100 * (1 - miss):.1f}%), each "
            "with its own label"
        )
    print(f"result:  {result.reference_text()} (tolerance {args.tolerance_ms:g} ms, clip starts)")
    if result.matched > result.words:
        print(
            "         (TensorFlow's figures: 'matched' counts every hit, a second hit on a word again, "
            "so it can pass 100%)"
        )
    print(
        f"false accepts: {result.false_accepts} ({result.false_accepts_per_hour:.2f} per hour); miss rate "
        + (
            f"{100 * miss:.1f}% of {result.keyword_words} keyword words"
            if miss is not None
            else "- (no keyword words)"
        )
    )
    print(f"{'label':>12} {'words':>6} {'detected':>8} {'missed':>6} {'miss %':>7} {'false accepts':>13}")
    for label, f in result.per_label.items():
        rate = "-" if f.miss_rate is None else f"{100 * f.miss_rate:.1f}"
        print(f"{label:>12} {f.words:6d} {f.detected:8d} {f.missed:6d} {rate:>7} {f.false_accepts:13d}")
    return EXIT_OK


def _number_list(flag: str, text: str, kind: type, low: float, high: float | None) -> list[Any]:
    values: list[Any] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"{low:g}..{high:g}" if high is not None else f">= {low:g}"
            raise _SettingError(f"{flag}: expected comma-separated {kind.__name__}s {bound}, got {part!r}")
        values.append(value)
    if not values:
        raise _SettingError(f"{flag}: expected at least one value")
    return sorted(set(values))


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import importlib.util
    import math

    from kwsd import evaluate as ev
    from kwsd.bundle import demo_bundle_path
    from kwsd.config import load_config, parse_config
    from kwsd.detection import DetectionError, resolve_detection
    from kwsd.labels import UNKNOWN_LABEL

    _check_tolerance(args)
    target = args.target_fa_per_hour
    if not math.isfinite(target) or target < 0:
        raise _SettingError(f"--target-fa-per-hour: expected a number >= 0, got {target}")
    thresholds = _number_list("--thresholds", args.thresholds, float, 0.0, 1.0)
    windows = _number_list("--average-windows-ms", args.average_windows_ms, int, 1, None)
    suppressions = _number_list("--suppressions-ms", args.suppressions_ms, int, 0, None)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise RuntimeDependencyError(
            "--plot needs matplotlib, which is not installed: install matplotlib for --plot"
        )
    config = load_config(args.config) if args.config else None  # a config with problems: exit 78
    model_path = args.model
    set_model: Path | None = None
    if args.set_model and (model_path is None or config is None):
        raise _SettingError(
            "--set-model: give the model to write with -m and the config to write it to with -c"
        )
    if config is not None and config.models:
        # Its models each read the top-level detection under their own: the section calibrate
        # writes would not say what any one of them runs with, and `model:` is not the one used.
        first = config.models[0].path
        raise _SettingError(
            f"-c {args.config}: it lists its models under models:, whose own detection settings go "
            "over the top-level detection section that calibrate writes; calibrate one model without "
            f"-c (-m {first}: it prints the snippet) and put the values under that model's detection: "
            "in models:"
        )
    if config is not None:
        # Settings tuned for one model do not fit another (its stride, its labels): never leave a
        # config whose model differs from the one calibrated, which `kwsd run` would refuse.
        config_model = config.model or demo_bundle_path()
        if args.set_model:
            set_model = Path(model_path).absolute()
        elif model_path is not None and Path(model_path).absolute() != Path(config_model).absolute():
            in_config = config.model or "the built-in demo (model: null)"
            raise _SettingError(
                f"-m {model_path}: {args.config} uses the model {in_config}; calibrate the model the "
                "config uses (leave out -m), or add --set-model to write this one into the config too"
            )
        else:
            model_path = str(config.model) if config.model is not None else None
    if (args.audio is None) != (args.truth is None):
        given, missing = ("--audio", "--truth") if args.truth is None else ("--truth", "--audio")
        raise _SettingError(f"{given}: give {missing} with it (the words audio and its ground truth)")
    if args.audio is None and args.captures is None:
        raise _SettingError(
            "give --audio and --truth (words and their ground truth), --captures DIR, or both"
        )
    truth = ev.read_truth(args.truth, skip_malformed=args.skip_malformed) if args.truth is not None else None
    bundle, classifier = _load(model_path)
    labels = bundle.labels
    captures = ev.read_reviewed(args.captures, model_sha256=bundle.sha256) if args.captures else None
    if truth is not None:
        ev.check_truth(truth, labels)
    keyword_words = sum(1 for w in truth.words if ev.is_keyword(w.label)) if truth is not None else 0
    if captures is not None:
        _warn_about_captures(captures, labels, thresholds)
        keyword_words += captures.counts(labels)[0]
    if not keyword_words:
        where = " or ".join(
            ([truth.source] if truth is not None else [])
            + ([f"{args.captures}'s reviewed captures"] if captures else [])
        )
        raise EvaluationError(
            f"{where}: no keyword words (only {UNKNOWN_LABEL} or none): the miss rate cannot be "
            f"measured; give audio with words of {', '.join(x for x in labels if ev.is_keyword(x))}"
        )
    overrides: dict[str, Any] = dict(config.detection) if config is not None else {}
    overrides.update(
        {
            key: getattr(args, key)
            for key in ("clip_stride_ms", "minimum_count", "rule")
            if getattr(args, key) is not None
        }
    )
    try:
        current = resolve_detection(
            bundle.detection, overrides, window_stride_ms=bundle.frontend.window_stride_ms
        )
    except DetectionError as err:
        raise _SettingError(str(err)) from None
    clip_stride_ms = current.clip_stride_ms
    usable = [w for w in windows if w // clip_stride_ms + 1 >= current.minimum_count]
    if not usable:
        raise _SettingError(
            f"--average-windows-ms: none holds minimum_count ({current.minimum_count}) windows at a "
            f"{clip_stride_ms} ms clip stride"
        )
    if len(usable) < len(windows):
        log.warning("averaging windows %s hold too few windows; left out", sorted(set(windows) - set(usable)))
    if current.states:
        log.warning(
            "state labels (%s): their on/off settings (on_threshold, off_threshold, min_on_ms, "
            "min_off_ms) are not calibrated: the sweep keeps them as given and scores each on (offs "
            "not counted); tune them with `kwsd run --scores`",
            ", ".join(current.states),
        )

    from kwsd.pipeline import PipelineError
    from kwsd.smoother import SmootherError

    try:
        calibration = ev.calibrate(
            args.audio,
            truth,
            args.background_audio,
            captures=captures,
            spec=bundle.frontend,
            classifier=classifier,
            labels=labels,
            current=current,
            thresholds=thresholds,
            average_windows_ms=usable,
            suppressions_ms=suppressions,
            target_fa_per_hour=target,
            per_label=args.per_label,
            tolerance_ms=args.tolerance_ms,
        )
    except (SmootherError, PipelineError) as err:
        raise _SettingError(str(err)) from None
    points, choice = calibration.points, calibration.choice
    current_figures = calibration.current_figures

    hours = calibration.hours
    sources = [
        f"{Path(m.audio.path).name} ({m.audio.hours:.3f} h, "
        + (f"{len(m.truth)} words" if m.truth else "background only")
        + ")"
        for m in calibration.files
    ]
    if captures is not None:
        sources.append(captures.describe(labels))
    measured_on = f"{' + '.join(sources)}: {hours:.3f} h in all"
    if hours and 1 / hours > target:
        log.warning(
            "one false accept in %.3f h of audio is %.2f per hour, more than the target %g: "
            "the target is only checked to that resolution (give more --background-audio)",
            hours,
            1 / hours,
            target,
        )
    chosen = choice.point
    values = ev.detection_values(
        chosen.setting, clip_stride_ms=clip_stride_ms, minimum_count=current.minimum_count, rule=current.rule
    )
    outcome = (
        f"{chosen.fa_per_hour:.3f} false accepts per hour, miss rate {100 * chosen.miss_rate:.2f}% "
        f"({chosen.figures.reference_text()})"
    )
    comment = [
        f"kwsd calibrate: model {bundle.name} (sha256 {bundle.sha256[:12]}), target {target:g} false "
        "accepts per hour,",
        f"measured on {measured_on}:",
        f"{outcome}",
    ]
    snippet = ev.detection_snippet(values, comment)
    if set_model is not None:
        snippet = f"model: {json.dumps(str(set_model))}\n" + snippet
    front = ev.frontier(points)
    if args.plot:
        title = f"{bundle.name}: {measured_on}"
        ev.plot_det(points, choice, args.plot, title=title)
    report = {
        "kind": "kwsd calibration",
        "model": {"name": bundle.name, "sha256": bundle.sha256},
        "audio": [
            {**m.audio.to_dict(), "words": len(m.truth), "background_only": not m.truth}
            for m in calibration.files
        ],
        "captures": None
        if captures is None
        else {
            "directory": str(captures.directory),
            "reviewed": len(captures.captures),
            "words": captures.counts(labels)[0],
            "not_keywords": captures.counts(labels)[1],
            "listened_hours": round(captures.hours, 6),
            "pending": captures.pending,
            "left_out": list(captures.left_out),
        },
        "hours": round(hours, 6),
        "tolerance_ms": args.tolerance_ms,
        "target_fa_per_hour": target,
        "reachable": choice.reachable,
        "detection": values,
        "figures": chosen.figures.to_dict(),
        "current": {
            "detection": current.to_dict(),
            "figures": current_figures.to_dict(),
        },
        "frontier": [
            {
                "threshold": p.setting.threshold,
                "average_window_ms": p.setting.average_window_ms,
                "suppression_ms": p.setting.suppression_ms,
                "false_accepts_per_hour": round(p.fa_per_hour, 4),
                "miss_rate": round(p.miss_rate, 4),
            }
            for p in front
        ],
        "settings_tried": len(points),
    }
    if current.states:
        report["state_labels"] = {
            "labels": list(current.states),
            "scored": ev.STATE_SCORING,
            "calibrated": False,
        }
    out: TextIO = sys.stdout
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        print(
            f"model:       {bundle.name} (sha256 {bundle.sha256[:16]}...); clip stride {clip_stride_ms} ms, "
            f"minimum count {current.minimum_count}, rule {current.rule.value}",
            file=out,
        )
        print(f"measured on: {measured_on}", file=out)
        print(
            "false accepts: keyword detections that are wrong or match no word, per hour of all the audio; "
            "miss rate: keyword words not detected correctly",
            file=out,
        )
        print(
            f"current settings ({_setting_text(current)}): {current_figures.false_accepts_per_hour:.3f} "
            f"false accepts per hour, miss rate "
            f"{100 * (current_figures.miss_rate or 0.0):.2f}%",
            file=out,
        )
        print(
            f"frontier of {len(points)} settings (none has both fewer false accepts and fewer misses):",
            file=out,
        )
        for row in ev.grid_table(front):
            print(f"  {row}", file=out)
    if not choice.reachable:
        print(
            f"kwsd: error: no setting reaches {target:g} false accepts per hour on this audio; the closest: "
            f"{chosen.setting.text()}: {outcome}; nothing written",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"chosen for {target:g} false accepts per hour: {chosen.setting.text()}: {outcome}", file=out)
    if args.config is None or args.dry_run:
        if not args.json:
            print(
                ("" if args.config is None else f"--dry-run: {args.config} not written\n") + snippet,
                end="",
                file=out,
            )
        return EXIT_OK
    config_dir = Path(args.config).absolute().parent
    ev.write_detection(
        args.config,
        values,
        parse=lambda text, source: parse_config(text, source, base_dir=config_dir),
        model=set_model,
    )
    print(
        f"wrote {args.config}: "
        + (f"model {set_model}, " if set_model is not None else "")
        + f"detection {', '.join(f'{k} {ev.yaml_value(v)}' for k, v in values.items())} "
        f"(the previous file is {args.config}.bak)",
        file=sys.stderr if args.json else out,
    )
    return EXIT_OK


def _setting_text(settings: Any) -> str:
    per = settings.label_thresholds or {}
    return (
        f"threshold {settings.threshold:g}"
        + (f" ({', '.join(f'{k} {v:g}' for k, v in per.items())})" if per else "")
        + f", average window {settings.average_window_ms} ms, suppression {settings.suppression_ms} ms"
    )
