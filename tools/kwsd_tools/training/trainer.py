"""The training loop: train.py's schedule, log lines, evaluations and checkpoints, in tf.keras.

* Phases: ``how_many_training_steps`` and ``learning_rate`` are lists of equal length; phase k
  runs its steps at its rate (train.py's rule). A resumed run continues at the step after the
  checkpoint's, in the phase (and at the rate) that step belongs to.
* Every step: ``Step #N: rate R, accuracy A%, cross entropy X`` (train.py's line) goes to the
  run's log file; the terminal shows it on a progress bar with the ETA (or every
  ``log_every`` steps when stderr is not a terminal).
* Every ``eval_step_interval`` steps and at the end: the validation confusion matrix with the
  label names on both axes (rows = truth, columns = prediction) and
  ``Step N: Validation accuracy = A% (N=count)``; at the end the same for the test set and
  ``Final test accuracy = A% (N=count)``.
* Checkpoints ``<train_dir>/<arch>.ckpt-<step>`` every ``save_step_interval`` steps and at the
  last, with ``<arch>_labels.txt`` and a ``.json`` beside each holding what a resumed run or
  the export must agree with (architecture, labels, front end, model options).
* TensorBoard (``summaries_dir``/train and /validation): ``cross_entropy``, ``accuracy`` and
  ``learning_rate`` scalars; at each evaluation weight and activation histograms, the
  confusion matrix as an image and as a labelled table (the Text tab), and a few example
  feature images once.
* ``check_nans``: a step whose loss or gradients are not finite stops the run, naming the
  first layer whose output (or weights) went non-finite.
* Fine-tuning (``--fine_tune_from``, :class:`FineTuneBase`): the model's weights (batch-norm
  statistics included) come from another run's checkpoint, given as its prefix or as a bundle
  whose provenance records the checkpoint it was exported from; the optimizer and the step do
  not. The checkpoint must agree with this run as a resumed one must (architecture, labels,
  front end, model options, dropout); then this run's schedule runs from step 1, and every
  checkpoint record says what it was fine-tuned from.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from kwsd_tools.training.augment import SpecAugment
from kwsd_tools.training.features import FeatureSet

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """A training run that cannot go on: one line naming the flag, file or layer."""


@dataclass(frozen=True)
class Schedule:
    """train.py's phases: ``steps[k]`` steps at ``rates[k]``."""

    steps: tuple[int, ...]
    rates: tuple[float, ...]

    @classmethod
    def parse(cls, steps_text: str, rates_text: str) -> Schedule:
        try:
            steps = tuple(int(s) for s in steps_text.split(","))
        except ValueError:
            raise TrainingError(
                f"--how_many_training_steps: expected comma-separated step counts, got {steps_text!r}"
            ) from None
        try:
            rates = tuple(float(s) for s in rates_text.split(","))
        except ValueError:
            raise TrainingError(
                f"--learning_rate: expected comma-separated learning rates, got {rates_text!r}"
            ) from None
        if len(steps) != len(rates):
            raise TrainingError(
                f"--how_many_training_steps and --learning_rate must be lists of equal length, "
                f"got {len(steps)} step counts ({steps_text}) and {len(rates)} rates ({rates_text})"
            )
        if any(s <= 0 for s in steps):
            raise TrainingError(f"--how_many_training_steps: every phase needs > 0 steps, got {steps_text}")
        if any(not (r > 0 and math.isfinite(r)) for r in rates):
            raise TrainingError(f"--learning_rate: every rate must be > 0, got {rates_text}")
        return cls(steps, rates)

    @property
    def total(self) -> int:
        return sum(self.steps)

    def rate_at(self, step: int) -> float:
        """The rate of step ``step`` (1-based)."""
        end = 0
        for steps, rate in zip(self.steps, self.rates, strict=True):
            end += steps
            if step <= end:
                return rate
        return self.rates[-1]


@dataclass(frozen=True)
class RunSettings:
    architecture: str
    labels: tuple[str, ...]
    schedule: Schedule
    batch_size: int = 100
    eval_step_interval: int = 400
    save_step_interval: int = 100
    optimizer: str = "adam"
    seed: int = 59185
    check_nans: bool = False
    log_every: int = 100
    #: Every step's line on the console, exactly as train.py prints it (--verbosity=DEBUG),
    #: terminal or not; no progress bar.
    every_step: bool = False
    #: What a resumed run must match (architecture, labels, front end, model options).
    identity: dict[str, Any] = field(default_factory=dict)
    #: Recorded beside each checkpoint too, not checked (the data set, for tools/export.py).
    record: dict[str, Any] = field(default_factory=dict)
    #: Time and frequency masks drawn afresh for every training batch (none by default).
    spec_augment: SpecAugment = field(default_factory=SpecAugment)


