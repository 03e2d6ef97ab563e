"""tools/kwsd_tools/training/layout.py and tools/relayout.py: a first conv over all the features, relaid
out to read them as channels, gives the same scores.

The models are built by tools/kwsd_tools/training/models.py and converted by TensorFlow's own
converter as tools/kwsd_tools/training/export.py did before it relaid them out (the old form), then
run in ai_edge_litert's interpreter through kwsd's classifier, with both kernel sets.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kwsd.bundle import demo_bundle_path, make_bundle, read_bundle, write_bundle  # noqa: E402
from kwsd.classifier import Kernels, TfliteClassifier, interpreter_options  # noqa: E402
from kwsd_tools import relayout  # noqa: E402
from kwsd_tools.training.export import converted_by_tensorflow  # noqa: E402
from kwsd_tools.training.layout import features_as_channels  # noqa: E402
from kwsd_tools.training.models import build_model  # noqa: E402

#: The demo's front end (49x13 MFCCs), so the models have the demo's shapes.
SPEC = read_bundle(demo_bundle_path()).frontend
LABELS = ["_silence_", "_unknown_", "yes", "no"]


def _old_form(architecture: str, options: dict[str, Any]) -> dict[str, bytes]:
    """Float and full-int8 .tflite of a random-weight model, straight from TF's converter."""
    frames, features = SPEC.feature_shape
    tf.keras.utils.set_random_seed(3)
    model = build_model(
        architecture, frames=frames, features=features, label_count=len(LABELS), options=options
    )
    representative = np.random.default_rng(0).normal(0.0, 10.0, (20, frames, features)).astype(np.float32)
    float_model, int8_model = converted_by_tensorflow(model, SPEC, representative)
    return {"float": float_model, "int8": int8_model}


@pytest.fixture(scope="module")
def temporal() -> dict[str, bytes]:
    return _old_form("ds_cnn", {"temporal": True, "channels": 16, "blocks": 2})


def _conv_filters(tflite: bytes) -> list[list[int]]:
    """The filter shape of every CONV_2D, in graph order."""
    interpreter_cls, _ = interpreter_options("builtin")
    interpreter = interpreter_cls(model_content=tflite)
    shapes = {t["index"]: t["shape"].tolist() for t in interpreter.get_tensor_details()}
    return [shapes[op["inputs"][1]] for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]


def _scores(tflite: bytes, kernels: Kernels, windows: np.ndarray) -> np.ndarray:
    bundle = make_bundle(tflite, LABELS, SPEC, name="t", tool="test")
    classifier = TfliteClassifier(bundle, kernels=kernels)
    return np.array([classifier.classify(w) for w in windows])


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_the_relaid_model_reads_the_features_as_channels_and_gives_the_same_scores(
    temporal: dict[str, bytes], kind: str
) -> None:
    old = temporal[kind]
    relaid = features_as_channels(old)
    assert relaid.convs == ((49, 13),)
    # The first conv: 5x13 over one channel before, 5x1 over 13 channels after; the
    # pointwise convs of the blocks untouched.
    before, after = _conv_filters(old), _conv_filters(relaid.tflite)
    assert before[0] == [16, 5, 13, 1] and after[0] == [16, 5, 1, 13]
    assert before[1:] == after[1:] and len(after) == 3
    windows = np.random.default_rng(1).normal(0.0, 10.0, (100, 49, 13)).astype(np.float32)
    for kernels in Kernels:
        want, got = _scores(old, kernels, windows), _scores(relaid.tflite, kernels, windows)
        if kind == "int8":
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # Twice is once.
    assert features_as_channels(relaid.tflite).convs == ()


def test_a_model_without_such_a_conv_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DS-CNN-S's first conv is 10x4 stride 2x2: a real 2-D conv over the image, not this case.
    old = _old_form("ds_cnn", {"channels": 8, "blocks": 1})["int8"]
    assert features_as_channels(old).tflite == old and features_as_channels(old).convs == ()
    bundle = tmp_path / "square.kwsd"
    write_bundle(make_bundle(old, LABELS, SPEC, name="square", tool="test"), bundle)
    assert relayout.main([str(bundle), str(tmp_path / "out.kwsd")]) == 0
    assert not (tmp_path / "out.kwsd").exists()
    assert "nothing to do" in capsys.readouterr().err


def test_relayout_rewrites_a_bundle_keeping_its_manifest_and_recording_the_change(
    temporal: dict[str, bytes], tmp_path: Path
) -> None:
    old = make_bundle(
        temporal["int8"], LABELS, SPEC, name="demo", tool="test", metrics={"test_accuracy": 0.5},
        detection={"threshold": 0.8, "average_window_ms": 750},
    )  # fmt: skip
    path = write_bundle(old, tmp_path / "demo.kwsd")
    assert relayout.main([str(path), str(path)]) == 0  # in place
    new = read_bundle(path)
    assert new.sha256 != old.sha256 and _conv_filters(new.tflite)[0] == [16, 5, 1, 13]
    assert (new.name, new.labels, new.frontend) == (old.name, old.labels, old.frontend)
    assert new.metrics == old.metrics and new.detection == old.detection
    record = new.provenance["relayout"]
    assert record["from_sha256"] == old.sha256 and record["tool"] == "tools/relayout.py"
    assert {k: v for k, v in new.provenance.items() if k != "relayout"} == old.provenance
    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("bundle.json"))["model"]["sha256"] == new.sha256


def test_relayout_refuses_what_it_cannot_read_or_write(
    temporal: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert relayout.main([str(tmp_path / "missing.kwsd"), str(tmp_path / "out.kwsd")]) == 66
    assert "missing.kwsd" in capsys.readouterr().err
    text = tmp_path / "notes.kwsd"
    text.write_text("not a bundle\n")
    assert relayout.main([str(text), str(tmp_path / "out.kwsd")]) == 67
    assert "notes.kwsd: not a kwsd model bundle" in capsys.readouterr().err
    good = write_bundle(
        make_bundle(temporal["int8"], LABELS, SPEC, name="t", tool="test"), tmp_path / "t.kwsd"
    )
    (tmp_path / "dir.kwsd").mkdir()
    assert relayout.main([str(good), str(tmp_path / "dir.kwsd")]) == 73
    assert "dir.kwsd: not a regular file" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp"))
