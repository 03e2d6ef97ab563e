"""Model bundles made by our own training tool: loading, quantised I/O, and every way a file can be wrong."""

import dataclasses
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from demo_words import WORDS

from kwsd.bundle import (
    demo_bundle_path,
    make_bundle,
    read_bundle,
    write_bundle,
)
from kwsd.classifier import Kernels, TfliteClassifier
from kwsd.errors import InputNotFoundError, ModelError
from kwsd.frontend import FrontendKind, FrontendSpec, MfccParams, MicroParams, compute_features

DEMO = demo_bundle_path()
DEMO_FLOAT = DEMO.with_name("demo-float.kwsd")


@pytest.fixture(scope="module")
def demo():
    return read_bundle(DEMO)


@pytest.fixture(scope="module")
def demo_float():
    return read_bundle(DEMO_FLOAT)


def test_demo_bundles_carry_spec_labels_and_provenance(demo, demo_float):
    for bundle in (demo, demo_float):
        words = list(WORDS)
        assert bundle.labels == ("_silence_", "_unknown_", *words)
        assert bundle.frontend == FrontendSpec(FrontendKind.MFCC, window_stride_ms=20)
        assert bundle.provenance["tool"] == "tools/recipe.py demo (tools/train.py)"
        assert bundle.provenance["tool_version"].startswith("kwsd ")
        dataset = bundle.provenance["dataset"]
        assert dataset["recipe"] == "demo"
        assert (dataset["split"]["validation_percentage"], dataset["split"]["testing_percentage"]) == (11, 3)
        assert dataset["synthetic"]["words"] == words
        # Trained on real people (Speech Commands, CC BY 4.0), whose terms it carries.
        people = dataset["sources"]["people"]
        assert people["weight"] > 0
        assert "Creative Commons BY 4.0" in people["attribution"]
        assert "P. Warden" in people["attribution"] and "arXiv:1804.03209" in people["attribution"]
        # Accuracy measured per source on each source's test partition, real people included.
        assert {"people", "synth"} <= set(bundle.metrics["test_by_source"])
        assert bundle.metrics["test_by_source"]["people"]["count"] > 0
    assert "int8" in TfliteClassifier(demo).input_description
    assert "scale" in TfliteClassifier(demo).input_description
    assert TfliteClassifier(demo_float).input_description.startswith("float32")


def test_int8_and_float_models_agree_through_their_own_quantisation(demo, demo_float):
    rng = np.random.default_rng(0)
    int8 = TfliteClassifier(demo)
    flt = TfliteClassifier(demo_float)
    for _ in range(5):
        clip = (rng.standard_normal(16000) * 2000).astype(np.int16)
        features = compute_features(demo.frontend, clip)
        a, b = int8.classify(features), flt.classify(features)
        assert a.dtype == b.dtype == np.float32
        assert a.sum() == pytest.approx(1.0, abs=0.05)  # dequantised with the model's scale
        assert np.abs(a - b).max() < 0.15


def test_a_micro_model_runs_on_the_builtin_kernels_and_the_rest_on_xnnpack(demo):
    # The demo's model behind a 13-channel micro front end: the same [1,49,13] input.
    micro_spec = FrontendSpec(FrontendKind.MICRO, micro=MicroParams(channel_count=13))
    micro = make_bundle(demo.tflite, demo.labels, micro_spec, name="micro", tool="test")
    assert TfliteClassifier(demo).kernels is Kernels.XNNPACK
    assert TfliteClassifier(micro).kernels is Kernels.BUILTIN
    assert TfliteClassifier(demo, kernels=Kernels.BUILTIN).kernels is Kernels.BUILTIN
    features = compute_features(
        demo.frontend, (np.random.default_rng(1).standard_normal(16000) * 2000).astype(np.int16)
    )
    for classifier in (TfliteClassifier(micro), TfliteClassifier(demo, kernels=Kernels.BUILTIN)):
        scores = classifier.classify(features)
        assert scores.shape == (len(demo.labels),) and scores.dtype == np.float32
        assert scores.sum() == pytest.approx(1.0, abs=0.05)


def test_write_then_read_is_lossless_and_deterministic(demo, tmp_path):
    first = write_bundle(demo, tmp_path / "a.kwsd")
    second = write_bundle(read_bundle(first), tmp_path / "b.kwsd")
    assert first.read_bytes() == second.read_bytes()
    again = read_bundle(second)
    assert (again.tflite, again.labels, again.frontend, again.provenance, again.metrics) == (
        demo.tflite,
        demo.labels,
        demo.frontend,
        demo.provenance,
        demo.metrics,
    )


def rewrap(bundle, tmp_path, **changes):
    """A bundle with the demo's .tflite and some facts changed, as a bad import would make."""
    changed = dataclasses.replace(bundle, **changes)
    path = tmp_path / "changed.kwsd"
    write_bundle(changed, path)
    return read_bundle(path)