# --- text ------------------------------------------------------------------------------------


def confusion(truth: Any, predicted: Any, size: int) -> npt.NDArray[np.int64]:
    matrix = np.zeros((size, size), np.int64)
    np.add.at(matrix, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def confusion_text(matrix: npt.NDArray[np.int64], labels: Sequence[str]) -> str:
    """The confusion matrix with the label names on both axes (rows = truth)."""
    width = max(6, *(len(label) for label in labels)) + 1
    lines = [" " * width + "".join(f"{label:>{width}}" for label in labels)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{label:>{width}}" + "".join(f"{v:>{width}d}" for v in row))
    lines.append(f"{'':>{width}}(rows: true label; columns: predicted label)")
    return "\n".join(lines)


def confusion_markdown(matrix: npt.NDArray[np.int64], labels: Sequence[str]) -> str:
    head = "| truth \\ predicted | " + " | ".join(labels) + " |"
    rule = "|---|" + "---|" * len(labels)
    rows = [
        f"| **{label}** | " + " | ".join(str(v) for v in row) + " |"
        for label, row in zip(labels, matrix, strict=True)
    ]
    return "\n".join([head, rule, *rows])


#: source name -> label -> (correct, count); "all" (every label) is a label key too.
Breakdown = dict[str, dict[str, tuple[int, int]]]
ALL = "all"


def accuracy_breakdown(
    truth: Any, predicted: Any, labels: Sequence[str], source: Any = None, source_names: Sequence[str] = ()
) -> Breakdown:
    """Correct and total per source and per label (word), and over all labels of each source.
    Without sources, one source named ``all``."""
    truth = np.asarray(truth, np.int64)
    predicted = np.asarray(predicted, np.int64)
    if source is None or not source_names:
        source, source_names = np.zeros(len(truth), np.int64), (ALL,)
    source = np.asarray(source, np.int64)
    out: Breakdown = {}
    for k, name in enumerate(source_names):
        mine = source == k
        hits = mine & (truth == predicted)
        row = {ALL: (int(hits.sum()), int(mine.sum()))}
        for index, label in enumerate(labels):
            of_label = truth == index
            row[label] = (int((hits & of_label).sum()), int((mine & of_label).sum()))
        out[name] = row
    return out


def breakdown_text(breakdown: Breakdown, labels: Sequence[str], title: str) -> str:
    """``title`` then one row per source: accuracy over all its inputs, then per word
    (percent, count in brackets; ``-`` where the source has none of that word; ``no clips``
    and nothing else for a source with none in this partition, a capture set's validation)."""
    columns = [ALL, *labels]
    cells = {
        name: [f"{100 * c / n:.1f} ({n})" if n else "-" for c, n in (row[col] for col in columns)]
        if row[ALL][1]
        else ["no clips", *[""] * len(labels)]
        for name, row in breakdown.items()
    }
    width = max(11, *(len(c) for c in columns), *(len(v) for row in cells.values() for v in row)) + 1
    name_width = max(7, *(len(name) for name in breakdown)) + 1
    lines = [f"{title} by source and word (%, count):"]
    lines.append(f"{'source':>{name_width}}" + "".join(f"{c:>{width}}" for c in columns))
    for name, row in cells.items():
        lines.append((f"{name:>{name_width}}" + "".join(f"{v:>{width}}" for v in row)).rstrip())
    return "\n".join(lines)


def breakdown_metrics(breakdown: Breakdown) -> dict[str, Any]:
    """The breakdown for a bundle's metrics or a JSON record: source -> accuracy, count, words."""
    return {
        name: {
            "accuracy": round(row[ALL][0] / row[ALL][1], 5) if row[ALL][1] else None,
            "count": row[ALL][1],
            "words": {
                label: {"accuracy": round(c / n, 5), "count": n}
                for label, (c, n) in row.items()
                if label != ALL and n
            },
        }
        for name, row in breakdown.items()
    }


class Progress:
    """A one-line progress bar with the ETA on a terminal; plain lines every ``every`` steps else."""

    def __init__(
        self, total: int, first: int, stream: TextIO, every: int, *, every_step: bool = False
    ) -> None:
        self.total = total
        self.first = first
        self.stream = stream
        self.every = max(1, every)
        self.every_step = every_step
        self.tty = stream.isatty() and not every_step
        self.started = time.monotonic()
        self._shown = False

    def step(self, step: int, line: str) -> None:
        done = step - self.first + 1
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate else 0.0
        text = (
            f"{line} | {step}/{self.total} {100 * step / self.total:5.1f}% {rate:.1f} steps/s ETA {_hms(eta)}"
        )
        if self.every_step:
            self.stream.write(line + "\n")  # train.py's line, alone, as a notebook cell shows it
            self.stream.flush()
        elif self.tty:
            width = 30
            filled = int(width * step / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {text}\x1b[K")
            self.stream.flush()
            self._shown = True
        elif step % self.every == 0 or step == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()

    def interrupt(self) -> None:
        """End the bar's line before other output."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


#: Runs estimated to take longer than this get a pointer to the fast settings.
SLOW_RUN_S = 30 * 60


def estimate_text(steps_left: int, steps_done: int, seconds: float) -> str:
    """``training: about 5 h 0 min for the 18,000 steps left (1.0 steps/s so far) ...``."""
    rate = steps_done / seconds if seconds > 0 else 0.0
    left_s = steps_left / rate if rate else float("inf")
    text = (
        f"training: about {_duration(left_s)} for the {steps_left:,} steps left "
        f"({rate:.1f} steps/s over the first {steps_done}, compilation included)"
    )
    if left_s > SLOW_RUN_S:
        text += (
            "; for a model in minutes: --model_architecture=ds_cnn (kwsd's default) or tiny_conv, "
            "--window_stride_ms=20 --feature_bin_count=13, fewer --how_many_training_steps"
        )
    return text


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_prefix(train_dir: Path, architecture: str, step: int) -> Path:
    return train_dir / f"{architecture}.ckpt-{step}"


def read_checkpoint_identity(prefix: Path, *, where: str | None = None) -> dict[str, Any]:
    """The .json beside a checkpoint; TrainingError naming the file when it is missing or bad.
    ``where`` starts the messages (default ``--start_checkpoint <prefix>``)."""
    where = where or f"--start_checkpoint {prefix}"
    info_path = Path(f"{prefix}.json")
    index_path = Path(f"{prefix}.index")
    if not index_path.exists():
        raise TrainingError(f"{where}: no such checkpoint (no {index_path.name})")
    try:
        data = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise TrainingError(
            f"{where}: {info_path.name} is missing (not written by kwsd's tools/train.py?)"
        ) from None
    except (OSError, ValueError) as err:
        raise TrainingError(f"{where}: cannot read {info_path.name}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        raise TrainingError(f"{where}: {info_path.name} is not a kwsd checkpoint record")
    return data


def check_identity(
    prefix: Path, saved: dict[str, Any], wanted: dict[str, Any], *, where: str | None = None
) -> None:
    """A checkpoint from another architecture, label set or front end is refused, naming what
    differs; ``where`` starts the message (default ``--start_checkpoint <prefix>``)."""
    where = where or f"--start_checkpoint {prefix}"
    for key, value in wanted.items():
        if key in saved and saved[key] != value:
            raise TrainingError(
                f"{where}: made with {key} {_short(saved[key])}, this run has {_short(value)}"
            )


FINE_TUNE_FLAG = "--fine_tune_from"


@dataclass(frozen=True)
class FineTuneBase:
    """The weights a fine-tuning run starts from: :func:`fine_tune_base` finds and checks them.

    ``path``: as the user gave it, a checkpoint prefix or a ``.kwsd`` bundle; ``checkpoint``:
    the checkpoint read (``path`` itself, or the one the bundle was exported from);
    ``record``: that checkpoint's ``.json``; ``bundle_sha256``: the bundle's model sha256 (the
    name kwsd's events and captures give a model), None for a checkpoint.
    """

    path: Path
    checkpoint: Path
    record: dict[str, Any]
    bundle_sha256: str | None = None

    @property
    def step(self) -> int:
        """The step of the base checkpoint."""
        return int(self.record["step"])

    @property
    def where(self) -> str:
        """How messages name it: the flag, the file, and for a bundle its checkpoint."""
        if self.bundle_sha256 is None:
            return f"{FINE_TUNE_FLAG} {self.path}"
        return f"{FINE_TUNE_FLAG} {self.path} (checkpoint {self.checkpoint})"

    def provenance(self) -> dict[str, Any]:
        """``fine_tuned_from`` in checkpoint records and bundle provenance."""
        out: dict[str, Any] = {"path": str(self.path), "checkpoint": str(self.checkpoint), "step": self.step}
        if self.bundle_sha256 is not None:
            out["bundle_sha256"] = self.bundle_sha256
        return out

    def describe(self) -> str:
        """``model.kwsd (sha256 83ac33d49aca...; exported from train/tiny_conv.ckpt-10, step 10)``."""
        if self.bundle_sha256 is None:
            return f"checkpoint {self.path} (step {self.step})"
        return (
            f"bundle {self.path} (sha256 {self.bundle_sha256[:12]}...; exported from {self.checkpoint}, "
            f"step {self.step})"
        )


def fine_tune_base(path: Path) -> FineTuneBase:
    """The base of ``--fine_tune_from PATH``: a checkpoint prefix, or a bundle whose provenance
    records the checkpoint it was exported from (tools/export.py's and tools/train.py's). A
    bundle's model is converted for inference and carries no trainable weights, so its
    checkpoint must still be there. TrainingError naming the flag and the file otherwise."""
    where = f"{FINE_TUNE_FLAG} {path}"
    if path.is_dir():
        raise TrainingError(
            f"{where}: a folder; expected a .kwsd bundle or a checkpoint <train_dir>/<arch>.ckpt-<step>"
        )
    prefix = _checkpoint_file_prefix(path)
    if prefix is not None:
        raise TrainingError(f"{where}: one of a checkpoint's files; give the checkpoint as {prefix}")
    if not path.exists():
        if not Path(f"{path}.index").exists():
            raise TrainingError(
                f"{where}: no such bundle or checkpoint (expected a .kwsd bundle made by tools/export.py, "
                f"or a checkpoint <train_dir>/<arch>.ckpt-<step> with its .index beside it)"
            )
        return FineTuneBase(path, path, read_checkpoint_identity(path, where=where))
    from kwsd.bundle import read_bundle
    from kwsd.errors import KwsdError

    try:
        bundle = read_bundle(path)
    except KwsdError as err:
        reason = str(err).removeprefix(f"{path}: ")
        raise TrainingError(f"{where}: not a kwsd bundle ({reason})") from None
    provenance = bundle.provenance
    dataset = provenance.get("dataset")
    recorded = dataset.get("checkpoint") if isinstance(dataset, dict) else None
    if not isinstance(recorded, str) or not recorded:
        raise TrainingError(
            f"{where}: made by {provenance.get('tool', 'an unknown tool')}, which records no checkpoint; "
            "a bundle carries no trainable weights (its model is converted for inference), so "
            "fine-tune from a bundle made by tools/export.py or from a checkpoint "
            "<train_dir>/<arch>.ckpt-<step>"
        )
    checkpoint = Path(recorded)
    if not Path(f"{checkpoint}.index").exists():
        relative = "" if checkpoint.is_absolute() else ", from the folder the export ran in"
        raise TrainingError(
            f"{where}: exported from checkpoint {checkpoint}{relative}, which is not there any more "
            f"(no {checkpoint.name}.index); a bundle carries no trainable weights, so it needs that "
            "checkpoint: restore it, or fine-tune from another checkpoint"
        )
    where = f"{where} (checkpoint {checkpoint})"
    record = read_checkpoint_identity(checkpoint, where=where)
    for key, ours in (("labels", list(bundle.labels)), ("frontend", bundle.frontend.to_dict())):
        if key in record and record[key] != ours:
            raise TrainingError(
                f"{where}: the checkpoint now holds a model with {key} {_short(record[key])}, the "
                f"bundle has {_short(ours)} (the checkpoint was written again after the export)"
            )
    return FineTuneBase(path, checkpoint, record, bundle.sha256)


def _checkpoint_file_prefix(path: Path) -> Path | None:
    """The checkpoint prefix when ``path`` is one of its files (``.index``, ``.json``,
    ``.data-00000-of-00001``) and the checkpoint is there, else None."""
    name = path.name
    for marker in (".index", ".json", ".data-"):
        head, found, _ = name.rpartition(marker)
        if found and head and ".ckpt-" in head:
            prefix = path.with_name(head)
            return prefix if Path(f"{prefix}.index").exists() else None
    return None


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


# --- the loop -------------------------------------------------------------------------------


@dataclass
class Result:
    last_step: int
    validation_accuracy: float | None
    test_accuracy: float | None
    test_matrix: npt.NDArray[np.int64] | None
    checkpoint: Path
    seconds: float
    steps_per_second: float
    validation_breakdown: Breakdown = field(default_factory=dict)
    test_breakdown: Breakdown = field(default_factory=dict)


def train(
    model: Any,
    settings: RunSettings,
    *,
    training: FeatureSet,
    validation: FeatureSet,
    testing: FeatureSet,
    train_dir: Path,
    summaries_dir: Path | None,
    start_checkpoint: Path | None = None,
    fine_tune: FineTuneBase | None = None,
    stream: TextIO | None = None,
) -> Result:
    """Run the schedule (from a checkpoint's step when given; with ``fine_tune``, from step 1
    on the base's weights); returns the final figures."""
    import tensorflow as tf

    stream = stream or sys.stderr
    labels = list(settings.labels)
    schedule = settings.schedule
    train_dir.mkdir(parents=True, exist_ok=True)
    (train_dir / f"{settings.architecture}_labels.txt").write_text("".join(f"{label}\n" for label in labels))
    optimizer = _optimizer(tf, settings.optimizer, schedule.rates[0])
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_var)
    if fine_tune is not None and start_checkpoint is not None:
        raise TrainingError(fine_tune_conflict(start_checkpoint, fine_tune.path))
    if fine_tune is not None:
        _load_weights(tf, model, fine_tune, settings.identity)
    if start_checkpoint is not None:
        saved = read_checkpoint_identity(start_checkpoint)
        check_identity(start_checkpoint, saved, settings.identity)
        checkpoint.read(str(start_checkpoint)).expect_partial()
        if int(step_var.numpy()) != int(saved["step"]):
            raise TrainingError(f"--start_checkpoint {start_checkpoint}: its step does not match its record")
        log.info("resumed from %s at step %d", start_checkpoint, int(step_var.numpy()))
    first = int(step_var.numpy()) + 1
    if first > schedule.total:
        raise TrainingError(
            f"--start_checkpoint: already at step {first - 1}, the schedule ends at step {schedule.total}"
        )

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    writers = _writers(tf, summaries_dir)

    train_steps = make_train_steps(model, optimizer, loss_fn)
    rng = np.random.default_rng([settings.seed, first])
    progress = Progress(schedule.total, first, stream, settings.log_every, every_step=settings.every_step)
    run_log = (train_dir / "train.log").open("a", encoding="utf-8")
    started = time.monotonic()
    validation_accuracy: float | None = None
    validation_breakdown: Breakdown = {}
    sampling = _sampling_probabilities(training)
    masks = settings.spec_augment
    fill = training.x.mean(axis=(0, 1)).astype(np.float32) if masks.active and len(training) else None
    last = first - 1
    try:
        if first == 1 and writers:
            _feature_images(tf, writers["train"], training, labels)
        step = first
        while step <= schedule.total:
            # One call runs the steps up to the next evaluation or checkpoint (at most
            # STEPS_PER_CALL): the per-step Python and dispatch cost is paid once per call.
            end = min(
                schedule.total,
                step + STEPS_PER_CALL - 1,
                _next_multiple(step, settings.eval_step_interval),
                _next_multiple(step, settings.save_step_interval),
            )
            count = end - step + 1
            if sampling is None:
                index = rng.integers(0, len(training), (count, settings.batch_size))
            else:  # several sources, weighted (--data_dir NAME=DIR:WEIGHT)
                index = rng.choice(len(training), (count, settings.batch_size), p=sampling)
            rates = np.array([schedule.rate_at(s) for s in range(step, end + 1)], np.float32)
            xs = training.x[index]
            if fill is not None:
                # Masks from their own generator, seeded by the call's first step: the batch
                # draws stay what they are without masks, and a resumed run masks alike.
                mask_rng = np.random.default_rng([settings.seed, step, 0x5A])
                xs = masks.apply(xs.reshape(-1, *xs.shape[2:]), fill, mask_rng).reshape(xs.shape)
            losses, accuracies, finite = (t.numpy() for t in train_steps(xs, training.y[index], rates))
            for k in range(count):
                current = step + k
                if settings.check_nans and not finite[k]:
                    progress.interrupt()
                    step_var.assign(current)
                    raise TrainingError(_nan_report(tf, model, training.x[index[k]], current))
                # train.py's exact format (its rate with %f).
                line = (
                    f"Step #{current}: rate {rates[k]:f}, accuracy {100 * accuracies[k]:.1f}%, "
                    f"cross entropy {losses[k]:.6f}"
                )
                run_log.write(line + "\n")
                progress.step(current, line)
                if writers:
                    with writers["train"].as_default(step=current):
                        tf.summary.scalar("cross_entropy", float(losses[k]))
                        tf.summary.scalar("accuracy", float(accuracies[k]))
                        tf.summary.scalar("learning_rate", float(rates[k]))
            step_var.assign(end)
            if last < first and end < schedule.total:
                # After the first call (compilation included, so on the slow side): how long
                # the whole run will take, said before the user waits for it.
                progress.interrupt()
                stream.write(estimate_text(schedule.total - end, count, time.monotonic() - started) + "\n")
            last, step = end, end + 1
            is_last = end == schedule.total
            if end % settings.eval_step_interval == 0 or is_last:
                progress.interrupt()
                validation_accuracy, matrix, validation_breakdown = _report(
                    model,
                    validation,
                    labels,
                    title=f"Step {end}: Validation accuracy",
                    sinks=(stream, run_log),
                )
                if writers:
                    _eval_summaries(
                        tf, writers, model, data=validation, labels=labels, step=end, matrix=matrix
                    )
                    _breakdown_summaries(tf, writers["validation"], validation_breakdown, step=end)
            if end % settings.save_step_interval == 0 or is_last:
                _save(checkpoint, train_dir, settings, end)
    except KeyboardInterrupt:
        progress.interrupt()
        if last >= first:
            path = _save(checkpoint, train_dir, settings, last)
            stream.write(f"interrupted: saved {path} (resume with --start_checkpoint {path})\n")
        raise
    finally:
        run_log.flush()
    seconds = time.monotonic() - started
    steps_done = last - first + 1
    progress.interrupt()
    test_accuracy, test_matrix, test_breakdown = _report(
        model, testing, labels, title="Final test accuracy", sinks=(stream, run_log)
    )
    run_log.close()
    for writer in writers.values():
        writer.flush()
    return Result(
        last_step=last,
        validation_accuracy=validation_accuracy,
        test_accuracy=test_accuracy,
        test_matrix=test_matrix,
        checkpoint=checkpoint_prefix(train_dir, settings.architecture, last),
        seconds=seconds,
        steps_per_second=steps_done / seconds if seconds > 0 else 0.0,
        validation_breakdown=validation_breakdown,
        test_breakdown=test_breakdown,
    )


def fine_tune_conflict(start_checkpoint: Path, fine_tune_from: Path) -> str:
    """The message for ``--start_checkpoint`` and ``--fine_tune_from`` given together."""
    return (
        f"--start_checkpoint {start_checkpoint} and {FINE_TUNE_FLAG} {fine_tune_from}: give one "
        f"(--start_checkpoint resumes a run at its step, with its optimizer; {FINE_TUNE_FLAG} starts "
        "a new run at step 1 from its weights)"
    )


def _load_weights(tf: Any, model: Any, base: FineTuneBase, identity: dict[str, Any]) -> None:
    """The base checkpoint's model variables into ``model`` (not its optimizer or step)."""
    check_identity(base.checkpoint, base.record, identity, where=base.where)
    try:
        status = tf.train.Checkpoint(model=model).read(str(base.checkpoint))
        status.expect_partial()  # the optimizer's slots and the step stay in the file
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingError(
            f"{base.where}: cannot load its weights into this run's model ({first})"
        ) from None
    log.debug("fine-tuning from %s", base.describe())  # train.py says so on the console


def _sampling_probabilities(training: FeatureSet) -> npt.NDArray[np.float64] | None:
    """Each pool input's chance of being drawn, or None for uniform draws (every weight equal:
    then the batches are exactly what they were before weights existed)."""
    if training.weight is None or len(training.weight) == 0:
        return None
    weight = np.asarray(training.weight, np.float64)
    if np.all(weight == weight[0]):
        return None
    shares: npt.NDArray[np.float64] = weight / weight.sum()
    return shares


def _breakdown_summaries(tf: Any, writer: Any, breakdown: Breakdown, *, step: int) -> None:
    """``accuracy_by_source/<source>`` and ``accuracy_by_word/<source>/<word>`` scalars."""
    with writer.as_default(step=step):
        for name, row in breakdown.items():
            for label, (correct, count) in row.items():
                if not count:
                    continue
                tag = f"accuracy_by_source/{name}" if label == ALL else f"accuracy_by_word/{name}/{label}"
                tf.summary.scalar(tag, correct / count)


#: Most training steps one call of the compiled step function runs.
STEPS_PER_CALL = 25
#: Checkpoints kept in train_dir (train.py's Saver keeps 5 too); older ones are deleted.
CHECKPOINTS_KEPT = 5


def _next_multiple(step: int, interval: int) -> int:
    """The first multiple of ``interval`` at or after ``step``."""
    return -(-step // interval) * interval


def make_train_steps(model: Any, optimizer: Any, loss_fn: Any) -> Any:
    """A compiled function running ``n`` training steps in one call.

    ``(xs [n, batch, frames, features], ys [n, batch], rates [n])`` -> per-step
    ``(cross entropy [n], accuracy [n], finite [n])``; step k runs at ``rates[k]`` on batch k.
    The optimizer's variables are made first (none may be created inside the loop).
    """
    import tensorflow as tf

    optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]  # TensorFlow has no types
    def train_steps(xs: Any, ys: Any, rates: Any) -> tuple[Any, Any, Any]:
        n = tf.shape(xs)[0]
        losses = tf.TensorArray(tf.float32, size=n)
        accuracies = tf.TensorArray(tf.float32, size=n)
        finites = tf.TensorArray(tf.bool, size=n)
        for k in tf.range(n):
            optimizer.learning_rate.assign(rates[k])
            with tf.GradientTape() as tape:
                logits = model(xs[k], training=True)
                loss = loss_fn(ys[k], logits)
            grads = tape.gradient(loss, model.trainable_variables)
            finite = tf.math.is_finite(loss)
            for grad in grads:
                if grad is not None:
                    finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(grad)))
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            hits = tf.cast(tf.equal(tf.argmax(logits, axis=1), tf.cast(ys[k], tf.int64)), tf.float32)
            losses = losses.write(k, loss)
            accuracies = accuracies.write(k, tf.reduce_mean(hits))
            finites = finites.write(k, finite)
        return losses.stack(), accuracies.stack(), finites.stack()

    return train_steps


def predict(model: Any, features: npt.NDArray[np.float32], batch: int = 512) -> npt.NDArray[np.float32]:
    """Softmax scores of the Keras model (eval mode) for every input."""
    import tensorflow as tf

    out = [
        tf.nn.softmax(model(features[i : i + batch], training=False)).numpy()
        for i in range(0, len(features), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _optimizer(tf: Any, name: str, rate: float) -> Any:
    if name == "gradient_descent":
        return tf.keras.optimizers.SGD(rate)
    if name == "momentum":
        return tf.keras.optimizers.SGD(rate, momentum=0.9)
    if name == "adam":
        return tf.keras.optimizers.Adam(rate)
    raise TrainingError(f"--optimizer: expected gradient_descent, momentum or adam, got {name!r}")


def _writers(tf: Any, summaries_dir: Path | None) -> dict[str, Any]:
    if summaries_dir is None:
        return {}
    return {
        name: tf.summary.create_file_writer(str(summaries_dir / name)) for name in ("train", "validation")
    }


def _report(
    model: Any, data: FeatureSet, labels: list[str], *, title: str, sinks: Sequence[TextIO]
) -> tuple[float, npt.NDArray[np.int64], Breakdown]:
    """Print the labelled confusion matrix, ``<title> = A% (N=count)`` and the accuracy by
    source and word; (accuracy, matrix, breakdown)."""
    predicted = np.argmax(predict(model, data.x), axis=1) if len(data) else np.zeros(0, np.int64)
    accuracy = float(np.mean(predicted == data.y)) if len(data) else 0.0
    matrix = confusion(data.y, predicted, len(labels))
    breakdown = accuracy_breakdown(data.y, predicted, labels, data.source, data.source_names)
    text = (
        f"{confusion_text(matrix, labels)}\n{title} = {100 * accuracy:.1f}% (N={len(data)})\n"
        f"{breakdown_text(breakdown, labels, title)}\n"
    )
    for sink in sinks:
        sink.write(text)
        sink.flush()
    return accuracy, matrix, breakdown


def _save(checkpoint: Any, train_dir: Path, settings: RunSettings, step: int) -> Path:
    prefix = checkpoint_prefix(train_dir, settings.architecture, step)
    checkpoint.write(str(prefix))
    record = {
        "step": step,
        **settings.record,
        **settings.identity,
        "schedule": {"steps": list(settings.schedule.steps), "rates": list(settings.schedule.rates)},
    }
    Path(f"{prefix}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log.info("saved %s", prefix)
    _prune(train_dir, settings.architecture, keep=CHECKPOINTS_KEPT)
    return prefix


def _prune(train_dir: Path, architecture: str, *, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of ``architecture`` (by step)."""
    steps = sorted(
        int(path.name.removesuffix(".index").rsplit("-", 1)[1])
        for path in train_dir.glob(f"{architecture}.ckpt-*.index")
        if path.name.removesuffix(".index").rsplit("-", 1)[1].isdigit()
    )
    for step in steps[:-keep]:
        for path in train_dir.glob(f"{architecture}.ckpt-{step}.*"):
            path.unlink(missing_ok=True)


def _nan_report(tf: Any, model: Any, x: Any, step: int) -> str:
    """Which layer first went non-finite at ``step``: its weights, else its output on the batch."""
    for layer in model.layers:
        for weight in layer.weights:
            if not np.all(np.isfinite(weight.numpy())):
                return f"step {step}: weights of layer {layer.name!r} ({weight.name}) are NaN or Inf"
    value = tf.convert_to_tensor(x)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.InputLayer):
            continue
        value = layer(value, training=True)
        if not np.all(np.isfinite(value.numpy())):
            return f"step {step}: layer {layer.name!r} output NaN or Inf (loss or gradients not finite)"
    return f"step {step}: the loss or a gradient is NaN or Inf (every layer's output was finite)"


def _eval_summaries(
    tf: Any,
    writers: dict[str, Any],
    model: Any,
    *,
    data: FeatureSet,
    labels: list[str],
    step: int,
    matrix: npt.NDArray[np.int64],
) -> None:
    accuracy = float(np.trace(matrix)) / max(1, int(matrix.sum()))
    with writers["validation"].as_default(step=step):
        tf.summary.scalar("accuracy", accuracy)
        scores = predict(model, data.x[:512])
        if len(scores):
            picked = scores[np.arange(len(scores)), data.y[:512]]
            tf.summary.scalar("cross_entropy", float(-np.mean(np.log(np.maximum(picked, 1e-12)))))
        tf.summary.image("confusion_matrix", _matrix_image(matrix)[None], step=step)
        tf.summary.text("confusion_matrix", confusion_markdown(matrix, labels), step=step)
    with writers["train"].as_default(step=step):
        for weight in model.trainable_weights:
            tf.summary.histogram(f"weights/{weight.path if hasattr(weight, 'path') else weight.name}", weight)
        sample = data.x[:64]
        if len(sample):
            value = tf.convert_to_tensor(sample)
            for layer in model.layers:
                if isinstance(layer, tf.keras.layers.InputLayer):
                    continue
                value = layer(value, training=False)
                tf.summary.histogram(f"activations/{layer.name}", value)


def _matrix_image(matrix: npt.NDArray[np.int64], cell: int = 12) -> npt.NDArray[np.float32]:
    """The confusion matrix as a heat map (rows normalised), ``cell`` pixels per entry, RGB."""
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, np.maximum(rows, 1)).astype(np.float32)
    image = np.kron(share, np.ones((cell, cell), np.float32))
    rgb = np.stack([image, image * 0.5, 1.0 - image], axis=-1)  # blue (none) -> orange (all)
    return rgb.astype(np.float32)


def _feature_images(tf: Any, writer: Any, data: FeatureSet, labels: list[str], count: int = 6) -> None:
    with writer.as_default(step=0):
        for label_index in sorted(set(data.y.tolist()))[:count]:
            example = data.x[int(np.flatnonzero(data.y == label_index)[0])]
            low, high = float(example.min()), float(example.max())
            image = (example.T[::-1] - low) / (high - low if high > low else 1.0)  # features up, time right
            tf.summary.image(
                f"features/{labels[label_index]}", image[None, :, :, None].astype(np.float32), step=0
            )
