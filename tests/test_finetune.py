"""Fine-tuning (tools/train.py --fine_tune_from) and training on reviewed kwsd captures.

Tiny TensorFlow runs on tone data written here (no speech synthesiser): a base model trained for
a few steps and exported by tools/export.py, then fine-tuned from its checkpoint or its bundle;
a room's captures given beside a data set. The refusals need no TensorFlow: each stops the run
with one line before any data is read (the data folder they name does not exist).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kwsd.audio import write_wav
from kwsd.bundle import demo_bundle_path, make_bundle, read_bundle, write_bundle
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from tests.helpers import speakers
from tests.training_tools import missing_tensorflow

RATE = 16000
LABELS = [SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no"]
#: The tone of each word: a model tells them apart in a few steps.
WORD_HZ = {"yes": 500.0, "no": 1300.0, "cat": 2500.0}
needs_tensorflow = pytest.mark.skipif(missing_tensorflow() is not None, reason=str(missing_tensorflow()))


def word_clip(word: str, variant: int, rng: np.random.Generator, samples: int = RATE) -> np.ndarray[Any, Any]:
    """A 1 s clip of ``word``: its tone from 200 to 700 ms, a little noise throughout, int16."""
    t = np.arange(samples) / RATE
    tone = 0.3 * np.sin(2 * np.pi * (WORD_HZ[word] + 10 * variant) * t) * ((t > 0.2) & (t < 0.7))
    return np.rint((tone + rng.normal(0, 0.01, samples)) * 32767).astype(np.int16)


def make_words(root: Path) -> Path:
    """yes, no and cat (an unknown word) by 8 training, 3 validation and 3 testing speakers."""
    rng = np.random.default_rng(0)
    names = speakers("training", 8) + speakers("validation", 3) + speakers("testing", 3)
    for word in WORD_HZ:
        (root / word).mkdir(parents=True)
        for s, name in enumerate(names):
            write_wav(root / word / f"{name}_nohash_0.wav", word_clip(word, s, rng), RATE)
    return root


def make_captures(root: Path) -> Path:
    """reviewed/ as kwsd review leaves it: 4 false alarms (cat) in _unknown_/, 2 yes. Each 3 s,
    fired 2 s in: the word is in the second second, the first holds something else (no)."""
    rng = np.random.default_rng(1)
    for folder, word, count in ((UNKNOWN_LABEL, "cat", 4), ("yes", "yes", 2)):
        (root / folder).mkdir(parents=True)
        for n in range(count):
            audio = np.concatenate(
                (word_clip("no", n, rng), word_clip(word, n, rng), rng.integers(-300, 300, RATE))
            ).astype(np.int16)
            wav = root / folder / f"pi_nohash_{n}.wav"
            write_wav(wav, audio, RATE)
            sidecar = {
                "kind": "detection",
                "label": "yes",
                "audio_time_ms": 60_000 + 2000,
                "first_sample_audio_time_ms": 60_000,
                "sample_rate_hz": RATE,
                "model": {"name": "base", "sha256": "cd" * 32},
                "review": {"verdict": "wrong" if folder == UNKNOWN_LABEL else "correct", "label": folder},
            }
            wav.with_suffix(".json").write_text(json.dumps(sidecar))
    return root


def flags(tmp: Path, *extra: str, steps: str = "6", rates: str = "0.01") -> list[str]:
    return [
        "--data_url=",
        "--wanted_words=yes,no",
        "--model_architecture=tiny_conv",
        "--window_stride_ms=20",
        "--feature_bin_count=13",
        "--batch_size=16",
        f"--how_many_training_steps={steps}",
        f"--learning_rate={rates}",
        "--eval_step_interval=6",
        "--save_step_interval=6",
        "--augment_copies=1",
        "--workers=1",
        "--representative_count=10",
        "--no_robust_augmentation",
        f"--train_dir={tmp / 'train'}",
        "--summaries_dir=",
        f"--model_dir={tmp / 'model'}",
        *extra,
    ]


def train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from kwsd_tools.train import main

    code = main(argv)
    return code, capsys.readouterr().err


def weights_of(prefix: Path) -> list[np.ndarray[Any, Any]]:
    """The model weights in a checkpoint, read into a fresh tiny_conv as tools/export.py reads them."""
    import tensorflow as tf

    from kwsd_tools.training.models import build_model

    model = build_model("tiny_conv", frames=49, features=13, label_count=len(LABELS), dropout=0.2)
    tf.train.Checkpoint(model=model).read(str(prefix)).expect_partial()
    return [np.asarray(w) for w in model.get_weights()]


def steps_in(prefix: Path) -> dict[str, int]:
    """The run's step and the optimizer's step count saved in a checkpoint."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    names = reader.get_variable_to_shape_map()
    iterations = [n for n in names if n.startswith("optimizer/") and "iteration" in n]
    assert len(iterations) == 1, sorted(names)
    return {
        "step": int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")),
        "optimizer": int(reader.get_tensor(iterations[0])),
    }


