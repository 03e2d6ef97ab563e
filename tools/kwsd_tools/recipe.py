#!/usr/bin/env python3
"""Training recipes: data, tools/train.py, detection settings and a demo stream, in one command.

    python tools/recipe.py demo --real_dir ../shared/realspeech --out kwsd/demo
    python tools/recipe.py synthetic --real_dir ../shared/realspeech   # no real clip trained on
    python tools/recipe.py espeak --real_dir ../shared/realspeech      # the espeak-ng baseline
    python tools/recipe.py quick --out /tmp/quick                      # minutes: for the tests

A recipe is a set of flags for the tools a user runs by hand, not a trainer of its own: the
model is made by ``tools/train.py`` (the same code path as any user's training), so improving
the trainer improves every recipe and the demo. Each run, in ``--work_dir``:

1. data: synthetic speech from ``tools/synth.py`` (the recipe's engines and voices), and with
   ``--real_dir`` real recordings in Speech Commands' layout (WAV or FLAC, converted to 16 kHz
   WAV with sox). The real folder's licence and attribution (its ``ATTRIBUTION.txt``, or the
   "Licence and attribution" section of its README.md) is copied beside the converted clips,
   where ``tools/train.py`` records it in the bundles;
2. training: ``tools/train.py`` on both as sources (``synth`` and ``people``, each with the
   recipe's weight; weight 0 = measured, never trained on), with one split for both
   (``--validation_percentage`` / ``--testing_percentage``): the test people are never heard in
   training. Its report gives validation and test accuracy per source and word;
3. detection settings: ``tools/make_stream.py`` builds a long stream of *validation* clips (real
   people where there are any) and a background-only stream, and ``kwsd calibrate`` picks the
   smoother settings with the fewest misses within the false-accept target; they are written
   into the bundles;
4. a demo stream: ``demo.wav`` + ``demo.txt``, *test*-partition clips (real people where there
   are any) over the real set's background noise, and ``kwsd evaluate`` says what the int8
   bundle hears in it.

With ``--out`` the bundles are written there as ``demo.kwsd`` (int8) and ``demo-float.kwsd``,
with demo.wav, demo.txt and ATTRIBUTION.txt (what the model and the stream were made from, and
the licences that ask to be credited). Exit codes: 0 done, 1 a step failed (it says which),
2 bad command line, 66 a folder that is not there, 69 sox missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwsd.cli import EXIT_MISSING_DEPENDENCY as EXIT_UNAVAILABLE
from kwsd.cli import EXIT_NO_INPUT
from kwsd.labels import UNKNOWN_LABEL
from kwsd_tools.training.sources import ATTRIBUTION_FILE

log = logging.getLogger("recipe")

TOOL_NAME = "tools/recipe.py"
SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
#: Speech Commands' other words: the synthetic _unknown_ class (real sets bring their own).
OTHER_WORDS = (
    "backward",
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "follow",
    "forward",
    "four",
    "happy",
    "house",
    "learn",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "visual",
    "wow",
    "zero",
)
#: The README section a Speech Commands-style folder states its terms in.
_LICENCE_HEADING = re.compile(r"^#+\s*licen[cs]e\b.*$", re.IGNORECASE | re.MULTILINE)
_AUDIO_SUFFIXES = (".wav", ".flac")
#: train.py's default --unknown_percentage (given on the command line only when it differs).
TRAIN_UNKNOWN_PERCENTAGE = 10.0


@dataclass(frozen=True)
class Recipe:
    """What one recipe trains on and how (everything else is tools/train.py's default)."""

    name: str
    summary: str
    words: tuple[str, ...] = SPEECH_COMMANDS_WORDS
    unknown_words: tuple[str, ...] = OTHER_WORDS
    engines: tuple[str, ...] = ("espeak", "piper", "flite", "festival")
    voices: int = 30  # per engine
    repetitions: int = 2
    accents: str = "all"
    #: --real_dir's weight: None = no real data at all, 0 = measured only, > 0 trained on.
    real_weight: float | None = 3.0
    real_required: bool = False
    synth_weight: float = 1.0
    steps: str = "4000,1000"
    learning_rate: str = "0.001,0.0001"
    augment_copies: int = 4
    #: train.py's --unknown_percentage (of the wanted count, per source).
    unknown_percentage: float = TRAIN_UNKNOWN_PERCENTAGE
    model_options: str = '{"temporal": true}'
    #: tools/train.py's front end and architecture (its bundles are named after the architecture).
    frontend_flags: tuple[str, ...] = ("--window_stride_ms=20", "--feature_bin_count=13")
    architecture: str = "ds_cnn"
    #: True: the embedding front end, on the feature models the user gives (--feature_models).
    embedding: bool = False
    #: further tools/train.py flags, as a user would type them (e.g. "--time_shift_ms=200").
    train_extra: tuple[str, ...] = ()
    robust_augmentation: bool = True
    #: Speakers, not clips: these split the real set by person (see the README).
    validation_percentage: float = 11.0
    testing_percentage: float = 3.0
    calibration_s: float = 600.0
    background_s: float = 3600.0
    #: kwsd calibrate's target over the validation words and the background hour together. Its
    #: stream speaks 1,200 words an hour, so a misheard word weighs as much as an hour of noise:
    #: with 0.5, one slip in 200 words is over the target (see the README's recipe figures).
    target_fa_per_hour: float = 1.0
    demo_s: float = 36.0
    demo_snr_db: float = 20.0
    #: demo.wav's script: every word once, two other words among them; the clips are drawn
    #: at random (seeded) from the test partition, so what the demo hears is not chosen.
    demo_sequence: tuple[str, ...] = (
        "yes", "no", "up", "down", UNKNOWN_LABEL, "left", "right", "on", "off", UNKNOWN_LABEL, "stop", "go",
    )  # fmt: skip


#: The embedding recipes' training: an mlp head (openWakeWord's form) on 2 s windows of the
#: embedding; clips end 0 to 200 ms before the window's end (--time_shift_ms moves them earlier
#: only), as in tools/benchmark_embedding.py (0 to 1000 ms, also tried, lost 5 points of clip
#: accuracy and fired more in streams: README); no SpecAugment (its masks are for spectrogram
#: features).
EMBEDDING_SETTINGS: dict[str, Any] = {
    "frontend_flags": ("--preprocess=embedding",),
    "architecture": "mlp",
    "model_options": "{}",
    "embedding": True,
    "steps": "6000,2000",
    # Two time masks of 5 frames would hide 10 of the window's 16 embeddings.
    "train_extra": ("--time_shift_ms=200", "--dropout=0.3", "--time_masks=0", "--freq_masks=0"),
}

RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "demo",
            "the shipped demo: real people (weighted up) plus four synthesisers, 10 words",
            real_required=True,
        ),
        Recipe(
            "synthetic",
            "four synthesisers only; real people measured, never trained on (no recordings yet)",
            real_weight=0.0,
        ),
        Recipe(
            "espeak",
            "espeak-ng only with train.py's augmentation: the baseline before real speech",
            engines=("espeak",),
            voices=120,
            real_weight=0.0,
            robust_augmentation=False,
        ),
        Recipe(
            "quick",
            "yes/no from a few espeak-ng voices, a few hundred steps: checks the whole path",
            words=("yes", "no"),
            unknown_words=("up", "down", "left"),
            engines=("espeak",),
            voices=24,
            repetitions=2,
            accents="en",
            real_weight=1.0,
            steps="300,100",
            augment_copies=1,
            validation_percentage=10.0,
            testing_percentage=10.0,
            calibration_s=120.0,
            background_s=120.0,
            demo_s=30.0,
            demo_sequence=("yes", "no", UNKNOWN_LABEL),
        ),
        Recipe(
            "embedding",
            "the demo's data on openWakeWord's speech embedding (--feature_models): an mlp head",
            real_required=True,
            **EMBEDDING_SETTINGS,
        ),
        Recipe(
            "embedding_synthetic",
            "four synthesisers only on openWakeWord's speech embedding (--feature_models)",
            real_weight=0.0,
            **EMBEDDING_SETTINGS,
        ),
    )
}