def test_labels_that_disagree_with_the_output_are_refused(demo, tmp_path):
    bad = rewrap(demo, tmp_path, labels=(*demo.labels, "maybe"))
    with pytest.raises(ModelError) as err:
        TfliteClassifier(bad)
    n = len(demo.labels)
    assert f"model output [1,{n}] has {n} scores but the bundle has {n + 1} labels" in str(err.value)
    assert f"({', '.join(demo.labels)}, maybe)" in str(err.value)


def test_front_end_that_disagrees_with_the_input_is_refused(demo, tmp_path):
    spec = FrontendSpec(FrontendKind.MFCC, mfcc=MfccParams(cepstrum_count=10))
    bad = rewrap(demo, tmp_path, frontend=spec)
    with pytest.raises(ModelError) as err:
        TfliteClassifier(bad)
    message = str(err.value)
    assert "model.tflite expects input [1,49,13] int8" in message
    assert "but the bundle's front end (mfcc 16000 Hz, 1000 ms clip, 30/20 ms window/stride, " in message
    assert "49x10 features) makes [49,10]" in message


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], "the TFLite interpreter rejects the model"),
        (
            lambda b: b[:4] + b"TFL3" + bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8)),
            "the TFLite interpreter rejects the model",
        ),
        (lambda b: b"", "empty file, expected a TFLite model"),
        (lambda b: bytes(range(256)) * 8, "not a TFLite flatbuffer (expected identifier 'TFL3' at byte 4"),
    ],
    ids=["truncated", "random-after-identifier", "empty", "random"],
)
def test_damaged_tflite_inside_a_bundle_is_refused(demo, tmp_path, damage, message):
    tflite = damage(demo.tflite)
    path = tmp_path / "bad.kwsd"
    manifest = demo.manifest()
    manifest["model"]["sha256"] = __import__("hashlib").sha256(tflite).hexdigest()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", json.dumps(manifest))
        zf.writestr("model.tflite", tflite)
    with pytest.raises(ModelError, match=message.replace("(", r"\(")):
        TfliteClassifier(read_bundle(path))


def test_edited_model_fails_its_checksum(demo, tmp_path):
    path = tmp_path / "edited.kwsd"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", json.dumps(demo.manifest()))
        zf.writestr("model.tflite", demo.tflite[:-1] + b"\x00")
    with pytest.raises(
        ModelError, match=r"model.tflite has sha256 [0-9a-f]{16}\.\.\., but the manifest says"
    ):
        read_bundle(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a kwsd model bundle \\(not a valid zip archive"),
        (bytes(range(256)) * 40, "not a kwsd model bundle \\(not a valid zip archive"),
        (None, "a bare .tflite, not a kwsd bundle; wrap it with 'kwsd model import'"),
    ],
    ids=["empty", "random", "bare-tflite"],
)
def test_files_that_are_not_bundles(demo, tmp_path, content, message):
    path = tmp_path / "x.kwsd"
    path.write_bytes(demo.tflite if content is None else content)
    with pytest.raises(ModelError, match=message):
        read_bundle(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(format_version=2), "format_version: this kwsd reads version 1, got 2"),
        (lambda m: m.update(format="onnx"), "format: expected 'kwsd-bundle', got 'onnx'"),
        (lambda m: m.update(labels=["a", "a"]), "labels: label 'a' appears twice"),
        (lambda m: m.update(labels=[]), "labels: expected at least one label"),
        (lambda m: m["frontend"].update(kind="mel"), "frontend.kind: expected one of mfcc, micro"),
        (lambda m: m["frontend"]["mfcc"].pop("lifter"), "frontend.mfcc.lifter: missing"),
    ],
)
def test_bad_manifests_name_the_key(demo, tmp_path, edit, message):
    manifest = demo.manifest()
    edit(manifest)
    path = tmp_path / "m.kwsd"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", json.dumps(manifest))
        zf.writestr("model.tflite", demo.tflite)
    with pytest.raises(ModelError, match=message):
        read_bundle(path)


