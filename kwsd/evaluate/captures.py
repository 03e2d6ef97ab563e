"""Reviewed captures (:mod:`kwsd.capture`, :mod:`kwsd.review`) as audio to calibrate on.

A capture folder's ``reviewed/<label>/`` holds what the listener kept around each detection and
near-miss, filed by a person: under the keyword when it was right, under ``_unknown_`` (or a
word the model does not know) when it was a false alarm, under another keyword when it was that
word. ``kwsd calibrate --captures DIR`` runs each one through the pipeline like any audio:

* a capture filed under a keyword of the model is one word of it, its clip starting one window
  before the decision the capture was kept for (a near-miss filed as right is a word the model
  missed, exactly what a lower threshold would catch);
* any other capture has no word: each keyword detection in it is a false accept.

The false accepts of every setting are then counted per hour of the audio the captures stand
for, not their own few seconds: the folder's ledger (``listened.json``) says how long kwsd
listened with capture on, and from when on every capture is still there
(``complete_from_ms``). Reviewed captures from before that are left out; captures still pending
in the span, or deleted in review, are not counted (the report says how many are pending).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwsd.capture import LEDGER_NAME, PENDING_DIR, CaptureError, Ledger, listened_of, read_ledger
from kwsd.errors import EvaluationError, InputNotFoundError
from kwsd.evaluate.scoring import MS_PER_HOUR, is_keyword
from kwsd.review import REVIEWED_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewedCapture:
    """One filed capture: its WAV, the label it was filed under, the decision it was kept for
    (ms into the WAV) and the listened time it was heard at."""

    wav: Path
    label: str
    decision_ms: float
    listened_ms: int
    kept_above: float | None  # the score above which such captures were kept (near-miss or threshold)
    model_sha256: str | None

    def truth_label(self, labels: Sequence[str]) -> str | None:
        """The keyword the capture is a word of, or None (a false alarm: no word)."""
        return self.label if self.label in labels and is_keyword(self.label) else None


@dataclass(frozen=True)
class ReviewedSet:
    """The reviewed captures of one capture folder that fall in its complete span."""

    directory: Path
    ledger: Ledger
    captures: tuple[ReviewedCapture, ...]
    #: Why a reviewed capture is not used: a line each.
    left_out: tuple[str, ...] = ()
    pending: int = 0  # captures in the span not reviewed yet
    other_models: int = 0  # captures made with another model than the one calibrated
    kept_above: float | None = None  # the highest score below which captures may be missing

    @property
    def listened_ms(self) -> int:
        return self.ledger.complete_ms

    @property
    def hours(self) -> float:
        return self.listened_ms / MS_PER_HOUR

    def counts(self, labels: Sequence[str]) -> tuple[int, int]:
        """(words of keywords, the others: false alarms and other sounds) among the captures."""
        words = sum(1 for c in self.captures if c.truth_label(labels) is not None)
        return words, len(self.captures) - words

    def describe(self, labels: Sequence[str]) -> str:
        words, alarms = self.counts(labels)
        return (
            f"captures {self.directory} ({len(self.captures)} reviewed: {words} keyword word(s), "
            f"{alarms} other; {self.hours:.3f} h listened)"
        )


def read_reviewed(directory: str | Path, *, model_sha256: str | None = None) -> ReviewedSet:
    """The reviewed captures of ``directory`` (a ``capture.directory``) in its complete span.

    InputNotFoundError for a folder that is not there; EvaluationError for one without a ledger
    or reviewed captures, naming what is missing. A capture whose sidecar cannot be read is
    left out and listed (:attr:`ReviewedSet.left_out`).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise InputNotFoundError(f"--captures {folder}: no such folder (give kwsd's capture.directory)")
    if not (folder / LEDGER_NAME).is_file():
        raise EvaluationError(
            f"--captures {folder}: no {LEDGER_NAME} (how long kwsd listened): captures kept by a kwsd "
            "that did not count its listening cannot give false accepts per hour"
        )
    try:
        ledger = read_ledger(folder)
    except CaptureError as err:
        raise EvaluationError(f"--captures {err}") from None
    reviewed = folder / REVIEWED_DIR
    wavs = sorted(reviewed.glob("*/*.wav")) if reviewed.is_dir() else []
    if not wavs:
        raise EvaluationError(
            f"--captures {folder}: no reviewed captures (expected {reviewed}/<label>/*.wav; file the "
            f"pending ones with `kwsd review {folder}`)"
        )
    captures: list[ReviewedCapture] = []
    left_out: list[str] = []
    before = 0
    for wav in wavs:
        try:
            capture = _read_one(wav)
        except ValueError as err:
            left_out.append(f"{wav}: left out: {err}")
            continue
        if capture.listened_ms <= ledger.complete_from_ms:
            before += 1
            continue
        captures.append(capture)
    if before:
        left_out.append(
            f"{before} reviewed capture(s) heard before {ledger.complete_from_ms / MS_PER_HOUR:.3f} h "
            "of listening, when captures were removed by the bounds or dropped: left out"
        )
    pending = 0
    for side in sorted((folder / PENDING_DIR).glob("*/*.json")):
        listened = listened_of(side)
        if listened is not None and listened > ledger.complete_from_ms:
            pending += 1
    other = sum(1 for c in captures if model_sha256 is not None and c.model_sha256 != model_sha256)
    kept = [c.kept_above for c in captures if c.kept_above is not None]
    return ReviewedSet(
        folder, ledger, tuple(captures), tuple(left_out), pending, other, max(kept) if kept else None
    )


def _read_one(wav: Path) -> ReviewedCapture:
    side = wav.with_suffix(".json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"its sidecar {side.name} cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"its sidecar {side.name} is not a kwsd capture sidecar")
    times: dict[str, int] = {}
    for key in ("audio_time_ms", "first_sample_audio_time_ms", "listened_ms"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"its sidecar {side.name} has no {key} (kept by an older kwsd?)")
        times[key] = value
    model = data.get("model")
    sha = model.get("sha256") if isinstance(model, dict) else None
    near, threshold = data.get("near_miss_threshold"), data.get("threshold")
    kept = near if _is_score(near) else threshold if _is_score(threshold) else None
    return ReviewedCapture(
        wav,
        wav.parent.name,
        float(times["audio_time_ms"] - times["first_sample_audio_time_ms"]),
        times["listened_ms"],
        float(kept) if kept is not None else None,
        sha if isinstance(sha, str) else None,
    )


def _is_score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
