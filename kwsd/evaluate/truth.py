"""Ground truth: TensorFlow's streaming test format, read, written and checked against a model."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from kwsd.errors import EvaluationError, InputNotFoundError, read_limited
from kwsd.labels import UNKNOWN_LABEL

#: Largest ground-truth file read (a line a word: about 3 million words).
MAX_TRUTH_BYTES = 64 << 20


class TruthError(EvaluationError):
    """A ground-truth file with malformed lines or labels the model does not know."""


# --------------------------------------------------------------------------------------
# Ground truth.


class TruthWord(NamedTuple):
    """One spoken word: its label and the start of its clip (ms from the start of the audio)."""

    label: str
    start_ms: float


@dataclass(frozen=True)
class GroundTruth:
    """A ground-truth file's words in file order, with the line each came from.

    ``skipped``: (line number, why) of each malformed line left out (only when asked for).
    """

    words: tuple[TruthWord, ...]
    lines: tuple[int, ...]
    source: str = "<truth>"
    skipped: tuple[tuple[int, str], ...] = ()


def parse_truth(text: str, source: str = "<truth>", *, skip_malformed: bool = False) -> GroundTruth:
    """Read ``label, time_ms`` lines (blank lines and ``#`` comments are ignored).

    A malformed line (not two comma-separated fields, an empty label, a time that is not a
    finite number >= 0) raises :class:`TruthError` naming every such line by number, unless
    ``skip_malformed``: then they are left out and listed in :attr:`GroundTruth.skipped`.
    """
    words: list[TruthWord] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 2:
            bad.append((number, f"expected 'label, time_ms', got {raw.strip()!r}"))
            continue
        label, time_text = fields
        if not label:
            bad.append((number, f"no label before the comma in {raw.strip()!r}"))
            continue
        try:
            start_ms = float(time_text)
        except ValueError:
            bad.append((number, f"time_ms: expected a number of milliseconds, got {time_text!r}"))
            continue
        if not math.isfinite(start_ms) or start_ms < 0:
            bad.append((number, f"time_ms: expected a finite time >= 0, got {time_text!r}"))
            continue
        words.append(TruthWord(label, start_ms))
        lines.append(number)
    if bad and not skip_malformed:
        shown = "; ".join(f"line {n}: {why}" for n, why in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise TruthError(
            f"{source}: {len(bad)} malformed line(s): {shown}{more} "
            "(expected 'label, time_ms' lines; --skip-malformed leaves them out)"
        )
    return GroundTruth(tuple(words), tuple(lines), source, tuple(bad))


def read_truth(path: str | os.PathLike[str], *, skip_malformed: bool = False) -> GroundTruth:
    """:func:`parse_truth` on a file; a missing or unreadable file is :class:`InputNotFoundError`."""
    path = Path(path)
    try:
        if os.path.isdir(path):  # os.path's: False, not an error, for a name too long
            raise InputNotFoundError(f"{path}: is a directory, expected a ground-truth file")
        raw = read_limited(path, MAX_TRUTH_BYTES)
    except FileNotFoundError:
        raise InputNotFoundError(f"{path}: no such ground-truth file") from None
    except OSError as err:
        raise InputNotFoundError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise TruthError(f"{path}: line {line}: not UTF-8 text (expected 'label, time_ms' lines)") from None
    return parse_truth(text, str(path), skip_malformed=skip_malformed)


def format_truth(words: Iterable[tuple[str, float]]) -> str:
    """The reference's format: ``label, time_ms`` with six decimals, one word a line."""
    return "".join(f"{label}, {start_ms:f}\n" for label, start_ms in words)


def check_truth(truth: GroundTruth, labels: Sequence[str], audio_ms: float | None = None) -> None:
    """Refuse labels the model does not know, and words that start after the audio ends."""
    known = set(labels)
    unknown: dict[str, list[int]] = {}
    for word, line in zip(truth.words, truth.lines, strict=True):
        if word.label not in known:
            unknown.setdefault(word.label, []).append(line)
    if unknown:
        listed = "; ".join(
            f"{label!r} (line{'s' if len(where) > 1 else ''} {', '.join(map(str, where[:5]))}"
            f"{', ...' if len(where) > 5 else ''})"
            for label, where in unknown.items()
        )
        raise TruthError(
            f"{truth.source}: label(s) the model does not know: {listed}; the model's labels are "
            f"{', '.join(labels)} (words of no label are written {UNKNOWN_LABEL})"
        )
    if audio_ms is not None:
        late = [(line, w) for w, line in zip(truth.words, truth.lines, strict=True) if w.start_ms > audio_ms]
        if late:
            line, word = late[0]
            raise TruthError(
                f"{truth.source}: line {line}: {word.label} at {word.start_ms:.0f} ms starts after the "
                f"audio ends ({audio_ms:.0f} ms); {len(late)} word(s) do (is it the truth of this audio?)"
            )
