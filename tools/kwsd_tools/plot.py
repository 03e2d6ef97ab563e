#!/usr/bin/env python3
"""Pictures of a model and of audio, as PNG files: a confusion matrix, a spectrogram.

    python tools/plot.py confusion BUNDLE --data_dir DIR [--partition testing] [--out confusion.png]
    python tools/plot.py spectrogram WAV [-m BUNDLE] [--out spectrogram.png]

``confusion``: the bundle on one partition of a Speech Commands-style data set. The set is
split and sampled as the trainer does it (tools/kwsd_tools/training/dataset.py, at the bundle's sample
rate and clip length, its labels' words as the wanted words; the split percentages and seed
from the bundle's provenance where it records them, else train.py's defaults, each
overridable), the features are computed by tools/kwsd_tools/training/features.py without augmentation
(silence items get their background noise, as in training), and every input is classified by
kwsd's TfliteClassifier, the daemon's path. The picture: rows are the true labels, columns the
predicted ones, in the bundle's label order; each cell shows its count, its colour the share of
its row (so a rare label's mistakes are as visible as a common one's); the title gives the
accuracy and the number of clips.

``spectrogram``: two panels over one time axis in seconds, the whole file. Top: the
log-magnitude spectrogram (dB re full scale, frequency in Hz) as TensorFlow's
``AudioSpectrogram`` op computes it (periodic Hann window, FFT length the next power of two,
complete frames only), at the file's own sample rate; window and stride are the bundle's front
end's when ``-m`` is given, else 30 ms / 10 ms (train.py's defaults), or ``--window_ms`` /
``--stride_ms``. Bottom: the model's own features (the built-in demo model's without ``-m``),
computed as the daemon computes them: kwsd's reader (resampled to the model's rate) feeding
blocks to the StreamingFrontend, one column per frame, feature index upwards.

matplotlib draws (``pip install matplotlib``; it comes with ``pip install 'kwsd[train]'``); it
is imported only when a picture is made, with the Agg canvas (no display needed).

Exit codes as kwsd's: 64 a setting it does not accept, 65 audio or a data set that cannot be
used, 66 an input that does not exist, 67 an unusable bundle, 69 matplotlib or the TFLite
interpreter missing, 73 an output that cannot be written.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from kwsd.audio import open_audio, read_wav
from kwsd.bundle import Bundle, demo_bundle_path, read_bundle
from kwsd.errors import (
    AudioFormatError,
    InputNotFoundError,
    KwsdError,
    ModelError,
    OutputError,
    RuntimeDependencyError,
)
from kwsd.frontend import FrontendKind, FrontendSpec, StreamingFrontend
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kwsd_tools.training.dataset import DatasetSettings

log = logging.getLogger("plot")

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

TOOL: Final = "plot"

EXIT_OK: Final = 0
EXIT_BAD_SETTING: Final = 64  # a flag value that is not accepted
EXIT_BAD_DATA: Final = 65  # audio or a data set that cannot be used
EXIT_NO_INPUT: Final = 66  # an input that does not exist or cannot be read
EXIT_BAD_MODEL: Final = 67  # a bundle that cannot be used
EXIT_MISSING_DEPENDENCY: Final = 69  # matplotlib or the TFLite interpreter missing
EXIT_CANT_WRITE: Final = 73  # the PNG cannot be written
EXIT_INTERRUPTED: Final = 130

PARTITIONS: Final = ("training", "validation", "testing")
#: train.py's defaults, used where the bundle's provenance does not record its own.
DEFAULT_PERCENTAGE: Final = 10.0
DEFAULT_SEED: Final = 59185
#: Spectrogram window and stride without a bundle: train.py's --window_size_ms / --window_stride_ms.
DEFAULT_WINDOW_MS: Final = 30
DEFAULT_STRIDE_MS: Final = 10
#: Longest file drawn: a picture of more has more frames than pixels (and costs hundreds of MB).
MAX_SPECTROGRAM_S: Final = 600
#: Spectrogram floor and colour range: the quietest 16-bit sound is about -97 dBFS.
FLOOR_DB: Final = -120.0
RANGE_DB: Final = 90.0
#: Samples per block pushed into the StreamingFrontend (kwsd.audio's own default block).
BLOCK_SAMPLES: Final = 8000
DPI: Final = 120
#: Any rate will do to read a header (open_audio wants a target).
DEFAULT_RATE_HZ: Final = 16000


class PlotError(KwsdError):
    """A setting plot.py does not accept (exit 64): names the flag and what was expected."""


# --------------------------------------------------------------------------------------
# matplotlib, lazily.


def _matplotlib() -> Any:
    """The matplotlib package, or RuntimeDependencyError naming the pip command."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeDependencyError(
            "matplotlib is not installed: pip install matplotlib (or pip install 'kwsd[train]')"
        ) from None
    return matplotlib