@dataclass(frozen=True)
class Base:
    words: Path
    checkpoint: Path  # tiny_conv.ckpt-6
    bundle: Path  # made from it by tools/export.py


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    from kwsd_tools.export import main as export_main
    from kwsd_tools.train import main

    root = tmp_path_factory.mktemp("base")
    words = make_words(root / "words")
    assert main([*flags(root, "--no_export"), f"--data_dir={words}"]) == 0
    checkpoint = (root / "train" / "tiny_conv.ckpt-6").resolve()  # as tools/export.py records it
    assert export_main([f"--start_checkpoint={checkpoint}", f"--model_dir={root / 'exported'}"]) == 0
    return Base(words, checkpoint, root / "exported" / "tiny_conv.kwsd")


def close_to(a: list[np.ndarray[Any, Any]], b: list[np.ndarray[Any, Any]], atol: float) -> bool:
    return len(a) == len(b) and all(np.allclose(x, y, atol=atol, rtol=0) for x, y in zip(a, b, strict=True))


# --- fine-tuning ---------------------------------------------------------------------------------


@needs_tensorflow
def test_fine_tuning_from_a_checkpoint_starts_at_step_1_on_its_weights(
    base: Base, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One step at a vanishing rate: the weights after it are the weights it started from.
    run = tmp_path / "tuned"
    argv = flags(run, "--no_export", f"--fine_tune_from={base.checkpoint}", steps="1", rates="1e-9")
    code, err = train([*argv, f"--data_dir={base.words}"], capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("fine-tune: ")] == [
        f"fine-tune: from checkpoint {base.checkpoint} (step 6): its weights only (a new optimizer), "
        "steps 1 to 1 at --learning_rate 1e-9"
    ]
    tuned = run / "train" / "tiny_conv.ckpt-1"
    assert close_to(weights_of(tuned), weights_of(base.checkpoint), atol=1e-6)
    # Not the base's optimizer or step: both count this run's one step.
    assert steps_in(base.checkpoint) == {"step": 6, "optimizer": 6}
    assert steps_in(tuned) == {"step": 1, "optimizer": 1}
    run_log = (run / "train" / "train.log").read_text().splitlines()
    assert [line.split(":")[0] for line in run_log if line.startswith("Step #")] == ["Step #1"]
    record = json.loads(Path(f"{tuned}.json").read_text())
    assert record["step"] == 1
    assert record["fine_tuned_from"] == {
        "path": str(base.checkpoint),
        "checkpoint": str(base.checkpoint),
        "step": 6,
    }

    # The same step from random weights lands far from the base: the comparison above means something.
    fresh = tmp_path / "fresh"
    code, err = train(
        [*flags(fresh, "--no_export", steps="1", rates="1e-9"), f"--data_dir={base.words}"], capsys
    )
    assert code == 0, err
    assert not close_to(
        weights_of(fresh / "train" / "tiny_conv.ckpt-1"), weights_of(base.checkpoint), atol=1e-3
    )

    # tools/export.py carries it into the bundle's provenance.
    from kwsd_tools.export import main as export_main

    assert export_main([f"--start_checkpoint={tuned}", f"--model_dir={tmp_path / 'exported'}"]) == 0
    exported = read_bundle(tmp_path / "exported" / "tiny_conv.kwsd")
    assert exported.provenance["dataset"]["fine_tuned_from"] == record["fine_tuned_from"]


@needs_tensorflow
def test_fine_tuning_from_an_exported_bundle_takes_its_checkpoint_s_weights(
    base: Base, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha256 = read_bundle(base.bundle).sha256
    run = tmp_path / "tuned"
    argv = flags(run, f"--fine_tune_from={base.bundle}", steps="1", rates="1e-9")
    code, err = train([*argv, f"--data_dir={base.words}"], capsys)
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith("fine-tune: ")] == [
        f"fine-tune: from bundle {base.bundle} (sha256 {sha256[:12]}...; exported from {base.checkpoint}, "
        "step 6): its weights only (a new optimizer), steps 1 to 1 at --learning_rate 1e-9"
    ]
    tuned = run / "train" / "tiny_conv.ckpt-1"
    assert close_to(weights_of(tuned), weights_of(base.checkpoint), atol=1e-6)
    assert steps_in(tuned) == {"step": 1, "optimizer": 1}
    expected = {
        "path": str(base.bundle),
        "checkpoint": str(base.checkpoint),
        "step": 6,
        "bundle_sha256": sha256,
    }
    assert json.loads(Path(f"{tuned}.json").read_text())["fine_tuned_from"] == expected
    # The run's own bundle says what it was fine-tuned from and which checkpoint it holds ...
    made = read_bundle(run / "model" / "tiny_conv.kwsd")
    assert made.provenance["dataset"]["fine_tuned_from"] == expected
    assert made.provenance["dataset"]["checkpoint"] == str(tuned.resolve())

    # ... so it can be fine-tuned from in turn.
    again = tmp_path / "again"
    code, err = train(
        [*flags(again, "--no_export", f"--fine_tune_from={run / 'model' / 'tiny_conv.kwsd'}", steps="2",
                rates="0.001"), f"--data_dir={base.words}"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads((again / "train" / "tiny_conv.ckpt-2.json").read_text())
    assert record["fine_tuned_from"]["checkpoint"] == str(tuned.resolve())
    assert record["fine_tuned_from"]["bundle_sha256"] == made.sha256


@needs_tensorflow
def test_a_resumed_fine_tuning_run_keeps_saying_what_it_was_tuned_from(
    base: Base, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "tuned"
    tuned = flags(run, "--no_export", f"--fine_tune_from={base.checkpoint}", steps="6", rates="0.001")
    code, err = train([*tuned, f"--data_dir={base.words}"], capsys)
    assert code == 0, err
    checkpoint = run / "train" / "tiny_conv.ckpt-6"
    resumed = flags(run, "--no_export", f"--start_checkpoint={checkpoint}", steps="6,2", rates="0.001,0.0005")
    code, err = train([*resumed, f"--data_dir={base.words}"], capsys)
    assert code == 0, err
    record = json.loads((run / "train" / "tiny_conv.ckpt-8.json").read_text())
    assert record["fine_tuned_from"] == {
        "path": str(base.checkpoint),
        "checkpoint": str(base.checkpoint),
        "step": 6,
    }


def fake_checkpoint(prefix: Path, **record: Any) -> Path:
    """A checkpoint's .index (empty) and its .json record: enough for the checks before loading."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.index").write_bytes(b"")
    Path(f"{prefix}.json").write_text(json.dumps({"step": 6, **record}))
    return prefix


def demo_with(path: Path, **dataset: Any) -> Path:
    """The demo's model, labels and front end in a bundle made by tools/export.py with ``dataset``
    as its provenance's data set (where the checkpoint is recorded)."""
    demo = read_bundle(demo_bundle_path())
    bundle = make_bundle(demo.tflite, demo.labels, demo.frontend, name="demo", tool="tools/export.py",
                         dataset=dataset)  # fmt: skip
    write_bundle(bundle, path)
    return path


def refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    code, err = train([*flags(tmp_path, *extra), f"--data_dir={tmp_path / 'no data here'}"], capsys)
    return code, [line for line in err.splitlines() if line.startswith("train: error: ")]


def test_a_missing_path_or_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone = tmp_path / "train" / "tiny_conv.ckpt-99"
    assert refusal(tmp_path, capsys, f"--fine_tune_from={gone}") == (
        64,
        [
            f"train: error: --fine_tune_from {gone}: no such bundle or checkpoint (expected a .kwsd "
            "bundle made by tools/export.py, or a checkpoint <train_dir>/<arch>.ckpt-<step> with its "
            ".index beside it)"
        ],
    )
    assert refusal(tmp_path, capsys, f"--fine_tune_from={tmp_path}") == (
        64,
        [
            f"train: error: --fine_tune_from {tmp_path}: a folder; expected a .kwsd bundle or a checkpoint "
            "<train_dir>/<arch>.ckpt-<step>"
        ],
    )
    checkpoint = fake_checkpoint(tmp_path / "train" / "tiny_conv.ckpt-6")
    assert refusal(tmp_path, capsys, f"--fine_tune_from={checkpoint}.index") == (
        64,
        [
            f"train: error: --fine_tune_from {checkpoint}.index: one of a checkpoint's files; give the "
            f"checkpoint as {checkpoint}"
        ],
    )


def test_fine_tuning_and_resuming_together_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = fake_checkpoint(tmp_path / "train" / "tiny_conv.ckpt-6")
    code, errors = refusal(
        tmp_path, capsys, f"--fine_tune_from={checkpoint}", f"--start_checkpoint={checkpoint}"
    )
    assert (code, errors) == (
        64,
        [
            f"train: error: --start_checkpoint {checkpoint} and --fine_tune_from {checkpoint}: give one "
            "(--start_checkpoint resumes a run at its step, with its optimizer; --fine_tune_from starts a "
            "new run at step 1 from its weights)"
        ],
    )


def test_a_checkpoint_of_another_model_is_refused_naming_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = fake_checkpoint(tmp_path / "old" / "single_fc.ckpt-6", architecture="single_fc", labels=LABELS)
    assert refusal(tmp_path, capsys, f"--fine_tune_from={other}") == (
        64,
        [f"train: error: --fine_tune_from {other}: made with architecture single_fc, this run has tiny_conv"],
    )
    words = fake_checkpoint(
        tmp_path / "old" / "tiny_conv.ckpt-6", architecture="tiny_conv", labels=LABELS[:3]
    )
    assert refusal(tmp_path, capsys, f"--fine_tune_from={words}") == (
        64,
        [
            f"train: error: --fine_tune_from {words}: made with labels _silence_,_unknown_,yes, this run has "
            "_silence_,_unknown_,yes,no"
        ],
    )


def test_a_bundle_without_its_checkpoint_is_refused_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo bundle records no checkpoint (tools/recipe.py made it from train.py's bundle).
    demo = demo_bundle_path()
    assert refusal(tmp_path, capsys, f"--fine_tune_from={demo}") == (
        64,
        [
            f"train: error: --fine_tune_from {demo}: made by tools/recipe.py demo (tools/train.py), which "
            "records no checkpoint; a bundle carries no trainable weights (its model is converted for "
            "inference), so fine-tune from a bundle made by tools/export.py or from a checkpoint "
            "<train_dir>/<arch>.ckpt-<step>"
        ],
    )
    # Exported from a checkpoint that has since gone (pruned, or the train_dir deleted).
    gone = tmp_path / "train" / "ds_cnn.ckpt-18000"
    bundle = demo_with(tmp_path / "old.kwsd", checkpoint=str(gone))
    assert refusal(tmp_path, capsys, f"--fine_tune_from={bundle}") == (
        64,
        [
            f"train: error: --fine_tune_from {bundle}: exported from checkpoint {gone}, which is not there "
            "any more (no ds_cnn.ckpt-18000.index); a bundle carries no trainable weights, so it needs "
            "that checkpoint: restore it, or fine-tune from another checkpoint"
        ],
    )
    # Its checkpoint's name now holds another model (a later run in the same train_dir).
    demo_labels = list(read_bundle(demo).labels)
    rewritten = fake_checkpoint(tmp_path / "reused" / "ds_cnn.ckpt-6", labels=LABELS)
    bundle = demo_with(tmp_path / "reused.kwsd", checkpoint=str(rewritten))
    assert refusal(tmp_path, capsys, f"--fine_tune_from={bundle}") == (
        64,
        [
            f"train: error: --fine_tune_from {bundle} (checkpoint {rewritten}): the checkpoint now holds a "
            f"model with labels {','.join(LABELS)}, the bundle has {','.join(demo_labels)} (the checkpoint "
            "was written again after the export)"
        ],
    )


def test_a_file_that_is_not_a_bundle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.kwsd"
    notes.write_text("not a bundle")
    code, errors = refusal(tmp_path, capsys, f"--fine_tune_from={notes}")
    assert code == 64 and len(errors) == 1
    assert errors[0].startswith(
        f"train: error: --fine_tune_from {notes}: not a kwsd bundle (not a kwsd model "
    )


# --- a room's reviewed captures beside a data set -----------------------------------------------


@needs_tensorflow
def test_captures_beside_a_data_set_train_and_are_reported_as_training_only(
    base: Base, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tensorflow as tf

    captures = make_captures(tmp_path / "reviewed")
    run = tmp_path / "run"
    argv = [
        *flags(run, steps="6", rates="0.001"),
        f"--summaries_dir={run / 'logs'}",
        f"--fine_tune_from={base.checkpoint}",
        f"--data_dir=words={base.words}",
        f"--data_dir=room={captures}:2",
    ]
    code, err = train(argv, capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert (
        "reviewed kwsd captures: 6 clip(s) (_unknown_ 4, yes 2), each cut to the 1000 ms the model heard "
        "when it fired (a near-miss: at its peak); all training (held-out figures come from the other "
        "sources)"
    ) in lines
    assert (
        f"data room ({captures}, weight 2): training 6, validation 0, testing 0 items; labels "
        "_silence_, _unknown_, yes, no"
    ) in lines
    assert any(
        line.startswith("sources: share of training batches words ") and " room " in line for line in lines
    )
    for title in ("Step 6: Validation accuracy", "Final test accuracy"):
        at = lines.index(f"{title} by source and word (%, count):")
        assert lines[at + 2].split()[0] == "words" and lines[at + 2].split()[1] != "no"
        assert lines[at + 3].split() == ["room", "no", "clips"]
    events = next((run / "logs" / "validation").glob("events.out.tfevents.*"))
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events)) for v in e.summary.value}
    assert "accuracy_by_source/words" in tags
    assert not [tag for tag in tags if "room" in tag]
    bundle = read_bundle(run / "model" / "tiny_conv.kwsd")
    nothing = {"accuracy": None, "count": 0, "words": {}}
    assert bundle.metrics["test_by_source"]["room"] == nothing
    assert bundle.metrics["keras_validation_by_source"]["room"] == nothing
    assert bundle.metrics["test_by_source"]["words"]["count"] == bundle.metrics["test_count"] > 0
    assert bundle.provenance["dataset"]["sources"]["room"] == {
        "data_dir": str(captures),
        "weight": 2.0,
        "items": {"training": 6, "validation": 0, "testing": 0},
        "captures": True,
    }
