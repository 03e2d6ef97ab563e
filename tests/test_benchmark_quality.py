"""tools/benchmark_quality.py: its checks, its keyword-free audio and the shape of its report.

Behaviour on tiny inputs, not accuracy: the "real" set here is tones in Speech Commands'
layout, measured with the shipped demo bundle (no training).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kwsd.audio import read_wav, write_wav
from kwsd.bundle import demo_bundle_path, read_bundle, write_bundle
from kwsd.evaluate import read_truth
from kwsd.labels import UNKNOWN_LABEL
from kwsd_tools import benchmark_quality as bq
from kwsd_tools.training.dataset import which_set

RATE = 16000
LICENCE = "# Tones\n\n## Licence and attribution\n\nMade by the test, CC BY 4.0.\n"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="needs espeak-ng and sox"
)


def speakers(partition: str, count: int) -> list[str]:
    """Speaker names the demo bundle's recorded split (11% validation, 3% testing) puts in ``partition``."""
    split = read_bundle(demo_bundle_path()).provenance["dataset"]["split"]
    percentages = (split["validation_percentage"], split["testing_percentage"])
    names = (f"spk{i:04d}" for i in range(5000))
    return [n for n in names if which_set(f"{n}_nohash_0.wav", *percentages) == partition][:count]


def tone_set(root: Path, words: tuple[str, ...] = (*KEYWORDS, "cat", "marvin")) -> Path:
    """A Speech Commands-style folder of 1 s tones (a different pitch per word), two test, one
    validation and two training speakers per word, 5 s of noise and a README stating its terms."""
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    people = speakers("testing", 2) + speakers("validation", 1) + speakers("training", 2)
    for n, word in enumerate(words):
        (root / word).mkdir(parents=True)
        for person in people:
            tone = 6000 * np.sin(2 * np.pi * (300 + 90 * n) * t) * np.hanning(RATE)
            write_wav(root / word / f"{person}_nohash_0.wav", tone.astype(np.int16), RATE)
    (root / "_background_noise_").mkdir()
    noise = rng.normal(0, 2000, 5 * RATE).clip(-32768, 32767).astype(np.int16)
    write_wav(root / "_background_noise_" / "noise.wav", noise, RATE)
    (root / "README.md").write_text(LICENCE)
    return root


# --------------------------------------------------------------------------------------
# Bad input: one line, its own exit code, no work.


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = bq.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_an_unknown_recipe_is_exit_64_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    code, out, err = run_main(
        ["--real_dir", str(tmp_path), "--work_dir", str(work), "--recipes", "demo,best"], capsys
    )
    assert (code, out) == (64, "")
    assert err == (
        "benchmark_quality: error: --recipes: unknown recipe 'best' (expected some of demo, embedding, "
        "embedding_synthetic, espeak, quick, synthetic)\n"
    )
    assert not work.exists()


def test_an_embedding_recipe_without_feature_models_is_exit_64_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    code, out, err = run_main(
        ["--real_dir", str(tmp_path), "--work_dir", str(work), "--recipes", "demo,embedding_synthetic"],
        capsys,
    )
    assert (code, out) == (64, "")
    assert err.startswith(
        "benchmark_quality: error: --recipes embedding_synthetic: an embedding recipe needs --feature_models"
    )
    nowhere = ["--feature_models", str(tmp_path / "nowhere")]
    code, _, err = run_main(
        ["--real_dir", str(tmp_path), "--work_dir", str(work), "--recipes", "embedding", *nowhere], capsys
    )
    assert code == 66 and "--feature_models " in err and "nowhere: no such folder" in err
    assert not work.exists()