def _new_figure(width_in: float, height_in: float) -> Figure:
    """A Figure on its own Agg canvas: no pyplot, no global figure list, no display."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def check_output(out: Path) -> None:
    """OutputError now, rather than after the work, for a PNG path that cannot be written."""
    if out.is_dir():
        raise OutputError(f"{out}: is a directory, expected a .png file name")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: the folder {out.parent} does not exist")


def save_figure(figure: Figure, out: Path) -> Path:
    """Write ``figure`` as a PNG at ``out``; OutputError naming the file when it cannot be."""
    check_output(out)
    try:
        figure.savefig(out, format="png", dpi=DPI)
    except OSError as err:
        raise OutputError(f"{out}: cannot write the picture ({err.strerror or err})") from None
    return out


# --------------------------------------------------------------------------------------
# The confusion matrix.


@dataclass(frozen=True)
class SplitChoice:
    """How the data set is split and sampled (train.py's flags)."""

    validation_percentage: float = DEFAULT_PERCENTAGE
    testing_percentage: float = DEFAULT_PERCENTAGE
    silence_percentage: float = DEFAULT_PERCENTAGE
    unknown_percentage: float = DEFAULT_PERCENTAGE
    seed: int = DEFAULT_SEED


def split_of(bundle: Bundle) -> SplitChoice:
    """The split the bundle's provenance records (train.py, export.py, recipe.py record some
    of it, in different places); train.py's defaults for what it does not."""
    dataset = bundle.provenance.get("dataset")
    dataset = dataset if isinstance(dataset, dict) else {}
    split = dataset.get("split")
    split = split if isinstance(split, dict) else {}

    def number(key: str) -> float:
        for source in (split, dataset):
            value = source.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        return DEFAULT_PERCENTAGE

    seed = dataset.get("seed")
    return SplitChoice(
        validation_percentage=number("validation_percentage"),
        testing_percentage=number("testing_percentage"),
        silence_percentage=number("silence_percentage"),
        unknown_percentage=number("unknown_percentage"),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else DEFAULT_SEED,
    )


@dataclass(frozen=True)
class ConfusionResult:
    """Counts of (true, predicted) label pairs, rows = truth, both in the bundle's label order."""

    model_name: str
    labels: tuple[str, ...]
    matrix: npt.NDArray[np.int64]
    partition: str
    data_dir: Path

    @property
    def count(self) -> int:
        return int(self.matrix.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.matrix))

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else 0.0


def bundle_words(bundle: Bundle) -> tuple[str, ...]:
    """The bundle's labels that are words (folders of a data set): all but _silence_ and _unknown_."""
    return tuple(label for label in bundle.labels if label not in (SILENCE_LABEL, UNKNOWN_LABEL))


def dataset_settings(bundle: Bundle, split: SplitChoice) -> DatasetSettings:
    """The data set as the bundle sees it: its rate, clip length and words; no silence or unknown
    items for a bundle without that label."""
    from kwsd.frontend import FrontendKind
    from kwsd_tools.training.dataset import DatasetSettings

    spec = bundle.frontend
    return DatasetSettings(
        sample_rate_hz=spec.sample_rate_hz,
        clip_duration_ms=spec.clip_duration_ms,
        align_end=spec.kind is FrontendKind.EMBEDDING,
        wanted_words=bundle_words(bundle),
        silence_percentage=split.silence_percentage if SILENCE_LABEL in bundle.labels else 0.0,
        unknown_percentage=split.unknown_percentage if UNKNOWN_LABEL in bundle.labels else 0.0,
        validation_percentage=split.validation_percentage,
        testing_percentage=split.testing_percentage,
    )


