"""tools/recipe.py: real data brought in with its licence, and one whole (quick) recipe run.

The slow tests run ``recipe.py quick`` once on a synthetic set plus a "people" set given as
FLAC with a README that states its licence, the way ``shared/realspeech`` is laid out (made
here from other espeak-ng voices, so the test needs no recordings), and check what it wrote
with kwsd's own reader, pipeline and CLI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from training_tools import missing_training_tools

from kwsd import __version__
from kwsd import evaluate as ev
from kwsd.audio import read_wav, write_wav
from kwsd.bundle import read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.detection import resolve_detection
from kwsd.evaluate import read_truth
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd.pipeline import build_pipeline
from kwsd.smoother import RecognizeCommands
from kwsd_tools import recipe
from kwsd_tools.training.layout import features_as_channels

REPO = Path(__file__).resolve().parent.parent
RATE = 16000
LICENCE = (
    "# A set\n\nSome clips.\n\n## Licence and attribution\n\nRecorded by the test's people, CC BY 4.0.\n"
    "Cite: Test, 2026.\n\n## Layout\n\nNot part of it.\n"
)
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")


# --------------------------------------------------------------------------------------
# Fast tests.


def test_the_attribution_is_the_readme_s_licence_section(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(LICENCE)
    assert recipe.attribution_text(tmp_path) == (
        "Licence and attribution: Recorded by the test's people, CC BY 4.0. Cite: Test, 2026."
    )
    (tmp_path / "ATTRIBUTION.txt").write_text("Own terms.\n")
    assert recipe.attribution_text(tmp_path) == "Own terms."  # the folder's own file comes first


def test_a_folder_without_terms_has_no_attribution(tmp_path: Path) -> None:
    assert recipe.attribution_text(tmp_path) is None
    (tmp_path / "README.md").write_text("# Clips\n\nNo terms here.\n")
    assert recipe.attribution_text(tmp_path) is None


@needs_sox
def test_real_clips_in_flac_become_wav_with_their_attribution_beside_them(tmp_path: Path) -> None:
    source = tmp_path / "real"
    (source / "yes").mkdir(parents=True)
    (source / "README.md").write_text(LICENCE)
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.int16)
    write_wav(tmp_path / "tone.wav", tone, RATE)
    subprocess.run(["sox", str(tmp_path / "tone.wav"), str(source / "yes" / "a_nohash_0.flac")], check=True)
    held = recipe.prepare_real(source, tmp_path / "work")
    assert held["clips"] == {"yes": 1}
    np.testing.assert_array_equal(read_wav(tmp_path / "work" / "yes" / "a_nohash_0.wav", RATE), tone)
    assert (tmp_path / "work" / "ATTRIBUTION.txt").read_text().startswith("Licence and attribution: Recorded")


def test_a_missing_or_empty_real_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(recipe.RecipeError) as missing:
        recipe.prepare_real(tmp_path / "nowhere", tmp_path / "work")
    assert missing.value.code == 66
    assert str(missing.value) == f"--real_dir {tmp_path / 'nowhere'}: no such folder"
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(recipe.RecipeError, match=r"no <word>/\*.wav or <word>/\*.flac clips") as empty:
        recipe.prepare_real(tmp_path / "empty", tmp_path / "work")
    assert empty.value.code == 66
    assert not (tmp_path / "work").exists()  # nothing half-written


def test_the_demo_recipe_needs_real_speech(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert recipe.main(["demo", "--work_dir", str(tmp_path)]) == 2
    assert "the demo recipe trains on real speech: give --real_dir" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_recipes_train_with_tools_train_py_s_flags() -> None:
    flags = recipe.train_flags(
        recipe.RECIPES["demo"], Path("/w"), ["synth=/w/synth:1", "people=/w/real:3"], 7
    )
    assert "--data_dir=synth=/w/synth:1" in flags and "--data_dir=people=/w/real:3" in flags
    assert "--validation_percentage=11" in flags and "--testing_percentage=3" in flags
    assert "--wanted_words=yes,no,up,down,left,right,on,off,stop,go" in flags
    assert "--seed=7" in flags and "--no_robust_augmentation" not in flags
    # The parser of the real trainer takes every flag the recipe gives it.
    from kwsd_tools.train import build_parser

    args = build_parser().parse_args(flags)
    assert args.model_architecture == "ds_cnn" and args.window_stride_ms == 20
    baseline = recipe.train_flags(recipe.RECIPES["espeak"], Path("/w"), ["synth=/w/synth:1"], 1)
    assert "--no_robust_augmentation" in baseline
    # The embedding recipes: the same data on the feature models the user gives, an mlp head.
    embedding = recipe.train_flags(
        recipe.RECIPES["embedding"], Path("/w"), ["synth=/w/synth:1"], 1, Path("/oww")
    )
    args = build_parser().parse_args(embedding)
    assert (args.preprocess, args.feature_models, args.model_architecture) == ("embedding", "/oww", "mlp")
    assert (args.time_shift_ms, args.time_masks, args.freq_masks) == (200, 0, 0)
    assert args.window_stride_ms == 10 and args.feature_bin_count == 40  # train.py's: not set


def test_an_embedding_recipe_needs_feature_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert recipe.main(["embedding_synthetic", "--work_dir", str(tmp_path)]) == 2
    assert "the embedding_synthetic recipe runs on openWakeWord's feature models: give --feature_models" in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# One real quick recipe run.


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    reason = missing_training_tools()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("recipe_quick")
    # "People": other espeak-ng voices, as FLAC, with a README that states their terms.
    voices = root / "voices"
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "synth.py"), "--out", str(voices), "--words", "yes,no",
         "--unknown-words", "up,down", "--voices", "20", "--seed", "99"],
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    people = root / "people"
    for wav in voices.glob("*/*.wav"):
        flac = people / wav.parent.name / (wav.stem + ".flac")
        flac.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sox", str(wav), str(flac)], check=True)
    (people / "README.md").write_text(LICENCE)
    out, work = root / "out", root / "work"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "recipe.py"), "quick", "--real_dir", str(people),
         "--work_dir", str(work), "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"recipe.py quick failed:\n{result.stderr[-4000:]}"
    (root / "stdout.txt").write_text(result.stdout)
    return {"root": root, "out": out, "work": work, "people": people}


@pytest.mark.slow
def test_quick_run_writes_the_demo_files(quick_run: dict[str, Path]) -> None:
    out = quick_run["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "ATTRIBUTION.txt", "demo-float.kwsd", "demo.kwsd", "demo.txt", "demo.wav",
    ]  # fmt: skip
    for name, dtype in {"demo.kwsd": "int8", "demo-float.kwsd": "float32"}.items():
        bundle = read_bundle(out / name)
        assert list(bundle.labels) == [SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no"]
        assert bundle.name == "demo"
        classifier = TfliteClassifier(bundle)
        assert classifier.input_description.startswith(f"{dtype} [1,49,13]")
        # The temporal DS-CNN's first conv already reads the 13 features as channels.
        assert features_as_channels(bundle.tflite).convs == ()
    stdout = (quick_run["root"] / "stdout.txt").read_text()
    assert "test accuracy on people: " in stdout and "test accuracy on synth: " in stdout


@pytest.mark.slow
def test_quick_run_bundle_names_its_data_and_carries_the_attribution(quick_run: dict[str, Path]) -> None:
    bundle = read_bundle(quick_run["out"] / "demo.kwsd")
    provenance = bundle.provenance
    assert provenance["tool"] == "tools/recipe.py quick (tools/train.py)"
    assert provenance["tool_version"] == f"kwsd {__version__}"
    sources = provenance["dataset"]["sources"]
    assert set(sources) == {"synth", "people"}
    assert sources["people"]["attribution"] == (
        "Licence and attribution: Recorded by the test's people, CC BY 4.0. Cite: Test, 2026."
    )
    assert "attribution" not in sources["synth"]  # synthesised here: nothing to credit
    assert provenance["dataset"]["recipe"] == "quick"
    # The split is recorded, so the test partition can be rebuilt (tools/benchmark_quality.py).
    assert provenance["dataset"]["split"]["validation_percentage"] == 10.0
    assert provenance["dataset"]["split"]["testing_percentage"] == 10.0
    assert provenance["dataset"]["synthetic"]["engines"] == ["espeak"]
    # Per source and word, measured by the interpreter on each source's test partition.
    by_source = bundle.metrics["test_by_source"]
    assert {"synth", "people"} <= set(by_source)
    assert set(by_source["people"]["words"]) == {SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no"}
    # What model info shows a user.
    info = subprocess.run(
        [sys.executable, "-m", "kwsd", "model", "info", str(quick_run["out"] / "demo.kwsd")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = info.stdout.splitlines()
    assert any(line.startswith("data:       people (weight 1): ") for line in lines)
    assert (
        "            Licence and attribution: Recorded by the test's people, CC BY 4.0. Cite: Test, 2026."
        in lines
    )
    note = (quick_run["out"] / "ATTRIBUTION.txt").read_text()
    assert "Recorded by the test's people, CC BY 4.0" in note and "demo.wav" in note


@pytest.mark.slow
def test_quick_run_records_calibrated_detection_settings(quick_run: dict[str, Path]) -> None:
    bundle = read_bundle(quick_run["out"] / "demo.kwsd")
    settings = resolve_detection(bundle.detection, {}, window_stride_ms=20)
    assert settings.clip_stride_ms == 20
    RecognizeCommands(bundle.labels, settings.smoother)
    summary = json.loads((quick_run["work"] / "summary.json").read_text())
    assert summary["detection"] == bundle.detection
    assert bundle.metrics["calibration"]["on"] == "real validation partition"


@pytest.mark.slow
def test_quick_run_demo_wav_is_test_speakers_and_what_evaluate_reported(quick_run: dict[str, Path]) -> None:
    out = quick_run["out"]
    truth = read_truth(out / "demo.txt")
    audio = read_wav(out / "demo.wav", RATE)
    assert len(audio) == 30 * RATE
    assert {w.label for w in truth.words} <= {"yes", "no", UNKNOWN_LABEL}
    assert len(truth.words) >= 8
    # The figures the recipe printed are kwsd's pipeline on that file with the bundle's settings.
    bundle = read_bundle(out / "demo.kwsd")
    pipeline = build_pipeline(bundle)
    detections = list(pipeline.feed(audio))
    words = [(w.label, w.start_ms) for w in truth.words]
    scored = ev.score_detections(detections, words, window_ms=ev.window_span_ms(bundle.frontend))
    mine = ev.figures(scored, words, bundle.labels, len(audio) / RATE * 1000).to_dict()
    summary = json.loads((quick_run["work"] / "summary.json").read_text())
    assert summary["demo_wav"]["figures"] == mine