def test_a_missing_real_folder_is_exit_66(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(
        ["--real_dir", str(tmp_path / "nowhere"), "--work_dir", str(tmp_path / "w")], capsys
    )
    assert (code, out) == (66, "")
    assert err == f"benchmark_quality: error: --real_dir {tmp_path / 'nowhere'}: no such folder\n"
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    code, _, err = run_main(["--real_dir", str(tmp_path / "empty")], capsys)
    assert code == 66
    assert err == (
        f"benchmark_quality: error: --real_dir {tmp_path / 'empty'}: no <word>/*.wav or <word>/*.flac clips "
        "(Speech Commands' layout)\n"
    )
    assert not (tmp_path / "w").exists()


def test_a_bundle_that_is_not_there_is_66_and_one_that_is_not_a_bundle_67(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tone_set(tmp_path / "real", ("yes",))
    work = tmp_path / "work"
    base = ["--real_dir", str(real), "--work_dir", str(work), "--recipes", "demo"]
    code, _, err = run_main([*base, "--model", f"demo={tmp_path / 'no.kwsd'}"], capsys)
    assert code == 66
    assert err == f"benchmark_quality: error: --model demo={tmp_path / 'no.kwsd'}: no such file\n"
    (tmp_path / "fake.kwsd").write_text("not a bundle\n")
    code, _, err = run_main([*base, "--model", f"demo={tmp_path / 'fake.kwsd'}"], capsys)
    assert code == 67
    assert err.startswith(f"benchmark_quality: error: --model demo={tmp_path / 'fake.kwsd'}: ")
    assert err.count("\n") == 1
    assert not work.exists()


def test_a_real_folder_without_a_measured_word_is_exit_65(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tone_set(tmp_path / "real", ("yes", "cat"))
    work = tmp_path / "work"
    argv = ["--real_dir", str(real), "--work_dir", str(work), "--recipes", "demo"]
    code, _, err = run_main([*argv, "--model", f"demo={demo_bundle_path()}"], capsys)
    assert code == 65
    assert err == (
        f"benchmark_quality: error: --real_dir {real}: no clips of {', '.join(KEYWORDS[1:])}, a word of the "
        f"demo bundle ({', '.join(KEYWORDS)}): its accuracy on real people cannot be measured\n"
    )
    code, _, err = run_main(argv, capsys)  # the recipe's own ten words, when it is to be trained
    assert code == 65
    assert err.startswith(f"benchmark_quality: error: --real_dir {real}: no clips of no, up, down, left, ")
    assert not work.exists()


def test_a_model_flag_must_name_a_recipe_measured_and_a_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tone_set(tmp_path / "real", ("yes",))
    base = ["--real_dir", str(real), "--work_dir", str(tmp_path / "work"), "--recipes", "demo"]
    code, _, err = run_main([*base, "--model", "kwsd/demo/demo.kwsd"], capsys)
    assert code == 64
    assert err == (
        "benchmark_quality: error: --model kwsd/demo/demo.kwsd: expected RECIPE=BUNDLE, "
        "e.g. demo=kwsd/demo/demo.kwsd\n"
    )
    code, _, err = run_main([*base, "--model", f"espeak={demo_bundle_path()}"], capsys)
    assert code == 64
    message = f"--model espeak={demo_bundle_path()}: espeak is not among --recipes demo"
    assert err == f"benchmark_quality: error: {message}\n"


def test_a_missing_real_dir_flag_is_argparse_s_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bq.main(["--recipes", "demo"])
    assert exited.value.code == 2
    assert "the following arguments are required: --real_dir" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# Keyword-free audio.


def test_keywords_are_found_as_words_not_inside_words() -> None:
    assert bq.words_of("No-one said 'Yes', don't STOP!") == ["no", "one", "said", "yes", "don", "t", "stop"]
    assert bq.contains_keyword("Turn it ON now.", KEYWORDS)
    assert bq.contains_keyword("She has no-one to ask.", KEYWORDS)
    assert bq.contains_keyword("The right key.", KEYWORDS)
    assert not bq.contains_keyword("Yesterday nobody was going upstairs, knowing it stopped.", KEYWORDS)
    assert not bq.contains_keyword("", KEYWORDS)


def test_the_sentences_are_distinct_repeatable_and_hold_no_keyword() -> None:
    first = [s for s, _ in zip(bq.sentences(1, KEYWORDS), range(400), strict=False)]
    again = [s for s, _ in zip(bq.sentences(1, KEYWORDS), range(400), strict=False)]
    assert first == again
    assert len(set(first)) == 400
    assert not [s for s in first if bq.contains_keyword(s, KEYWORDS)]
    # The grammar does make sentences with keywords ("turned off", "left", "the right key"):
    # the filter, not luck, keeps them out.
    every = [s for s, _ in zip(bq.sentences(1, ()), range(400), strict=False)]
    assert [s for s in every if bq.contains_keyword(s, KEYWORDS)]
    assert all(s[0].isupper() and s.endswith(".") for s in first)


def test_sentences_are_laid_end_to_end_over_the_noise_until_the_stream_is_full() -> None:
    second = np.full(RATE, 0.5)
    utterances = iter([(f"s{i}", second) for i in range(100)])
    noise = {"n.wav": np.random.default_rng(0).normal(0, 0.1, 3 * RATE)}
    mixed = bq.mix_sentences(utterances, noise, duration_s=10.0, snr_db=10.0, seed=3)
    assert len(mixed.audio) == 10 * RATE and mixed.audio.dtype == np.int16
    # 1 s sentences with gaps of 0.5-2.5 s: 3 to 6 fit in 10 s, and the speech is what was laid.
    assert 3 <= len(mixed.texts) <= 6
    assert mixed.texts == [f"s{i}" for i in range(len(mixed.texts))]
    assert mixed.speech_s == len(mixed.texts)


@needs_sox
def test_the_real_no_keyword_stream_holds_only_other_words(tmp_path: Path) -> None:
    real = tone_set(tmp_path / "real")
    bundle = read_bundle(demo_bundle_path())
    wav, made = bq._real_stream(
        bundle, real, tmp_path / "other.wav", duration_s=30.0, seed=1, unknown_percentage=100.0, snr_db=10.0
    )
    truth = read_truth(wav.with_suffix(".txt"))
    labels = [w.label for w in truth.words]
    assert labels == [UNKNOWN_LABEL] * 10  # 30 s of 3 s slots, none of them a keyword
    assert made == {"words": 10, "distinct_clips": 4, "seconds": 30.0}  # cat and marvin, 2 test speakers each
    assert len(read_wav(wav, RATE)) == 30 * RATE


# --------------------------------------------------------------------------------------
# The report.


def test_the_summary_says_ok_missed_or_not_measured_against_each_target() -> None:
    report = {
        "recipes": {"demo": {"clip_accuracy": {"accuracy": 0.925}}},
        "measured": {"recipe": "demo"},
        "streaming": {"figures": {"words": 200, "matched": 199, "correct": 189}},
        "no_keyword": {"false_accepts_per_hour": 0.0, "hours": 0.5},
        "pipeline": {"total_ms": 1.5},
    }
    assert bq.summary_rows(report) == [
        {"target": "clip accuracy on real people, demo recipe >= 92%", "figure": "92.5%", "status": "OK"},
        {
            "target": "clip accuracy on real people, synthetic recipe >= 70%",
            "figure": None,
            "status": "not measured",
        },
        {
            "target": "streaming, real keywords matched correctly >= 95% (demo)",
            "figure": "94.5% (any 99.5%)",  # a word heard as another keyword is not a match
            "status": "MISSED",
        },
        {
            "target": "false accepts per hour on no-keyword audio <= 0.5 (demo)",
            "figure": "0.00 in 0.50 h (< 1 h)",
            "status": "MISSED",  # too little audio to claim the target
        },
        {"target": "pipeline CPU per audio second <= 2 ms (demo)", "figure": "1.500 ms", "status": "OK"},
    ]


@pytest.mark.slow
@needs_espeak
def test_a_whole_run_on_the_demo_bundle_reports_every_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tone_set(tmp_path / "real")
    work = tmp_path / "work"
    argv = [
        "--real_dir", str(real), "--work_dir", str(work), "--recipes", "demo",
        "--model", f"demo={demo_bundle_path()}", "--stream_s", "30", "--no_keyword_s", "36",
        "--sentence_engines", "espeak", "--repeats", "1",
    ]  # fmt: skip
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    report = json.loads((work / "report.json").read_text())
    assert set(report) == {
        "real_dir", "real_clips", "attribution", "seed", "recipes", "measured", "streaming",
        "no_keyword", "pipeline", "seconds", "summary",
    }  # fmt: skip
    accuracy = report["recipes"]["demo"]["clip_accuracy"]
    assert list(accuracy["per_label"]) == ["_silence_", "_unknown_", *KEYWORDS]
    assert accuracy["count"] == sum(f["count"] for f in accuracy["per_label"].values())
    assert [accuracy["per_label"][w]["count"] for w in KEYWORDS] == [2] * len(KEYWORDS)
    assert report["streaming"]["figures"]["words"] == report["streaming"]["words"] == 10
    parts = report["no_keyword"]["parts"]
    assert list(parts) == ["real other words", "espeak sentences", "noise alone"]
    assert round(report["no_keyword"]["hours"] * 3600) == 36
    assert report["no_keyword"]["false_accepts"] == sum(p["false_accepts"] for p in parts.values())
    for name in ("keywords", "other-words", "sentences-espeak", "noise"):
        assert (work / "streams" / f"{name}.wav").is_file()
    assert read_truth(work / "streams" / "sentences-espeak.txt").words == ()
    spoken = (work / "streams" / "sentences-espeak.sentences.txt").read_text().splitlines()
    assert spoken and not [s for s in spoken if bq.contains_keyword(s, KEYWORDS)]
    assert "Made by the test, CC BY 4.0." in (work / "streams" / "ATTRIBUTION.txt").read_text()
    assert [r["status"] for r in report["summary"]][1] == "not measured"
    # Every section and every target is printed, from the same figures.
    for heading in ("1. clip accuracy", "2. streaming on real speech", "3. false accepts", "4. pipeline CPU"):
        assert heading in out
    for row in report["summary"]:
        assert row["target"] in out


def test_a_bundle_that_records_no_split_is_refused_rather_than_measured_on_a_guess(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = read_bundle(demo_bundle_path())
    dataset = {k: v for k, v in demo.provenance["dataset"].items() if k != "split"}
    old = write_bundle(
        dataclasses.replace(demo, provenance={**demo.provenance, "dataset": dataset}), tmp_path / "old.kwsd"
    )
    real = tone_set(tmp_path / "real", ("yes",))
    work = tmp_path / "work"
    argv = ["--real_dir", str(real), "--work_dir", str(work), "--recipes", "demo", "--model", f"demo={old}"]
    code, _, err = run_main(argv, capsys)
    assert code == 67
    assert err == (
        f"benchmark_quality: error: --model demo={old}: its provenance records no data split, so its test "
        "partition cannot be rebuilt (bundles from tools/train.py and tools/recipe.py record it since "
        "2026-12-06)\n"
    )
    assert not work.exists()
