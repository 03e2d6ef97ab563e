"""A model is run once in a child process before kwsd's own process loads it.

A damaged or hostile ``.tflite`` can abort the TFLite runtime itself (one changed byte that
empties a tensor's quantisation scale makes LiteRT call ``abort()`` in ``allocate_tensors``),
which no ``try`` can catch: kwsd would die with exit 134 and nothing said. So the first time
kwsd meets a model (by its sha256, for this runtime and these kernels), a child process
loads it, allocates its tensors and runs it once on zeros. A child killed by a signal makes
the model a :class:`~kwsd.errors.ModelError` (exit 67) naming the signal and whatever the
runtime printed; a child that exits normally hands over to the in-process load, which
reports the runtime's ordinary refusals itself.

Models that passed are remembered in ``verified-models`` (one line each) under
``$CACHE_DIRECTORY`` or ``$STATE_DIRECTORY`` (systemd's, for the service), else
``$XDG_CACHE_HOME/kwsd`` or ``~/.cache/kwsd``, so a model costs the probe once (about 0.3 s
on the development machine: a Python start and the runtime's import), not at every start.
Where no folder is writable the probe simply runs every time.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from kwsd.errors import ModelError

log = logging.getLogger(__name__)

CACHE_FILE = "verified-models"
#: A slow Pi under load needs seconds to start Python and import the runtime; a hang is a
#: crash of its own kind, reported as one.
PROBE_TIMEOUT_S = 120.0
_PROBE_CODE = "from kwsd.modelcheck import _probe_child; _probe_child()"


def check_in_child(tflite: bytes, where: str, *, sha256: str, runtime: str, kernels: str) -> None:
    """Run the model once in a child unless it is known to load; ModelError if it crashes.
    ``sha256``: the model's, as its bundle already holds it."""
    key = f"{sha256} {runtime} {kernels}"
    cache = _cache_file()
    if cache is not None and _known(cache, key):
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE_CODE, kernels],
            input=tflite,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"{where}: the TFLite runtime did not finish loading and running it in "
            f"{PROBE_TIMEOUT_S:.0f} s (a damaged model?)"
        ) from None
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        said = [
            line.strip()
            for line in done.stderr.decode(errors="replace").splitlines()
            if line.strip() and not line.startswith("INFO: Created TensorFlow Lite")
        ]
        reason = f": {said[-1]}" if said else " and said nothing"
        raise ModelError(
            f"{where}: the TFLite runtime crashed loading it ({name}){reason}; the model is "
            "damaged, or not one this runtime can run"
        )
    if done.returncode:
        log.debug("model probe exited %d: %s", done.returncode, done.stderr.decode(errors="replace"))
        return  # an ordinary refusal: the in-process load says what it is
    if cache is not None:
        _remember(cache, key)


def _probe_child() -> None:
    """In the child: load, allocate and invoke the model on stdin; exit 0, or die trying."""
    import numpy as np

    from kwsd.classifier import interpreter_options

    tflite = sys.stdin.buffer.read()
    try:
        cls, options = interpreter_options(sys.argv[1])
        interpreter = cls(model_content=tflite, num_threads=1, **options)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
    except Exception as err:  # refusals are the parent's to report, in its own words
        print(f"refused: {err}", file=sys.stderr)
        sys.exit(3)
    sys.exit(0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _cache_file() -> Path | None:
    for variable in ("CACHE_DIRECTORY", "STATE_DIRECTORY"):
        value = os.environ.get(variable)
        if value:
            return Path(value.split(":")[0]) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.path.expanduser("~/.cache") if "HOME" in os.environ else ""
    )
    return Path(base) / "kwsd" / CACHE_FILE if base else None


def _known(cache: Path, key: str) -> bool:
    try:
        with cache.open("rb") as f:
            return key.encode() in f.read(1 << 20).splitlines()
    except OSError:
        return False


def _remember(cache: Path, key: str) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with cache.open("a", encoding="ascii") as f:
            f.write(key + "\n")
    except OSError as err:
        log.debug("model probe: cannot remember it in %s (%s)", cache, err)
