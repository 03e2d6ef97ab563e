"""tools/train.py as a user runs it: tiny trainings on a small synthetic Speech Commands set.

Real parts throughout: espeak-ng clips, kwsd's front end, TensorFlow, the TFLite converter,
and kwsd's own bundle loader and classifier for the exported models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training_tools import missing_training_tools

pytestmark = pytest.mark.skipif(missing_training_tools() is not None, reason=str(missing_training_tools()))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from kwsd_tools.synth import synthesise

    out = tmp_path_factory.mktemp("speech")
    synthesise(out, ["yes", "no"], ["up", "down"], voice_count=30, repetitions=1, seed=3)
    return out


def summary_tags(path):
    """Every summary tag in a TensorBoard event file."""
    import tensorflow as tf

    return {
        value.tag for event in tf.compat.v1.train.summary_iterator(str(path)) for value in event.summary.value
    }


def train(tmp_path, data_dir, *extra, steps="6,4", rates="0.01,0.002", arch="tiny_conv", capsys=None):
    from kwsd_tools.train import main

    argv = [
        "--data_url=",
        f"--data_dir={data_dir}",
        "--wanted_words=yes,no",
        f"--how_many_training_steps={steps}",
        f"--learning_rate={rates}",
        f"--model_architecture={arch}",
        "--window_stride_ms=20",
        "--feature_bin_count=13",
        "--batch_size=16",
        "--eval_step_interval=5",
        "--save_step_interval=5",
        "--augment_copies=1",
        "--workers=1",
        "--representative_count=20",
        f"--train_dir={tmp_path / 'train'}",
        f"--summaries_dir={tmp_path / 'logs'}",
        f"--model_dir={tmp_path / 'model'}",
        *extra,
    ]
    code = main(argv)
    captured = capsys.readouterr() if capsys is not None else None
    return code, captured.err if captured else ""


def test_a_tiny_run_logs_trains_checkpoints_and_exports_both_bundles(tmp_path, data_dir, capsys):
    code, err = train(tmp_path, data_dir, capsys=capsys)
    assert code == 0, err
    lines = err.splitlines()
    # train.py's line for every step in the run's log; on stderr (not a terminal here) every
    # --log_every steps and the last, with the progress and ETA.
    run_log = (tmp_path / "train" / "train.log").read_text().splitlines()
    steps = [line for line in run_log if line.startswith("Step #")]
    assert len(steps) == 10
    assert steps[0].startswith("Step #1: rate 0.010000, accuracy ") and "cross entropy " in steps[0]
    assert steps[6].startswith("Step #7: rate 0.002000,")
    assert any(line.startswith("Step #10: rate 0.002000,") and "ETA" in line for line in lines)
    # The confusion matrix has the label names on both axes.
    header = next(
        i for i, line in enumerate(lines) if line.split() == ["_silence_", "_unknown_", "yes", "no"]
    )
    assert [lines[header + 1 + k].split()[0] for k in range(4)] == ["_silence_", "_unknown_", "yes", "no"]
    assert any(line.startswith("Step 5: Validation accuracy = ") and "(N=" in line for line in lines)
    assert any(line.startswith("Step 10: Validation accuracy = ") for line in lines)
    assert any(line.startswith("Final test accuracy = ") for line in lines)

    train_dir = tmp_path / "train"
    for step in (5, 10):
        assert (train_dir / f"tiny_conv.ckpt-{step}.index").exists()
        record = json.loads((train_dir / f"tiny_conv.ckpt-{step}.json").read_text())
        assert record["step"] == step and record["labels"] == ["_silence_", "_unknown_", "yes", "no"]
    assert (train_dir / "tiny_conv_labels.txt").read_text().split() == ["_silence_", "_unknown_", "yes", "no"]
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}
    tags = {p.parent.name: summary_tags(p) for p in events}
    assert {"cross_entropy", "accuracy", "learning_rate"} <= tags["train"]
    assert any(t.startswith("weights/") for t in tags["train"])
    assert any(t.startswith("activations/") for t in tags["train"])
    assert {"features/yes", "features/no"} <= tags["train"]
    assert {"accuracy", "cross_entropy", "confusion_matrix"} <= tags["validation"]

    from kwsd.bundle import read_bundle

    model_dir = tmp_path / "model"
    int8 = read_bundle(model_dir / "tiny_conv.kwsd")
    float32 = read_bundle(model_dir / "tiny_conv-float.kwsd")
    assert list(int8.labels) == list(float32.labels) == ["_silence_", "_unknown_", "yes", "no"]
    assert int8.metrics["quantization"] == "int8" and float32.metrics["quantization"] == "float32"
    # The split is recorded, so the partitions can be rebuilt (tools/plot.py does).
    assert set(int8.provenance["dataset"]["split"]) == {
        "validation_percentage", "testing_percentage", "silence_percentage", "unknown_percentage",
    }  # fmt: skip
    assert 0.0 <= int8.metrics["test_accuracy"] <= 1.0 and int8.metrics["test_count"] > 0
    bare = (model_dir / "tiny_conv.tflite").read_bytes()
    assert (model_dir / "tiny_conv_model_data.cc").read_text().count("0x") == len(bare)
    # The bare model takes the window flattened, as train.py's graph and micro_speech do, and
    # answers as the bundle does (same weights, same int8 input quantization).
    from ai_edge_litert.interpreter import Interpreter

    frames, features = int8.frontend.feature_shape
    window = np.random.default_rng(0).integers(-128, 128, (1, frames, features), dtype=np.int8)
    outputs = []
    for tflite, shape in ((bare, (1, frames * features)), (int8.tflite, (1, frames, features))):
        interpreter = Interpreter(model_content=tflite)
        interpreter.allocate_tensors()
        (given,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
        assert tuple(given["shape"]) == shape and given["dtype"] == np.int8
        interpreter.set_tensor(given["index"], window.reshape(shape))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output["index"]))
    assert np.abs(outputs[0].astype(int) - outputs[1].astype(int)).max() <= 1
    summaries = [line for line in lines if line.startswith("export: ")]
    assert len(summaries) == 2 and "ops " in summaries[0] and "input int8" in summaries[0]
    # The converter's own lines went to the run's TensorFlow log, not the console.
    assert "fully_quantize: " in (tmp_path / "train" / "tensorflow.log").read_text()
    assert not any("fully_quantize" in line or "absl::" in line for line in lines)


def test_verbosity_debug_prints_every_step_in_train_py_s_format(tmp_path, data_dir, capsys):
    import re

    code, err = train(
        tmp_path, data_dir, "--no_export", "--verbosity=DEBUG", steps="3", rates="0.01", capsys=capsys
    )
    assert code == 0, err
    steps = [line for line in err.splitlines() if line.startswith("Step #")]
    pattern = r"Step #{}: rate 0\.010000, accuracy \d+\.\d%, cross entropy \d+\.\d{{6}}"
    assert [bool(re.fullmatch(pattern.format(n), line)) for n, line in enumerate(steps, 1)] == [True] * 3, (
        steps
    )


def test_how_long_a_run_takes_is_said_before_it_starts():
    from kwsd_tools.training.trainer import estimate_text

    assert estimate_text(17_975, 25, 41.7) == (
        "training: about 8 h 20 min for the 17,975 steps left (0.6 steps/s over the first 25, "
        "compilation included); for a model in minutes: --model_architecture=ds_cnn (kwsd's default) "
        "or tiny_conv, --window_stride_ms=20 --feature_bin_count=13, fewer --how_many_training_steps"
    )
    assert estimate_text(975, 25, 1.0) == (
        "training: about 39 s for the 975 steps left (25.0 steps/s over the first 25, compilation included)"
    )


def test_a_failed_download_over_a_data_set_says_how_to_train_on_it(tmp_path, data_dir, capsys):
    import socket

    from kwsd_tools.train import main

    with socket.socket() as s:  # a port nothing listens on: the download is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/speech_commands_v0.02.tar.gz"
    code = main([f"--data_url={url}", f"--data_dir={data_dir}", f"--train_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 65
    errors = [line for line in err.splitlines() if line.startswith("train: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"train: error: --data_url {url}: download failed")
    assert errors[0].endswith(
        f"{data_dir} already holds 4 label folders with WAVs (down, no, up, yes): add --data_url= to "
        "train on them without downloading"
    )


def test_the_float_bundle_gives_the_training_model_s_scores(tmp_path, data_dir, capsys):
    import tensorflow as tf

    from kwsd.audio import read_wav
    from kwsd.bundle import read_bundle
    from kwsd.classifier import TfliteClassifier
    from kwsd.frontend import compute_features
    from kwsd_tools.training.models import build_model

    code, err = train(tmp_path, data_dir, capsys=capsys)
    assert code == 0, err
    bundle = read_bundle(tmp_path / "model" / "tiny_conv-float.kwsd")
    spec = bundle.frontend
    frames, features = spec.feature_shape
    record = json.loads((tmp_path / "train" / "tiny_conv.ckpt-10.json").read_text())
    model = build_model(
        "tiny_conv", frames=frames, features=features, label_count=4, dropout=record["dropout"], options={}
    )
    tf.train.Checkpoint(model=model).read(str(tmp_path / "train" / "tiny_conv.ckpt-10")).expect_partial()
    clip = next(iter(sorted((data_dir / "yes").glob("*.wav"))))
    window = compute_features(spec, read_wav(clip, spec.sample_rate_hz))
    keras_scores = tf.nn.softmax(model(window[None], training=False)).numpy()[0]
    tflite_scores = TfliteClassifier(bundle).classify(window)
    np.testing.assert_allclose(tflite_scores, keras_scores, atol=1e-5)


def test_resume_continues_at_the_next_step_and_its_phase_rate(tmp_path, data_dir, capsys):
    code, err = train(tmp_path, data_dir, "--no_export", steps="5", rates="0.01", capsys=capsys)
    assert code == 0, err
    checkpoint = tmp_path / "train" / "tiny_conv.ckpt-5"
    code, err = train(
        tmp_path, data_dir, "--no_export", f"--start_checkpoint={checkpoint}", steps="5,3", capsys=capsys
    )
    assert code == 0, err
    run_log = (tmp_path / "train" / "train.log").read_text().splitlines()
    steps = [line for line in run_log if line.startswith("Step #")]
    assert [line.split(":")[0] for line in steps] == [f"Step #{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8)]
    assert steps[5].startswith("Step #6: rate 0.002000,")  # phase 2 of "5,3" at "0.01,0.002"
    assert (tmp_path / "train" / "tiny_conv.ckpt-8.index").exists()


def test_a_checkpoint_from_another_architecture_is_refused_by_name(tmp_path, data_dir, capsys):
    code, err = train(tmp_path, data_dir, "--no_export", steps="5", rates="0.01", capsys=capsys)
    assert code == 0, err
    checkpoint = tmp_path / "train" / "tiny_conv.ckpt-5"
    code, err = train(tmp_path, data_dir, f"--start_checkpoint={checkpoint}", arch="single_fc", capsys=capsys)
    assert code == 64
    expected = f"--start_checkpoint {checkpoint}: made with architecture tiny_conv, this run has single_fc"
    assert f"train: error: {expected}" in err
    code, err = train(
        tmp_path, data_dir, f"--start_checkpoint={checkpoint}", "--wanted_words=yes,up", capsys=capsys
    )
    assert code == 64 and "made with labels _silence_,_unknown_,yes,no" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--how_many_training_steps=10,10", "--learning_rate=0.01"],
            "--how_many_training_steps and --learning_rate must be lists of equal length",
        ),
        (["--model_architecture=resnet9000"], "--model_architecture: unknown 'resnet9000'"),
        (
            ["--sample_rate=22050"],
            "at 22050 Hz use multiples of 20 ms, e.g. --window_size_ms=40 --window_stride_ms=20",
        ),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(tmp_path, data_dir, capsys, flags, message):
    from kwsd_tools.train import main

    code = main(["--data_url=", f"--data_dir={data_dir}", f"--train_dir={tmp_path}", *flags])
    err = capsys.readouterr().err
    assert code == 64
    assert [line for line in err.splitlines() if line.startswith("train: error: ")] == [
        line for line in err.splitlines() if message in line
    ]


def test_export_makes_the_same_bundles_from_a_checkpoint_alone(tmp_path, data_dir, capsys):
    from kwsd.bundle import read_bundle
    from kwsd_tools.export import main as export_main

    code, err = train(tmp_path, data_dir, capsys=capsys)
    assert code == 0, err
    trained = read_bundle(tmp_path / "model" / "tiny_conv.kwsd")
    code = export_main(
        [
            f"--start_checkpoint={tmp_path / 'train' / 'tiny_conv.ckpt-10'}",
            f"--model_dir={tmp_path / 'again'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    again = read_bundle(tmp_path / "again" / "tiny_conv.kwsd")
    # No front-end flag repeated: the record beside the checkpoint carried it.
    assert again.frontend == trained.frontend and again.labels == trained.labels
    # The same weights: the same float model. (The int8 calibration is not bit-reproducible
    # across converter runs, so the int8 models are compared by their measured accuracy.)
    from kwsd.classifier import TfliteClassifier

    windows = np.random.default_rng(0).normal(0, 10, (20, *trained.frontend.feature_shape)).astype(np.float32)
    first = TfliteClassifier(read_bundle(tmp_path / "model" / "tiny_conv-float.kwsd"))
    second = TfliteClassifier(read_bundle(tmp_path / "again" / "tiny_conv-float.kwsd"))
    for window in windows:
        np.testing.assert_allclose(first.classify(window), second.classify(window), atol=1e-6)
    assert again.metrics["test_accuracy"] == trained.metrics["test_accuracy"]
    assert len([line for line in err.splitlines() if line.startswith("export: ")]) == 2


def test_check_nans_stops_a_diverging_run_naming_the_layer(tmp_path, data_dir, capsys):
    # Plain gradient descent at an absurd rate: the weights overflow within a few steps.
    flags = ("--check_nans", "--no_export", "--optimizer=gradient_descent")
    code, err = train(tmp_path, data_dir, *flags, steps="10", rates="3e38", arch="single_fc", capsys=capsys)
    assert code == 1, err
    errors = [line for line in err.splitlines() if line.startswith("train: error: ")]
    assert len(errors) == 1 and "NaN or Inf" in errors[0] and "layer '" in errors[0], err


def test_custom_data_at_22050_hz_with_5_second_clips_trains_and_exports(tmp_path, capsys):
    # A baby monitor: "crying" (a wailing harmonic tone) against "quiet" (room noise), two
    # folders of 5 s clips at 22.05 kHz, no _background_noise_ and no other words.
    from kwsd.audio import write_wav
    from kwsd.bundle import read_bundle

    rate, seconds = 22050, 5
    rng = np.random.default_rng(7)
    t = np.arange(rate * seconds) / rate
    data = tmp_path / "baby"
    for n in range(40):
        wail = 450 + 120 * np.sin(2 * np.pi * (0.7 + 0.1 * (n % 5)) * t)
        phase = 2 * np.pi * np.cumsum(wail) / rate
        crying = (
            sum(np.sin(k * phase) / k for k in (1, 2, 3))
            * 0.3
            * (0.5 + 0.5 * np.sin(2 * np.pi * 0.4 * t) ** 2)
        )
        quiet = rng.normal(0, 0.01, len(t))
        for word, audio in (("crying", crying), ("quiet", quiet)):
            (data / word).mkdir(parents=True, exist_ok=True)
            noisy = audio + rng.normal(0, 0.005, len(t))
            write_wav(
                data / word / f"room{n}_nohash_0.wav", (np.clip(noisy, -1, 1) * 32767).astype(np.int16), rate
            )
    from kwsd_tools.train import main

    code = main(
        [
            "--data_url=",
            f"--work_dir={tmp_path / 'work'}",
            f"--data_dir={data}",
            "--wanted_words=crying,quiet",
            "--sample_rate=22050",
            "--clip_duration_ms=5000",
            "--window_size_ms=40",  # 30 ms is 661.5 samples at 22.05 kHz: refused with a hint
            "--window_stride_ms=20",
            "--feature_bin_count=13",
            "--model_architecture=tiny_conv",
            "--how_many_training_steps=20",
            "--learning_rate=0.01",
            "--batch_size=16",
            "--eval_step_interval=20",
            "--augment_copies=1",
            "--workers=1",
            "--representative_count=20",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    bundle = read_bundle(tmp_path / "work" / "models" / "tiny_conv.kwsd")
    assert (bundle.frontend.sample_rate_hz, bundle.frontend.clip_duration_ms) == (22050, 5000)
    assert bundle.frontend.feature_shape == (249, 13)
    assert list(bundle.labels) == ["_silence_", "_unknown_", "crying", "quiet"]
    assert bundle.metrics["test_accuracy"] >= 0.75, err  # an easy task, even in 20 steps
    assert (tmp_path / "work" / "train" / "tiny_conv.ckpt-20.index").exists()
    assert list((tmp_path / "work" / "logs").rglob("events.out.tfevents.*"))


def test_the_same_seed_gives_the_same_run(tmp_path, data_dir, capsys):
    logs = []
    for run in ("a", "b"):
        code, err = train(tmp_path / run, data_dir, "--no_export", "--augment_copies=2", capsys=capsys)
        assert code == 0, err
        logs.append([line for line in (tmp_path / run / "train" / "train.log").read_text().splitlines()])
    assert logs[0] == logs[1]
    assert any(line.startswith("Step #10: ") for line in logs[0])


def test_only_the_newest_five_checkpoints_are_kept(tmp_path):
    from kwsd_tools.training.trainer import _prune

    for step in (100, 200, 300, 400, 500, 600, 700, 1000):
        for suffix in (".index", ".data-00000-of-00001", ".json"):
            (tmp_path / f"conv.ckpt-{step}{suffix}").write_text("x")
    (tmp_path / "tiny_conv.ckpt-100.index").write_text("x")  # another architecture: left alone
    _prune(tmp_path, "conv", keep=5)
    kept = sorted({p.name.split(".")[1] for p in tmp_path.glob("conv.ckpt-*")})
    assert kept == ["ckpt-1000", "ckpt-400", "ckpt-500", "ckpt-600", "ckpt-700"]
    assert (tmp_path / "tiny_conv.ckpt-100.index").exists()