class RecipeError(Exception):
    """A step that cannot run: the message names the step and what to do; ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------
# 1. data


def attribution_text(folder: Path) -> str | None:
    """The folder's terms: its ATTRIBUTION.txt, else its README.md's licence section (heading
    included, up to the next heading of the same or a higher level), else None."""
    own = folder / ATTRIBUTION_FILE
    if own.is_file():
        return own.read_text(encoding="utf-8").strip() or None
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    found = _LICENCE_HEADING.search(text)
    if found is None:
        return None
    level = len(found.group(0)) - len(found.group(0).lstrip("#"))
    rest = text[found.end() :]
    following = re.search(rf"^#{{1,{level}}}\s", rest, re.MULTILINE)
    section = rest[: following.start()] if following else rest
    return f"{found.group(0).lstrip('#').strip()}: {' '.join(section.split())}".strip()


def prepare_real(source: Path, target: Path) -> dict[str, Any]:
    """Copy a Speech Commands-style folder of WAV or FLAC clips into ``target`` as 16 kHz mono
    16-bit WAV (sox), once; returns what it holds. Its attribution goes beside the clips."""
    if not source.is_dir():
        raise RecipeError(f"--real_dir {source}: no such folder", EXIT_NO_INPUT)
    marker = target / ".recipe_source"
    if not (marker.exists() and marker.read_text() == str(source.resolve())):
        files = sorted(p for p in source.glob("*/*") if p.suffix.lower() in _AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise RecipeError(
                f"--real_dir {source}: no <word>/*.wav or <word>/*.flac clips (Speech Commands' layout)",
                EXIT_NO_INPUT,
            )
        if shutil.which("sox") is None:
            raise RecipeError(
                "sox is not installed (apt-get install sox): it converts the real clips", EXIT_UNAVAILABLE
            )
        if target.exists():
            shutil.rmtree(target)
        log.info("data: converting %d real clips from %s to 16 kHz WAV", len(files), source)
        for path in files:
            out = target / path.parent.name / (path.stem + ".wav")
            out.parent.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                ["sox", str(path), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", str(out)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode:
                raise RecipeError(f"--real_dir {path}: sox could not convert it: {done.stderr.strip()}")
        marker.write_text(str(source.resolve()))
    attribution = attribution_text(source)
    if attribution:
        (target / ATTRIBUTION_FILE).write_text(attribution + "\n", encoding="utf-8")
    else:
        log.warning(
            "data: %s states no licence (no ATTRIBUTION.txt, no licence section in README.md)", source
        )
    words = {d.name: sum(1 for _ in d.glob("*.wav")) for d in sorted(target.iterdir()) if d.is_dir()}
    return {"data_dir": str(source), "clips": words, "attribution": attribution}


def prepare_synth(recipe: Recipe, target: Path, seed: int, noise_from: Path | None) -> dict[str, Any]:
    """The recipe's synthetic set (made once per recipe and seed); real background noise is
    copied in where there is some (noise is not speech: synthetic-only stays synthetic-only)."""
    from kwsd_tools.synth import Engine, synthesise

    stamp = json.dumps(
        {
            k: getattr(recipe, k)
            for k in ("words", "unknown_words", "engines", "voices", "repetitions", "accents")
        }
        | {"seed": seed},
        sort_keys=True,
    )
    marker = target / ".recipe_stamp"
    if marker.exists() and marker.read_text() == stamp:
        log.info("data: synthetic set already in %s", target)
        summary: dict[str, Any] = json.loads((target / "voices.json").read_text())
    else:
        if target.exists():
            shutil.rmtree(target)
        started = time.monotonic()
        summary = synthesise(
            target,
            recipe.words,
            recipe.unknown_words,
            voice_count=recipe.voices,
            repetitions=recipe.repetitions,
            seed=seed,
            accents=_accents(recipe.accents),
            engines=[Engine(e) for e in recipe.engines],
        )
        log.info("data: synthesised in %.0f s", time.monotonic() - started)
        marker.write_text(stamp)
    if noise_from is not None and (noise_from / "_background_noise_").is_dir():
        noise = target / "_background_noise_"
        for path in sorted((noise_from / "_background_noise_").glob("*.wav")):
            shutil.copyfile(path, noise / f"real-{path.name}")
    return summary


def _accents(text: str) -> tuple[str, ...]:
    from kwsd_tools.synth import ACCENTS

    return ACCENTS if text == "all" else tuple(text.split(","))


# --------------------------------------------------------------------------------------
# 2. training


def train_flags(
    recipe: Recipe, work: Path, sources: Sequence[str], seed: int, feature_models: Path | None = None
) -> list[str]:
    """tools/train.py's command line for the recipe (printed, so a user can run it by hand)."""
    flags = [
        "--data_url=",
        f"--work_dir={work}",
        *(f"--data_dir={s}" for s in sources),
        f"--wanted_words={','.join(recipe.words)}",
        f"--validation_percentage={recipe.validation_percentage:g}",
        f"--testing_percentage={recipe.testing_percentage:g}",
        *recipe.frontend_flags,
        *((f"--feature_models={feature_models}",) if recipe.embedding and feature_models else ()),
        f"--model_architecture={recipe.architecture}",
        f"--model_options={recipe.model_options}",
        f"--how_many_training_steps={recipe.steps}",
        f"--learning_rate={recipe.learning_rate}",
        "--eval_step_interval=500",
        "--save_step_interval=1000",
        "--batch_size=100",
        f"--augment_copies={recipe.augment_copies}",
        f"--seed={seed}",
    ]
    if recipe.unknown_percentage != TRAIN_UNKNOWN_PERCENTAGE:
        flags.append(f"--unknown_percentage={recipe.unknown_percentage:g}")
    flags += recipe.train_extra
    if not recipe.robust_augmentation:
        flags.append("--no_robust_augmentation")
    return flags