def test_manifest_that_is_not_json(demo, tmp_path):
    path = tmp_path / "j.kwsd"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", "{labels: [")
        zf.writestr("model.tflite", demo.tflite)
    with pytest.raises(ModelError, match=r"bundle\.json is not valid JSON"):
        read_bundle(path)


def test_bundles_that_would_unpack_or_read_without_bound_are_refused(demo, tmp_path):
    # A zip bomb: 256 MB of bundle.json in 256 KB of archive (a 2 MB one once took 4.1 GB
    # before exit 67). Refused by the declared size, before anything is inflated, and under a limit
    # on tracked allocations in case the check ever reads first.
    bomb = tmp_path / "bomb.kwsd"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("bundle.json")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as member:
            block = b" " * (1 << 24)
            for _ in range(16):
                member.write(block)
        zf.writestr("model.tflite", demo.tflite)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match=r"bundle\.json would unpack to 268435456 bytes, more than"):
            read_bundle(bomb)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()
    with pytest.raises(ModelError, match="not a regular file"):
        read_bundle("/dev/zero")
    deep = tmp_path / "deep.kwsd"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("bundle.json", "[" * 100_000 + "]" * 100_000)
        zf.writestr("model.tflite", demo.tflite)
    with pytest.raises(ModelError, match=r"bundle\.json is nested too deeply"):
        read_bundle(deep)
    manifest = demo.manifest()
    manifest["frontend"]["mfcc"]["filter_count"] = 1_000_000_000  # once hung above 6 GB
    manifest["name"] = "n"
    huge = tmp_path / "huge.kwsd"
    with zipfile.ZipFile(huge, "w") as zf:
        zf.writestr("bundle.json", json.dumps(manifest))
        zf.writestr("model.tflite", demo.tflite)
    with pytest.raises(ModelError, match=r"mfcc\.filter_count: expected an integer from 1 to 1,024"):
        read_bundle(huge)
    with zipfile.ZipFile(huge, "w") as zf:
        zf.writestr(
            "bundle.json", json.dumps(demo.manifest()).replace('"name": "demo"', '"name": ' + "9" * 5000)
        )
        zf.writestr("model.tflite", demo.tflite)
    with pytest.raises(ModelError, match=r"bundle\.json is not valid JSON \(Exceeds the limit"):
        read_bundle(huge)


def test_missing_and_directory(tmp_path):
    with pytest.raises(InputNotFoundError, match="no such model bundle"):
        read_bundle(tmp_path / "nope.kwsd")
    with pytest.raises(InputNotFoundError, match=r"is a directory, expected a \.kwsd model bundle file"):
        read_bundle(tmp_path)


def test_make_bundle_stamps_provenance(demo):
    bundle = make_bundle(
        demo.tflite,
        demo.labels,
        demo.frontend,
        name="x",
        tool="test",
        dataset={"clips": 3},
        created="2026-01-01T00:00:00+00:00",
    )
    assert bundle.provenance == {
        "tool": "test",
        "tool_version": "kwsd 0.1.0",
        "created": "2026-01-01T00:00:00+00:00",
        "dataset": {"clips": 3},
    }
    assert bundle.sha256 == demo.sha256


def test_int8_io_uses_the_models_own_scale_zero_point_and_saturation(demo):
    """classify() must equal TFLite's quantisation rule done by hand, saturation included."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=demo.tflite)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    assert inp["dtype"] == out["dtype"] == np.int8 and in_scale > 0 and out_scale > 0
    classifier = TfliteClassifier(demo)
    rng = np.random.default_rng(5)
    clip = (rng.standard_normal(16000) * 3000).astype(np.int16)
    features = compute_features(demo.frontend, clip)
    # Half-way values (round half to even) and values far outside int8's range (saturation).
    features[0, :4] = (np.array([0.5, 1.5, -0.5, 2.5], np.float32) - in_zero) * np.float32(in_scale)
    features[1] *= 1000.0
    features[2] *= -1000.0
    q = np.clip(np.rint(features / np.float32(in_scale)) + in_zero, -128, 127).astype(np.int8)
    assert (q == 127).any() and (q == -128).any()
    interpreter.set_tensor(inp["index"], q.reshape(inp["shape"]))
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"]).reshape(-1)
    expected = (raw.astype(np.float32) - out_zero) * np.float32(out_scale)
    np.testing.assert_array_equal(classifier.classify(features), expected)


def test_write_bundle_that_fails_leaves_nothing_behind(demo, tmp_path):
    from kwsd.errors import OutputError

    with pytest.raises(OutputError, match=r"not a regular file; not replacing it with a bundle"):
        write_bundle(demo, tmp_path)
    # -o /dev/null (as root) once replaced the device with a bundle.
    with pytest.raises(OutputError, match=r"^/dev/null: not a regular file; not replacing it"):
        write_bundle(demo, "/dev/null")
    assert Path("/dev/null").is_char_device()
    with pytest.raises(OutputError, match=r"cannot write the bundle \(No such file or directory\)"):
        write_bundle(demo, tmp_path / "missing" / "x.kwsd")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not tmp_path.with_name(tmp_path.name + ".tmp").exists()


def test_detection_settings_in_a_bundle_are_checked(demo, tmp_path):
    for detection, message in [
        ({"threshold": "high"}, "detection.threshold: expected a number from 0 to 1, got 'high'"),
        (
            {"clip_stride_ms": 20.7},
            "detection.clip_stride_ms: expected a whole number of milliseconds, got 20.7",
        ),
        ({"label_thresholds": ["yes"]}, "detection.label_thresholds: expected a mapping of label to 0..1"),
        ({"average_window_ms": None}, "detection.average_window_ms: expected a whole number of milliseconds"),
        ({"rule": "always"}, "detection.rule: expected one of tf, micro, got 'always'"),
        ({"patience": 3}, "detection.patience: unknown setting"),
    ]:
        manifest = demo.manifest()
        manifest["detection"] = detection
        path = tmp_path / "d.kwsd"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("bundle.json", json.dumps(manifest))
            zf.writestr("model.tflite", demo.tflite)
        with pytest.raises(ModelError) as err:
            read_bundle(path)
        assert message in str(err.value)