def check_data_dir(bundle: Bundle, data_dir: Path) -> None:
    """Refuse, before any file is read, a data folder without a folder for each of the bundle's words."""
    from kwsd_tools.training.dataset import DatasetError, scan_data_dir

    if not data_dir.exists():
        raise InputNotFoundError(f"{data_dir}: no such data folder (--data_dir)")
    if not data_dir.is_dir():
        raise InputNotFoundError(f"{data_dir}: not a folder (--data_dir; expected {data_dir}/<word>/*.wav)")
    words = bundle_words(bundle)
    if not words:
        raise ModelError(
            f"{bundle.source}: labels {', '.join(bundle.labels)} name no word, so no data folder holds "
            f"its classes"
        )
    scan = scan_data_dir(data_dir)
    folders: dict[str, int] = {}
    for folder, count in scan.folders.items():
        folders[folder.lower()] = folders.get(folder.lower(), 0) + count
    present = [w for w in words if folders.get(w)]
    listed = ", ".join(sorted(scan.folders)) or "none"
    if not present:
        raise DatasetError(
            f"{data_dir}: none of the bundle's words ({', '.join(words)}) has a folder of .wav files "
            f"here (its word folders: {listed}); expected {data_dir}/<word>/*.wav for the words of "
            f"{bundle.source}"
        )
    missing = [w for w in words if w not in present]
    if missing:
        raise DatasetError(
            f"{data_dir}: no .wav files for the bundle's word(s) {', '.join(missing)} "
            f"(the bundle's words: {', '.join(words)}; the folder's: {listed})"
        )


