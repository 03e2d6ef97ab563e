"""Fuzzing what users hand kwsd: config.yaml, bundle.json and the .tflite inside a bundle.

Each loop mutates a real file a few hundred times (seeded, so a failure replays) and asserts
that every mutation is either accepted or refused with kwsd's own typed error: never another
exception (which the command line turns into exit 70 and a traceback), never a crash of the
TFLite runtime (the child-process probe turns one into a ModelError), never a hang (each loop
runs under a deadline far above its normal time, so only a hang can miss it).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from kwsd.bundle import bundle_from_manifest, demo_bundle_path, read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.config import ConfigError, parse_config
from kwsd.errors import KwsdError

ROOT = Path(__file__).resolve().parent.parent
#: A hang, not a slow machine: each loop takes a few seconds here.
DEADLINE_S = 300.0

#: Replacements that make YAML and JSON interesting: types, extremes, structure, bytes.
TOKENS = [
    "", "0", "-1", "1e309", "nan", "9" * 60, "null", "true", "[]", "{}", "[[[[", "}}", "&a", "*a",
    "\t", "\x00", "\x1b", "\ud800", "é", ":", "- ", "'", '"', "#", "!!python/object:os.system",
    "<<: *a", "? ", "|", ">-", "%YAML 1.1", "---", "...",
]  # fmt: skip


def _mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        kind = rng.randrange(4)
        if kind == 0:  # insert a token
            text = text[:at] + rng.choice(TOKENS) + text[at:]
        elif kind == 1:  # delete a run
            text = text[:at] + text[at + rng.randint(1, 20) :]
        elif kind == 2:  # replace a character
            text = text[:at] + chr(rng.randrange(0, 0x300)) + text[at + 1 :]
        else:  # duplicate a run (repeated keys, deeper nesting)
            end = min(len(text), at + rng.randint(1, 200))
            text = text[:at] + text[at:end] * rng.randint(2, 4) + text[end:]
    return text


def test_config_yaml_mutations_are_accepted_or_config_errors(tmp_path: Path) -> None:
    original = (ROOT / "config.yaml").read_text(encoding="utf-8")
    rng = random.Random(20261207)
    started = time.monotonic()
    refused = 0
    for n in range(400):
        text = _mutate(original, rng)
        try:
            parse_config(text, "fuzz.yaml", base_dir=tmp_path, environ={})
        except ConfigError as err:
            refused += 1
            assert err.problems and all("\n" not in p for p in err.problems), (n, err.problems)
        assert time.monotonic() - started < DEADLINE_S, f"mutation {n} hung"
    assert 0 < refused < 400  # the loop saw both outcomes, so it tested something


def _mutate_json(value: Any, rng: random.Random, depth: int = 0) -> Any:
    if isinstance(value, dict) and value:
        key = rng.choice(sorted(value))
        out = dict(value)
        roll = rng.randrange(6)
        if roll == 0:
            out.pop(key)
        elif roll == 1 or depth > 3:
            out[key] = rng.choice(
                [None, True, -1, 0, 10**30, 1e308, float("inf"), "", "x" * 300, [], {}, [[[]]], {"a": {}}]
            )
        else:
            out[key] = _mutate_json(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value:
        out_list = list(value)
        at = rng.randrange(len(out_list))
        out_list[at] = _mutate_json(out_list[at], rng, depth + 1)
        if rng.random() < 0.2:
            out_list.append(out_list[at])
        return out_list
    return rng.choice([None, True, -1, 0, 2**63, 1e-300, "", "\ud800", [], {}, value])


def test_bundle_json_mutations_are_accepted_or_model_errors() -> None:
    demo = read_bundle(demo_bundle_path())
    rng = random.Random(7)
    started = time.monotonic()
    refused = 0
    for n in range(400):
        manifest = _mutate_json(demo.manifest(), rng)
        try:
            text = json.dumps(manifest)  # what read_bundle would parse
        except ValueError:
            continue
        try:
            bundle_from_manifest(json.loads(text), demo.tflite, "fuzz.kwsd")
        except KwsdError as err:
            refused += 1
            assert str(err).startswith("fuzz.kwsd: ") and "\n" not in str(err), (n, err)
        assert time.monotonic() - started < DEADLINE_S, f"mutation {n} hung"
    assert 0 < refused < 400


def test_tflite_mutations_are_accepted_or_model_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No cache: every mutation goes through the child-process probe, as a new model would.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "kwsd").write_text("not a folder: nothing is remembered")
    demo = read_bundle(demo_bundle_path())
    rng = random.Random(11)
    started = time.monotonic()
    outcomes = {"ran": 0, "refused": 0}
    import dataclasses

    for n in range(60):
        tflite = bytearray(demo.tflite)
        for _ in range(rng.randint(1, 4)):
            tflite[rng.randrange(len(tflite))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        bundle = dataclasses.replace(demo, tflite=bytes(tflite))
        try:
            TfliteClassifier(bundle).classify(
                __import__("numpy").zeros(demo.frontend.feature_shape, "float32")
            )
            outcomes["ran"] += 1
        except KwsdError as err:
            outcomes["refused"] += 1
            assert "\n" not in str(err), (n, err)
        assert time.monotonic() - started < DEADLINE_S, f"mutation {n} hung"
    assert sum(outcomes.values()) == 60
