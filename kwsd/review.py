"""``kwsd review CAPTURE_DIR``: file the captures (:mod:`kwsd.capture`) one key at a time.

Each pending capture (``<dir>/pending/<label>/<name>.wav`` and its ``.json`` sidecar) is
shown with its kind, label, score and when it was heard, a sparkline of the label's smoothed
score and of the audio level over the capture, and played with the system's player when there
is one (``aplay``, ``paplay``, ``ffplay``; ``--no-play`` never plays). One key files it:

* ``c`` correct: ``<dir>/reviewed/<label>/`` (the label was right);
* ``w`` wrong: ``<dir>/reviewed/_unknown_/`` (a false alarm: a negative for training);
* ``o`` other: asks for the word it was, ``<dir>/reviewed/<word>/``;
* ``s`` skip (stays pending), ``d`` delete (WAV and sidecar), ``p`` play again, ``q`` quit.

Filed captures keep their sidecar, with ``review`` added (verdict, label filed under, time),
under the next free ``<device>_nohash_<n>`` name of the folder: never overwriting. So
``<dir>/reviewed`` is a data set in the Speech Commands layout that ``tools/train.py``
(``--data_dir``) and the data-set tools read.

For scripts: ``--list`` prints one line per pending capture; ``--accept-all LABEL`` files every
pending capture of LABEL as correct. A sidecar that is missing, does not parse, or (with ``-m``)
comes from another model is reported and the capture skipped, never filed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import wave
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from kwsd.capture import PENDING_DIR
from kwsd.dataset_layout import NOHASH, claim_name, next_number, speaker_of
from kwsd.errors import InputNotFoundError
from kwsd.labels import UNKNOWN_LABEL
from kwsd.publisher import rfc3339

log = logging.getLogger(__name__)

REVIEWED_DIR = "reviewed"
PLAYERS = (("aplay", "-q"), ("paplay",), ("ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"))
SPARK = " .:-=+*#%@"


class ReviewError(InputNotFoundError):
    """A capture folder that cannot be reviewed (missing, or no pending area): exit 66."""


@dataclass(frozen=True)
class Capture:
    wav: Path
    sidecar: dict[str, Any]

    @property
    def label(self) -> str:
        return self.wav.parent.name

    def describe(self) -> str:
        side = self.sidecar
        score = side.get("score")
        return (
            f"{self.wav.parent.name}/{self.wav.name}: {side.get('kind', '?')} {side.get('label', '?')} "
            f"score {score if score is not None else '?'} (threshold {side.get('threshold', '?')}) "
            f"at {side.get('time', '?')}"
        )


def pending_captures(directory: Path, model_sha256: str | None = None) -> Iterator[Capture | str]:
    """Each pending capture, oldest name first, or a line saying why one is skipped."""
    pending = directory / PENDING_DIR
    if not pending.is_dir():
        raise ReviewError(f"{directory}: no {PENDING_DIR}/ folder (is capture.directory this folder?)")
    for wav in sorted(pending.glob("*/*.wav"), key=_order):
        side = wav.with_suffix(".json")
        try:
            sidecar = json.loads(side.read_text(encoding="utf-8"))
            if not isinstance(sidecar, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            yield f"{wav}: skipped: its sidecar {side.name} cannot be read ({err})"
            continue
        sha = (sidecar.get("model") or {}).get("sha256") if isinstance(sidecar.get("model"), dict) else None
        if model_sha256 is not None and sha != model_sha256:
            yield f"{wav}: skipped: captured with another model (sha256 {str(sha)[:12]}...)"
            continue
        yield Capture(wav, sidecar)


def file_capture(directory: Path, capture: Capture, verdict: str, label: str) -> Path:
    """Move a capture (WAV and sidecar) to ``reviewed/<label>/`` under the next free name."""
    folder = directory / REVIEWED_DIR / label
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    speaker = speaker_of(capture.wav.name)
    path, _ = claim_name(capture.wav, folder, speaker, next_number(folder, speaker))
    sidecar = {
        **capture.sidecar,
        "review": {"verdict": verdict, "label": label, "time": rfc3339(dt.datetime.now(dt.UTC))},
    }
    side = path.with_suffix(".json")
    tmp = side.with_name(f".{side.name}.part")
    tmp.write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, side)
    capture.wav.unlink()
    capture.wav.with_suffix(".json").unlink(missing_ok=True)
    return path


def delete_capture(capture: Capture) -> None:
    capture.wav.unlink()
    capture.wav.with_suffix(".json").unlink(missing_ok=True)


def sparkline(values: Sequence[float], width: int = 40) -> str:
    """``values`` (0..1) as ``width`` characters from `` `` (0) to ``@`` (1)."""
    if not values:
        return ""
    picked = [values[i * len(values) // width] for i in range(min(width, len(values)))]
    return "".join(SPARK[min(len(SPARK) - 1, max(0, round(v * (len(SPARK) - 1))))] for v in picked)


def level_line(wav: Path, width: int = 40) -> str:
    """The capture's level, dBFS -60..0 mapped to 0..1, as a sparkline."""
    with wave.open(str(wav)) as reader:
        samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2").astype(np.float64)
    if samples.size == 0:
        return ""
    chunks = np.array_split(samples, min(width, samples.size))
    levels = [20 * np.log10(max(float(np.sqrt(np.mean(c * c))), 1.0) / 32768.0) for c in chunks]
    return sparkline([(level + 60) / 60 for level in levels], width)


