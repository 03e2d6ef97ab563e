"""Training on several data folders at once, each a named source with a weight.

``--data_dir`` takes ``[NAME=]DIR[:WEIGHT]`` and may be given more than once (or as one
comma-separated list of ``NAME=DIR[:WEIGHT]``), e.g. the user's own recordings, Speech
Commands and a synthetic set::

    --data_dir me=~/recordings:3 --data_dir sc=/tmp/speech_dataset --data_dir synth=/tmp/synth:0.5

* Every source is a Speech Commands-style folder read and checked by
  :func:`tools.training.dataset.load_dataset`, split by train.py's rule on its own (the hash of
  the name, or its own list files), with its own ``_silence_`` and ``_unknown_`` items and its
  own ``_background_noise_``. Every source must have a folder for every wanted word.
* A folder of reviewed kwsd captures (``kwsd review``'s ``reviewed/``, recognised by the
  capture sidecars beside its WAVs) is a source too, loaded by its own rules
  (:mod:`tools.training.dataset`): every clip, cut to the window the model heard when it
  fired, with its folder's label (a wanted word, else ``_unknown_``: false alarms are hard
  negatives), and all of it training data. Such a source has no validation or test clips, so
  it is given *beside* a data set that has them, usually with a weight::

      --data_dir sc=/tmp/speech_dataset --data_dir room=/var/lib/kwsd/captures/reviewed:2

  A run whose sources hold no validation or no test clip at all (a capture set alone) is
  refused: it could report nothing, and training on a room's false alarms alone teaches a
  model to answer ``_unknown_`` to everything. A capture set with ``validation_list.txt`` and
  ``testing_list.txt`` is split by them and may stand alone. Weight 0 (evaluation only) is
  refused for a capture set without lists: it would have nothing to evaluate.
* ``WEIGHT`` (default 1) scales how often each of the source's training inputs is drawn into a
  batch: weight 2 is as if each of its clips were there twice. With every weight equal the
  batches are drawn exactly as from one folder. Weight 0 makes a source evaluation-only: it is
  never trained on, and its validation and test figures say how the model does on it (a
  synthetic-only model measured on real people, say).
* Validation and test sets are the union of the sources' partitions, unweighted, and every
  report (console, TensorBoard, the bundle's metrics) gives the accuracy per source and per word
  beside the overall figure, so one sees whether the model hears people or only a synthesiser.
* A single ``--data_dir DIR`` is today's behaviour: one source, named after its folder.
* A source folder may hold ``ATTRIBUTION.txt``: its licence and attribution (who made the
  recordings, under what licence, how to cite them). Its text goes into the exported bundles'
  provenance, so a model trained on data that asks for attribution (Speech Commands is CC BY
  4.0) carries it wherever the model goes; ``kwsd model info`` prints it.

Importable without TensorFlow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kwsd_tools.training.dataset import Dataset, DatasetSettings, load_dataset
from kwsd_tools.training.features import Augmentation, FeatureSet, partition_features
from kwsd_tools.training.trainer import TrainingError

if TYPE_CHECKING:
    from kwsd.frontend import FrontendSpec
    from kwsd_tools.training.augment import AugmentAssets

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: In a source folder: its licence and attribution, recorded in the bundles trained on it.
ATTRIBUTION_FILE = "ATTRIBUTION.txt"


@dataclass(frozen=True)
class DataSource:
    """One ``--data_dir`` entry."""

    name: str
    data_dir: Path
    weight: float = 1.0

    def describe(self) -> str:
        return f"{self.name}={self.data_dir}:{self.weight:g}"

    def attribution(self) -> str | None:
        """The text of the folder's ``ATTRIBUTION.txt`` (stripped), or None when it has none;
        :class:`TrainingError` for one that cannot be read as UTF-8 text."""
        path = self.data_dir / ATTRIBUTION_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            raise TrainingError(f"{path}: cannot read it as UTF-8 text ({err})") from None
        return text.strip() or None


def parse_data_sources(values: str | Sequence[str], *, flag: str = "--data_dir") -> list[DataSource]:
    """The sources of one or more ``--data_dir`` values (see the module docstring);
    :class:`TrainingError` naming the flag for a bad weight, an empty path or a repeated name."""
    if isinstance(values, str):
        values = [values]
    entries: list[str] = []
    for value in values:
        pieces = value.split(",")
        if len(pieces) > 1 and all(_split_name(p)[0] is not None for p in pieces):
            entries.extend(pieces)
        else:
            entries.append(value)
    sources: list[DataSource] = []
    for entry in entries:
        name, rest = _split_name(entry)
        path_text, weight = rest, 1.0
        head, sep, tail = rest.rpartition(":")
        if sep and head:
            try:
                weight = float(tail)
            except ValueError:
                pass  # a colon inside the path
            else:
                path_text = head
                if not (weight >= 0 and math.isfinite(weight)):
                    raise TrainingError(f"{flag} {entry}: the weight must be a number >= 0, got {tail!r}")
        if not path_text:
            raise TrainingError(f"{flag} {entry!r}: expected [NAME=]DIR[:WEIGHT], got no folder")
        data_dir = Path(path_text).expanduser()
        source_name = name or data_dir.name or "data"
        if any(s.name == source_name for s in sources):
            raise TrainingError(
                f"{flag}: two sources named {source_name!r}; name each one: NAME=DIR[:WEIGHT]"
            )
        sources.append(DataSource(source_name, data_dir, weight))
    if not sources:
        raise TrainingError(f"{flag}: expected at least one data folder")
    if all(s.weight == 0 for s in sources):
        raise TrainingError(f"{flag}: every source has weight 0 (evaluation only): nothing to train on")
    return sources


def _split_name(entry: str) -> tuple[str | None, str]:
    name, sep, rest = entry.partition("=")
    if sep and _NAME.match(name):
        return name, rest
    return None, entry


def load_sources(sources: Sequence[DataSource], settings: DatasetSettings, *, seed: int) -> list[Dataset]:
    """Each source loaded and checked; the first with ``seed`` itself (a single folder loads
    exactly as before sources existed), source k with the generator ``[seed, k]``.
    :class:`TrainingError` naming the flag when the sources hold no validation or no test clip
    (a capture set alone), or a capture set is evaluation-only with nothing to evaluate."""
    datasets = [
        load_dataset(source.data_dir, settings, seed=seed if k == 0 else np.random.default_rng([seed, k]))
        for k, source in enumerate(sources)
    ]
    check_held_out(sources, datasets)
    return datasets


def check_held_out(sources: Sequence[DataSource], datasets: Sequence[Dataset]) -> None:
    """The rules for capture sets among the sources (see the module docstring)."""
    for source, dataset in zip(sources, datasets, strict=True):
        held_out = len(dataset.items["validation"]) + len(dataset.items["testing"])
        if source.weight == 0 and dataset.capture_set and not held_out:
            raise TrainingError(
                f"--data_dir {source.describe()}: reviewed kwsd captures are all training data, so "
                "weight 0 (evaluation only) leaves nothing of them to use: give it a weight above 0, "
                "or split it with validation_list.txt and testing_list.txt"
            )
    for partition in ("validation", "testing"):
        if any(dataset.items[partition] for dataset in datasets):
            continue
        captures = [s for s, d in zip(sources, datasets, strict=True) if d.capture_set]
        named = captures[0] if captures else sources[0]
        raise TrainingError(
            f"--data_dir {named.describe()}: no source has {partition} clips (reviewed kwsd captures are "
            f"all training data): give the captures beside a data set that has them, e.g. "
            f"--data_dir words=DIR --data_dir {named.name}={named.data_dir}:2, or split them with "
            f"validation_list.txt and testing_list.txt"
        )


def pooled_features(
    datasets: Sequence[Dataset],
    sources: Sequence[DataSource],
    spec: FrontendSpec,
    partition: str,
    *,
    augmentation: Augmentation,
    copies: int,
    seed: int,
    cache_dir: Path | None,
    workers: int | None = None,
    assets: AugmentAssets | None = None,
) -> FeatureSet:
    """Every source's features of ``partition`` (source k's augmentation seeded with
    ``seed + k``), one after the other, with each input's source and, for training, weight."""
    parts = [
        partition_features(
            dataset,
            spec,
            partition,
            augmentation=augmentation,
            copies=copies,
            seed=seed + k,
            cache_dir=cache_dir,
            workers=workers,
            assets=assets,
        )
        for k, dataset in enumerate(datasets)
    ]
    if len(parts) == 1:
        x, y = parts[0].x, parts[0].y
    else:
        x, y = np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts])
    source = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(parts)])
    weight = None
    if partition == "training":
        weight = np.concatenate([np.full(len(p), s.weight) for p, s in zip(parts, sources, strict=True)])
    return FeatureSet(x, y, source=source, source_names=tuple(s.name for s in sources), weight=weight)


def batch_shares(training: FeatureSet) -> dict[str, float]:
    """Source -> the share of training batch inputs it gives (its weight times its pool size)."""
    if training.source is None or training.weight is None or not len(training):
        return {}
    total = float(training.weight.sum())
    return {
        name: float(training.weight[training.source == k].sum()) / total
        for k, name in enumerate(training.source_names)
    }