# --------------------------------------------------------------------------------------
# 3 and 4. streams, calibration, evaluation: the user's own commands


def _run(step: str, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    log.info("%s: %s", step, " ".join(command))
    done = subprocess.run(list(command), capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1) or (done.returncode == 1 and step != "calibrate"):
        raise RecipeError(f"{step} failed (exit {done.returncode}):\n{done.stderr.strip()[-2000:]}")
    return done


def make_stream(
    data_dir: Path,
    out: Path,
    recipe: Recipe,
    *,
    partition: str,
    duration_s: float,
    seed: int,
    background_only: bool = False,
    snr_db: float | None = None,
    sequence: Sequence[str] = (),
) -> Path:
    command = [
        sys.executable,
        "-m",
        "kwsd_tools.make_stream",
        f"--data_dir={data_dir}",
        f"--output_audio_file={out}",
        f"--wanted_words={','.join(recipe.words)}",
        f"--duration_s={duration_s:g}",
        f"--validation_percentage={recipe.validation_percentage:g}",
        f"--testing_percentage={recipe.testing_percentage:g}",
        f"--partition={partition}",
        f"--seed={seed}",
    ]
    if background_only:
        command.append("--background_only")
    if snr_db is not None:
        command.append(f"--snr_db={snr_db:g}")
    if sequence:
        command.append(f"--sequence={','.join(sequence)}")
    _run("make_stream", command)
    return out


def calibrate(bundle: Path, words: Path, background: Path, target_fa_per_hour: float) -> dict[str, Any]:
    """``kwsd calibrate``'s choice for the bundle."""
    done = _run(
        "calibrate",
        [
            sys.executable,
            "-m",
            "kwsd",
            "calibrate",
            "--json",
            "-m",
            str(bundle),
            "--audio",
            str(words),
            "--truth",
            str(words.with_suffix(".txt")),
            "--background-audio",
            str(background),
            f"--target-fa-per-hour={target_fa_per_hour:g}",
        ],
    )
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RecipeError(f"calibrate printed no JSON:\n{done.stderr.strip()[-2000:]}") from None
    return report


def evaluate(bundle: Path, audio: Path) -> dict[str, Any]:
    done = _run(
        "evaluate",
        [
            sys.executable,
            "-m",
            "kwsd",
            "evaluate",
            "--json",
            "-m",
            str(bundle),
            "--audio",
            str(audio),
            "--truth",
            str(audio.with_suffix(".txt")),
        ],
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --------------------------------------------------------------------------------------


def run(
    recipe: Recipe,
    *,
    work: Path,
    real_dir: Path | None,
    out: Path | None,
    seed: int,
    feature_models: Path | None = None,
) -> dict[str, Any]:
    from kwsd.bundle import make_bundle, read_bundle, write_bundle
    from kwsd_tools.train import main as train

    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    if recipe.real_required and real_dir is None:
        raise RecipeError(
            f"the {recipe.name} recipe trains on real speech: give --real_dir (a Speech Commands-style "
            "folder, e.g. ../shared/realspeech or an extracted Speech Commands)",
            2,
        )
    if recipe.embedding and feature_models is None:
        raise RecipeError(
            f"the {recipe.name} recipe runs on openWakeWord's feature models: give --feature_models, the "
            "folder with melspectrogram.tflite and embedding_model.tflite",
            2,
        )
    real = prepare_real(real_dir, work / "real") if real_dir is not None else None
    synth = prepare_synth(recipe, work / "synth", seed, work / "real" if real else None)
    sources = [f"synth={work / 'synth'}:{recipe.synth_weight:g}"]
    if real is not None and recipe.real_weight is not None:
        sources.append(f"people={work / 'real'}:{recipe.real_weight:g}")
    flags = train_flags(recipe, work, sources, seed, feature_models)
    done_marker = work / "models" / "recipe_train_flags.json"
    if (
        (work / "models" / f"{recipe.architecture}.kwsd").exists()
        and done_marker.exists()
        and json.loads(done_marker.read_text()) == flags
    ):
        print(
            f"recipe {recipe.name}: trained already with these flags in {work / 'models'} "
            "(delete it to train again)",
            file=sys.stderr,
        )
    else:
        done_marker.unlink(missing_ok=True)
        print(f"recipe {recipe.name}: python tools/train.py {' '.join(flags)}", file=sys.stderr)
        code = train(flags)
        if code:
            raise RecipeError(f"tools/train.py failed (exit {code})", 1)
        done_marker.write_text(json.dumps(flags))

    # The people's partitions where there are people, else the synthesiser's.
    stream_data = work / "real" if real is not None else work / "synth"
    streams = work / "streams"
    streams.mkdir(exist_ok=True)
    words = make_stream(
        stream_data,
        streams / "validation.wav",
        recipe,
        partition="validation",
        duration_s=recipe.calibration_s,
        seed=seed,
    )
    background = make_stream(
        stream_data,
        streams / "background.wav",
        recipe,
        partition="validation",
        duration_s=recipe.background_s,
        seed=seed + 1,
        background_only=True,
    )
    models = work / "models"
    chosen = calibrate(models / f"{recipe.architecture}.kwsd", words, background, recipe.target_fa_per_hour)
    demo = make_stream(
        stream_data,
        streams / "demo.wav",
        recipe,
        partition="testing",
        duration_s=recipe.demo_s,
        seed=seed + 2,
        snr_db=recipe.demo_snr_db,
        sequence=recipe.demo_sequence,
    )

    recipe_split = {
        "validation_percentage": recipe.validation_percentage,
        "testing_percentage": recipe.testing_percentage,
        "silence_percentage": 10.0,  # train.py's default: the recipe does not set it
        "unknown_percentage": recipe.unknown_percentage,
    }
    dataset_note = {
        "recipe": recipe.name,
        "synthetic": {
            "generator": synth.get("generator"),
            "engines": list(recipe.engines),
            "voices": synth.get("voice_counts"),
            "speakers": synth.get("engine_speakers"),
            "clips": synth.get("clips"),
            "words": list(recipe.words),
            "unknown_words": list(recipe.unknown_words),
            "seed": synth.get("seed"),
        },
    }
    calibration = {
        "reachable": chosen["reachable"],
        "target_fa_per_hour": chosen["target_fa_per_hour"],
        "figures": chosen["figures"],
        "hours": chosen["hours"],
        "on": f"{stream_data.name} validation partition",
    }
    written: dict[str, Path] = {}
    for suffix in ("", "-float"):
        trained = read_bundle(models / f"{recipe.architecture}{suffix}.kwsd")
        bundle = make_bundle(
            trained.tflite,
            trained.labels,
            trained.frontend,
            name="demo" if out is not None else recipe.name,
            tool=f"{TOOL_NAME} {recipe.name} (tools/train.py)",
            # train.py records the split; the recipe's own, for a model trained before it did.
            dataset={"split": recipe_split, **trained.provenance["dataset"], **dataset_note},
            metrics={**trained.metrics, "calibration": calibration},
            detection=chosen["detection"],
        )
        target = (out or work) / f"{'demo' if out is not None else recipe.name}{suffix}.kwsd"
        target.parent.mkdir(parents=True, exist_ok=True)
        written[suffix or "int8"] = write_bundle(bundle, target)
    heard = evaluate(written["int8"], demo)
    if out is not None:
        shutil.copyfile(demo, out / "demo.wav")
        shutil.copyfile(demo.with_suffix(".txt"), out / "demo.txt")
        (out / ATTRIBUTION_FILE).write_text(_attribution_note(recipe, real, synth), encoding="utf-8")
    summary = {
        "recipe": recipe.name,
        "seconds": round(time.monotonic() - started),
        "bundles": {k: str(v) for k, v in written.items()},
        "test_by_source": read_bundle(written["int8"]).metrics.get("test_by_source"),
        "detection": chosen["detection"],
        "calibration": calibration,
        "demo_wav": heard,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _attribution_note(recipe: Recipe, real: dict[str, Any] | None, synth: dict[str, Any]) -> str:
    lines = [
        f"demo.kwsd and demo-float.kwsd were trained by `python {TOOL_NAME} {recipe.name}` "
        "(tools/train.py) on:",
        "",
    ]
    if real is not None:
        clips = sum(real["clips"].values())
        lines += [
            f"- real speech: {clips} clips from {real['data_dir']}",
            f"  {real['attribution'] or '(no licence stated)'}",
            "",
            "demo.wav holds clips of that set's test-partition speakers (people the model never "
            "heard in training) over its background noise, and is under the same terms.",
            "",
        ]
    counts = synth.get("voice_counts") or {}
    lines += [
        f"- synthetic speech: {synth.get('clips', '?')} clips made by "
        f"{synth.get('generator', 'tools/synth.py')}, "
        f"voices per engine: {', '.join(f'{e} {n}' for e, n in counts.items()) or '?'}; made here, "
        "nothing to credit beyond the programs' own licences (piper-tts is GPL-3.0 and runs only in "
        "the training tools; its bundled joe voice is MIT-licensed, made from CC0 data: see its "
        "MODEL_CARD).",
        "",
    ]
    return "\n".join(lines)


def print_summary(summary: dict[str, Any]) -> None:
    print(f"recipe {summary['recipe']}: done in {summary['seconds']} s")
    for source, figures in (summary["test_by_source"] or {}).items():
        words = ", ".join(
            f"{w} {100 * f['accuracy']:.0f}%" for w, f in sorted(figures.get("words", {}).items())
        )
        print(
            f"  test accuracy on {source}: {100 * figures['accuracy']:.1f}% (N={figures['count']}, int8, "
            f"TFLite): {words}"
        )
    cal = summary["calibration"]
    print(
        f"  detection settings: {json.dumps(summary['detection'], sort_keys=True)} "
        f"({'within' if cal['reachable'] else 'NOT within'} {cal['target_fa_per_hour']:g} false accepts per "
        f"hour on {cal['on']}, {cal['hours']:.2f} h)"
    )
    heard = summary["demo_wav"]["figures"]
    print(
        f"  demo.wav ({summary['demo_wav']['audio']['seconds']:.0f} s, {heard['words']} words): "
        f"{heard['matched']} matched, {heard['correct']} correct, {heard['wrong']} wrong, "
        f"{heard['false_positive']} false positives (kwsd evaluate)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="recipes: " + "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values()),
    )
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument(
        "--real_dir", type=Path, help="real recordings, Speech Commands' layout (WAV or FLAC)"
    )
    parser.add_argument("--work_dir", type=Path, help="default /tmp/kwsd_recipe_<recipe>")
    parser.add_argument("--out", type=Path, help="write demo.kwsd, demo-float.kwsd, demo.wav, demo.txt here")
    parser.add_argument("--seed", type=int, default=1, help="voices, split of unknowns, training")
    parser.add_argument("--steps", help="override the recipe's training steps, e.g. 2000,500")
    parser.add_argument(
        "--feature_models",
        type=Path,
        help="embedding recipes: the folder with openWakeWord's melspectrogram.tflite and "
        "embedding_model.tflite",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    recipe = RECIPES[args.recipe]
    if args.steps:
        from dataclasses import replace

        recipe = replace(recipe, steps=args.steps)
    work = args.work_dir or Path(f"/tmp/kwsd_recipe_{recipe.name}")
    try:
        summary = run(
            recipe,
            work=work,
            real_dir=args.real_dir,
            out=args.out,
            seed=args.seed,
            feature_models=args.feature_models,
        )
    except RecipeError as err:
        print(f"recipe: error: {err}", file=sys.stderr)
        return err.code
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