def score_line(capture: Capture, width: int = 40) -> str:
    side = capture.sidecar
    labels = side.get("labels") or []
    if capture.label not in labels:
        return ""
    index = labels.index(capture.label)
    values = [float(s["scores"][index]) for s in side.get("scores") or [] if len(s.get("scores", [])) > index]
    return sparkline(values, width)


def player() -> list[str] | None:
    for command in PLAYERS:
        if shutil.which(command[0]):
            return list(command)
    return None


def accept_all(directory: Path, label: str, out: TextIO, model_sha256: str | None = None) -> int:
    """File every pending capture of ``label`` as correct; returns how many."""
    count = 0
    for item in pending_captures(directory, model_sha256):
        if isinstance(item, str):
            print(item, file=sys.stderr)
            continue
        if item.label == label:
            path = file_capture(directory, item, "correct", label)
            print(f"{item.label}/{item.wav.name} -> {path.relative_to(directory)}", file=out)
            count += 1
    return count


def interactive(
    directory: Path,
    out: TextIO,
    read_key: Callable[[], str],
    read_line: Callable[[str], str],
    *,
    play: list[str] | None,
    model_sha256: str | None = None,
) -> dict[str, int]:
    """Walk the pending captures; returns how many were filed each way."""
    done = {"correct": 0, "wrong": 0, "other": 0, "skipped": 0, "deleted": 0}
    for item in pending_captures(directory, model_sha256):
        if isinstance(item, str):
            print(item, file=out)
            continue
        print(f"\n{item.describe()}", file=out)
        print(f"  score [{score_line(item)}]", file=out)
        print(f"  level [{level_line(item.wav)}]", file=out)
        while True:
            if play is not None:
                subprocess.run([*play, str(item.wav)], check=False, stdin=subprocess.DEVNULL)
            print("  [c]orrect  [w]rong  [o]ther word  [s]kip  [d]elete  [p]lay  [q]uit? ", end="", file=out)
            out.flush()
            key = read_key().lower()
            print(key, file=out)
            if key == "p":
                continue
            break
        if key == "q":
            break
        if key == "c":
            path = file_capture(directory, item, "correct", item.label)
            done["correct"] += 1
        elif key == "w":
            path = file_capture(directory, item, "wrong", UNKNOWN_LABEL)
            done["wrong"] += 1
        elif key == "o":
            word = read_line("  which word was it? ").strip()
            if not word or "/" in word or NOHASH in word or word.startswith("."):
                print(f"  {word!r} cannot be a folder name; skipped", file=out)
                done["skipped"] += 1
                continue
            path = file_capture(directory, item, "other", word)
            done["other"] += 1
        elif key == "d":
            delete_capture(item)
            print("  deleted", file=out)
            done["deleted"] += 1
            continue
        else:
            done["skipped"] += 1
            continue
        print(f"  -> {path.relative_to(directory)}", file=out)
    return done


def _order(path: Path) -> tuple[str, int]:
    number = path.stem.rpartition(NOHASH)[2]
    return path.parent.name, int(number) if number.isdigit() else -1