def confusion_of(
    bundle: Bundle,
    data_dir: Path,
    *,
    partition: str = "testing",
    split: SplitChoice | None = None,
    workers: int | None = None,
) -> ConfusionResult:
    """Classify every item of ``partition`` with the bundle and count (true, predicted) pairs.

    The data set is loaded and split by tools/kwsd_tools/training/dataset.py, the features computed by
    tools/kwsd_tools/training/features.py with no augmentation (time shift 0, no noise on words; silence
    items get noise at a volume in [0, 1), as in training), the scores by kwsd's
    TfliteClassifier. Raises DatasetError, ModelError, RuntimeDependencyError.
    """
    from kwsd.classifier import TfliteClassifier
    from kwsd_tools.training.dataset import load_dataset
    from kwsd_tools.training.features import Augmentation, partition_features

    if partition not in PARTITIONS:
        raise PlotError(f"--partition: expected one of {', '.join(PARTITIONS)}, got {partition!r}")
    split = split or split_of(bundle)
    check_data_dir(bundle, data_dir)
    classifier = TfliteClassifier(bundle)  # a model the interpreter refuses fails before the data is read
    dataset = load_dataset(data_dir, dataset_settings(bundle, split), seed=split.seed)
    features = partition_features(
        dataset,
        bundle.frontend,
        partition,
        augmentation=Augmentation(background_volume=0.0, background_frequency=0.0, time_shift_ms=0),
        copies=1,
        seed=split.seed,
        cache_dir=None,
        workers=workers,
    )
    # Dataset label index -> bundle label index, by name (the orders may differ).
    to_bundle = np.array(
        [bundle.labels.index(label) if label in bundle.labels else -1 for label in dataset.labels], np.int64
    )
    truth = to_bundle[features.y]
    assert (truth >= 0).all(), "an item of a label the bundle lacks (its percentage should be 0)"
    predicted = np.array([int(np.argmax(classifier.classify(x))) for x in features.x], np.int64)
    size = len(bundle.labels)
    matrix = np.zeros((size, size), np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    log.info("%s on %s %s: %d clips", bundle.name, data_dir, partition, len(truth))
    return ConfusionResult(bundle.name, bundle.labels, matrix, partition, data_dir)


def confusion_figure(result: ConfusionResult) -> Figure:
    """The matrix as a picture: counts in the cells, colour = share of the row (the true label)."""
    labels = result.labels
    n = len(labels)
    side_in = max(5.0, 0.62 * n + 3.0)
    figure = _new_figure(side_in + 1.2, side_in)
    ax = figure.add_subplot()
    rows = result.matrix.sum(axis=1, keepdims=True)
    share = np.divide(result.matrix, rows, out=np.zeros(result.matrix.shape), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colourbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colourbar.set_label("share of the true label's clips", fontsize=11)
    font = 12 if n <= 8 else 10 if n <= 14 else 8
    for i in range(n):
        for j in range(n):
            count = int(result.matrix[i, j])
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=font,
                color="white" if share[i, j] > 0.5 else "black",
                fontweight="bold" if i == j else "normal",
            )
    ax.set_xticks(range(n), labels=list(labels), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=list(labels))
    ax.tick_params(labelsize=11)
    ax.set_xlabel("predicted label", fontsize=12)
    ax.set_ylabel("true label", fontsize=12)
    ax.set_title(
        f"{result.model_name} on {result.data_dir.name or result.data_dir} ({result.partition}): "
        f"accuracy {100 * result.accuracy:.1f}% ({result.correct}/{result.count}), N = {result.count}",
        fontsize=12,
    )
    return figure


# --------------------------------------------------------------------------------------
# The spectrogram and the model's features.


@dataclass(frozen=True)
class Spectrogram:
    """Log magnitude (dB re full scale), shape (bins, frames); frame f covers samples
    ``[f * stride, f * stride + window)``."""

    db: FloatArray
    sample_rate_hz: int
    window_samples: int
    stride_samples: int

    @property
    def frame_count(self) -> int:
        return int(self.db.shape[1])

    @property
    def top_hz(self) -> float:
        return self.sample_rate_hz / 2


def log_spectrogram(
    samples: Int16Array, sample_rate_hz: int, window_samples: int, stride_samples: int
) -> Spectrogram:
    """TensorFlow's AudioSpectrogram (periodic Hann window, FFT length the next power of two,
    magnitude, complete frames only), in dB: 20 log10 of the magnitude scaled so that a
    full-scale sine reads 0 dB, floored at -120 dB."""
    fft_size = 1 << (window_samples - 1).bit_length()
    count = 0 if len(samples) < window_samples else 1 + (len(samples) - window_samples) // stride_samples
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_samples) / window_samples)
    scale = 2.0 / window.sum() / 32768.0
    db = np.empty((fft_size // 2 + 1, count))
    chunk = 2048  # frames per FFT batch: bounds the temporary to a few MB
    for first in range(0, count, chunk):
        starts = np.arange(first, min(count, first + chunk)) * stride_samples
        frames = samples[starts[:, None] + np.arange(window_samples)[None, :]].astype(np.float64)
        magnitude = np.abs(np.fft.rfft(frames * window, fft_size)) * scale
        db[:, first : first + len(starts)] = 20 * np.log10(np.maximum(magnitude, 10 ** (FLOOR_DB / 20))).T
    return Spectrogram(db, sample_rate_hz, window_samples, stride_samples)


def read_native(path: Path) -> tuple[Int16Array, int]:
    """The whole file, mono int16 at its own sample rate, read by kwsd's reader."""
    with open_audio(path, DEFAULT_RATE_HZ) as reader:  # any rate: only the header is read here
        rate = reader.info.sample_rate_hz
    return read_wav(path, rate), rate


def stream_features(path: Path, spec: FrontendSpec) -> tuple[npt.NDArray[np.float32], int]:
    """Every frame the daemon computes over the whole file: kwsd's reader (resampled to the
    model's rate) in blocks into a StreamingFrontend. Returns (frames, feature_count) and the
    number of samples read at the model's rate."""
    frontend = StreamingFrontend(spec)
    parts: list[npt.NDArray[np.float32]] = []
    total = 0
    with open_audio(path, spec.sample_rate_hz) as reader:
        for block in reader.blocks(BLOCK_SAMPLES):
            total += len(block)
            parts.append(frontend.push(block))
    if not parts:
        return np.zeros((0, spec.feature_count), np.float32), 0
    return np.concatenate(parts), total


def _ms_to_samples(flag: str, ms: float, rate_hz: int) -> int:
    samples = round(ms * rate_hz / 1000)
    if not math.isfinite(ms) or samples < 1:
        raise PlotError(f"{flag}: expected a positive number of milliseconds, got {ms:g}")
    return samples


def spectrogram_figure(
    wav: Path,
    bundle: Bundle,
    *,
    window_ms: float | None = None,
    stride_ms: float | None = None,
    model_given: bool = True,
) -> Figure:
    """Two panels, one time axis in seconds over the whole file: the spectrogram (at the file's
    own rate) and the bundle's features (at the model's rate, as the daemon computes them).

    ``window_ms``/``stride_ms`` default to the bundle's front end when ``model_given``, else
    30/10 ms. Raises InputNotFoundError, AudioFormatError, PlotError.
    """
    spec = bundle.frontend
    default_window, default_stride = (
        (spec.window_size_ms, spec.window_stride_ms)
        if model_given
        else (DEFAULT_WINDOW_MS, DEFAULT_STRIDE_MS)
    )
    window_ms = default_window if window_ms is None else window_ms
    stride_ms = default_stride if stride_ms is None else stride_ms
    samples, rate = read_native(wav)
    duration_s = len(samples) / rate
    if duration_s > MAX_SPECTROGRAM_S:
        raise PlotError(
            f"{wav}: {duration_s:.0f} s of audio, more than the {MAX_SPECTROGRAM_S} s one picture shows; "
            f"cut a part with: sox {wav} part.wav trim START_S LENGTH_S"
        )
    window = _ms_to_samples("--window_ms", window_ms, rate)
    stride = _ms_to_samples("--stride_ms", stride_ms, rate)
    spectrogram = log_spectrogram(samples, rate, window, stride)
    features, model_samples = stream_features(wav, spec)
    if not spectrogram.frame_count or not len(features):
        raise AudioFormatError(
            f"{wav}: {1000 * duration_s:.0f} ms of audio, shorter than one window "
            f"({window_ms:g} ms for the spectrogram, {spec.window_size_ms} ms for the model)"
        )

    width_in = min(16.0, max(10.0, 5.0 + duration_s * 0.4))
    figure = _new_figure(width_in, 7.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))

    # Each column is drawn centred on its frame's centre, one stride wide.
    def extent(count: int, window_n: int, stride_n: int, rate_hz: int) -> tuple[float, float]:
        centre0 = window_n / 2
        return (centre0 - stride_n / 2) / rate_hz, (centre0 + (count - 0.5) * stride_n) / rate_hz

    left, right = extent(spectrogram.frame_count, window, stride, rate)
    peak = float(spectrogram.db.max())
    image = top.imshow(
        spectrogram.db,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap="magma",
        extent=(left, right, 0.0, spectrogram.top_hz),
        vmin=max(FLOOR_DB, peak - RANGE_DB),
        vmax=peak,
    )
    bar = figure.colorbar(image, ax=top, pad=0.01)
    bar.set_label("magnitude (dB re full scale)", fontsize=11)
    top.set_ylabel("frequency (Hz)", fontsize=12)
    top.set_title(
        f"{wav.name}: spectrogram, {rate} Hz, {window_ms:g} ms Hann window every {stride_ms:g} ms "
        f"({spectrogram.frame_count} frames)",
        fontsize=12,
    )

    left, right = extent(len(features), spec.window_samples, spec.stride_samples, spec.sample_rate_hz)
    image = bottom.imshow(
        features.T,
        origin="lower",
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        extent=(left, right, -0.5, spec.feature_count - 0.5),
    )
    bar = figure.colorbar(image, ax=bottom, pad=0.01)
    bar.set_label("feature value", fontsize=11)
    if spec.kind is FrontendKind.MFCC and spec.mfcc is not None and spec.mfcc.append_energy:
        what = "MFCC index (0: log energy)"
    elif spec.kind in (FrontendKind.MFCC, FrontendKind.TF_MFCC):
        what = "MFCC index"
    elif spec.kind is FrontendKind.TF_AVERAGE:
        what = f"spectrogram bins / {spec.average_window_bins}"
    else:
        what = "filterbank channel"
    bottom.set_ylabel(what, fontsize=12)
    bottom.set_xlabel("time (s)", fontsize=12)
    bottom.set_title(
        f"{bundle.name}'s features, as the daemon computes them: {spec.kind.value}, "
        f"{spec.window_size_ms}/{spec.window_stride_ms} ms window/stride, {len(features)} frames",
        fontsize=12,
    )
    ticks = np.arange(0, spec.feature_count, max(1, spec.feature_count // 8))
    bottom.set_yticks(ticks)
    for ax in (top, bottom):
        ax.tick_params(labelsize=10)
    bottom.set_xlim(0.0, duration_s)
    log.info("%s: %.2f s, %d samples at the model's rate", wav, duration_s, model_samples)
    return figure


# --------------------------------------------------------------------------------------
# Command line.


def _load_bundle(path: str | None) -> tuple[Bundle, bool]:
    if path is None:
        return read_bundle(demo_bundle_path()), False
    return read_bundle(path), True


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    check_output(out)
    if args.command == "confusion":
        bundle = read_bundle(args.bundle)
        base = split_of(bundle)
        split = SplitChoice(
            validation_percentage=_or(args.validation_percentage, base.validation_percentage),
            testing_percentage=_or(args.testing_percentage, base.testing_percentage),
            silence_percentage=_or(args.silence_percentage, base.silence_percentage),
            unknown_percentage=_or(args.unknown_percentage, base.unknown_percentage),
            seed=base.seed if args.seed is None else args.seed,
        )
        from kwsd_tools.training.dataset import DatasetError

        try:
            dataset_settings(bundle, split)
        except DatasetError as err:  # a percentage out of range: a setting, not the data
            raise PlotError(str(err)) from None
        check_data_dir(bundle, Path(args.data_dir))  # the user's input first, then the library
        _matplotlib()  # before the features are computed, not after
        result = confusion_of(bundle, Path(args.data_dir), partition=args.partition, split=split)
        figure = confusion_figure(result)
        save_figure(figure, out)
        print(
            f"{out}: {result.model_name} on {result.partition}: accuracy {100 * result.accuracy:.1f}% "
            f"({result.correct}/{result.count})"
        )
        return EXIT_OK
    bundle, given = _load_bundle(args.model)
    figure = spectrogram_figure(
        Path(args.wav), bundle, window_ms=args.window_ms, stride_ms=args.stride_ms, model_given=given
    )
    save_figure(figure, out)
    print(f"{out}: spectrogram and {bundle.name}'s features of {args.wav}")
    return EXIT_OK


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/plot.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="say what is being done")
    sub = parser.add_subparsers(dest="command", required=True)

    confusion = sub.add_parser("confusion", help="confusion matrix of a bundle on a data set, as a PNG")
    confusion.add_argument("bundle", help="the .kwsd model bundle")
    confusion.add_argument("--data_dir", required=True, help="Speech Commands-style data: DIR/<word>/*.wav")
    confusion.add_argument("--partition", choices=PARTITIONS, default="testing", help="default: testing")
    confusion.add_argument("--out", default="confusion.png", help="PNG to write (default: confusion.png)")
    for name in ("validation", "testing", "silence", "unknown"):
        confusion.add_argument(
            f"--{name}_percentage",
            type=float,
            default=None,
            help="as train.py's flag (default: the bundle's provenance, else 10)",
        )
    confusion.add_argument(
        "--seed", type=int, default=None, help="as train.py's (default: the bundle's, else 59185)"
    )

    spectrogram = sub.add_parser("spectrogram", help="spectrogram and model features of a WAV, as a PNG")
    spectrogram.add_argument("wav", help="a WAV file of any length, rate and channel count")
    spectrogram.add_argument("-m", "--model", default=None, help="model bundle (default: the built-in demo)")
    spectrogram.add_argument(
        "--out", default="spectrogram.png", help="PNG to write (default: spectrogram.png)"
    )
    spectrogram.add_argument(
        "--window_ms",
        type=float,
        default=None,
        help="spectrogram window (default: the bundle's with -m, else 30)",
    )
    spectrogram.add_argument(
        "--stride_ms",
        type=float,
        default=None,
        help="spectrogram stride (default: the bundle's with -m, else 10)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format=f"{TOOL}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return run(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except KwsdError as err:
        sys.stdout.flush()
        print(f"{TOOL}: error: {err}", file=sys.stderr)
        return _exit_code(err)


def _exit_code(err: KwsdError) -> int:
    if isinstance(err, PlotError):
        return EXIT_BAD_SETTING
    if isinstance(err, InputNotFoundError):
        return EXIT_NO_INPUT
    if isinstance(err, ModelError):
        return EXIT_BAD_MODEL
    if isinstance(err, RuntimeDependencyError):
        return EXIT_MISSING_DEPENDENCY
    if isinstance(err, OutputError):
        return EXIT_CANT_WRITE
    return EXIT_BAD_DATA  # AudioFormatError, StreamError, DatasetError


if __name__ == "__main__":
    sys.exit(main())
