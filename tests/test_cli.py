"""The kwsd command line, run as a user runs it (a subprocess), on the demo model and audio."""

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from demo_words import SWAPPED, WORDS

from kwsd.audio import read_wav
from kwsd.bundle import demo_bundle_path, demo_wav_path, read_bundle
from kwsd.classifier import TfliteClassifier
from kwsd.cli import EXIT_BAD_AUDIO, EXIT_BAD_MODEL, EXIT_CONFIG, EXIT_NO_INPUT
from kwsd.frontend import FrontendKind, FrontendSpec, MfccParams
from kwsd.pipeline import build_pipeline

DEMO_WAV = demo_wav_path()
DEMO_TRUTH = DEMO_WAV.with_suffix(".txt")
WANTED = set(WORDS)
HAVE_SOX = shutil.which("sox") is not None


def kwsd(*args, stdin=None, check=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        input=stdin,
        capture_output=True,
        check=False,
        env=env,
        timeout=120,
    )
    if check is not None:
        assert result.returncode == check, result.stderr.decode()
    return result


def detections(result):
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def ground_truth():
    rows = []
    for line in DEMO_TRUTH.read_text().splitlines():
        label, time_ms = line.split(",")
        rows.append((label.strip(), float(time_ms)))
    return rows


def test_stream_scores_prints_every_windows_smoothed_scores_in_order_with_the_detections():
    lines = detections(kwsd("stream", "--demo", "--scores", check=0))
    scores = [line for line in lines if "scores" in line]
    found = [line for line in lines if "label" in line]
    assert found == detections(kwsd("stream", "--demo", check=0))  # the same detections
    labels = read_bundle(demo_bundle_path()).labels
    assert all(list(line["scores"]) == list(labels) for line in scores)
    times = [line["audio_time_ms"] for line in lines]
    assert times == sorted(times)  # one stream, in audio time
    assert [line["audio_time_ms"] for line in scores] == list(
        range(scores[0]["audio_time_ms"], times[-1] + 1, 20)
    )
    # Each word fires in the window whose smoothed score first passes the threshold (0.9).
    by_time = {line["audio_time_ms"]: line["scores"] for line in scores}
    for detection in found:
        now = by_time[detection["audio_time_ms"]][detection["label"]]
        before = by_time[detection["audio_time_ms"] - 20][detection["label"]]
        assert now == pytest.approx(detection["score"], abs=1e-4) and before <= 0.9 < now


def test_stream_scores_on_a_terminal_draws_a_meter_with_the_detections_above_it():
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: kwsd with a terminal for stdout
        os.environ["COLUMNS"] = "120"
        os.execv(sys.executable, [sys.executable, "-m", "kwsd", "stream", "--demo", "--scores"])
    out = bytearray()
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out.decode()[-2000:]
    text = out.decode().replace("\r\n", "\n")
    assert '"scores"' not in text  # no JSON score lines: a meter, redrawn in place
    meters = [m for m in text.replace("\n", "\r").split("\r") if m.strip().endswith("\x1b[K")]
    assert len(meters) > 100 and all(len(m) <= 123 for m in meters)
    assert any("YES [" in m for m in meters) and any("yes [" in m for m in meters)
    # Each detection on a line of its own, the meter redrawn after it.
    found = [json.loads(line[line.index('{"label"') :]) for line in text.split("\n") if '{"label"' in line]
    assert found == detections(kwsd("stream", "--demo", check=0))


def test_stream_demo_reports_real_people_s_words_where_they_were_spoken():
    found = detections(kwsd("stream", "--demo", check=0))
    truth = ground_truth()
    # The demo speaks each keyword once and two other words, in a fixed order (the clips are
    # test-partition people's, drawn at random).
    assert sorted(label for label, _ in truth) == sorted([*WANTED, "_unknown_", "_unknown_"])
    # With the bundle's calibrated settings (threshold 0.9) the model reports 6 of the 10
    # keywords and nothing else (README, "Figures"): every detection is its word's own label.
    assert len(found) == 6
    for d in found:
        # Stamped at the end of the window that fired, which started (990 ms earlier) within the
        # reference's 750 ms of its word's clip start.
        label = next((w[0] for w in truth if abs(d["audio_time_ms"] - 990 - w[1]) <= 750), None)
        assert d["label"] == label, f"{d} is not the word spoken there"
        assert 0.9 <= d["score"] <= 1.0


def test_same_audio_same_answers_whatever_the_block_sizes():
    bundle = read_bundle(demo_bundle_path())
    classifier = TfliteClassifier(bundle)
    samples = read_wav(DEMO_WAV, 16000)
    settings = kwsd_settings(bundle)

    def run(blocks):
        pipeline = build_pipeline(bundle, settings, classifier=classifier)
        out = []
        for block in blocks:
            out += [d.to_dict() for d in pipeline.feed(block)]
        return out

    whole = run([samples])
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.integers(0, len(samples), 400))
    assert run(np.split(samples, cuts)) == whole
    assert whole == detections(kwsd("stream", "--demo", check=0))


def kwsd_settings(bundle):
    import argparse

    from kwsd.cli import _detection_settings

    blank = argparse.Namespace(
        clip_stride_ms=None,
        average_window_ms=None,
        threshold=None,
        suppression_ms=None,
        minimum_count=None,
        rule=None,
        label_threshold=[],
    )
    return _detection_settings(bundle, blank)


def test_raw_pcm_on_stdin_gives_the_same_detections_as_the_file():
    with wave.open(str(DEMO_WAV)) as wav:
        raw = wav.readframes(wav.getnframes())
    assert detections(kwsd("stream", "-", stdin=raw, check=0)) == detections(
        kwsd("stream", "--demo", check=0)
    )


def test_wav_on_stdin_as_arecord_writes_it():
    data = bytearray(DEMO_WAV.read_bytes())
    # arecord streaming to a pipe cannot know the length: it writes 0x7FFFFFFF sizes.
    data[4:8] = (0x7FFFFFFF).to_bytes(4, "little")
    data[40:44] = (0x7FFFFFFF).to_bytes(4, "little")
    found = detections(kwsd("stream", "-", stdin=bytes(data), check=0))
    assert found == detections(kwsd("stream", "--demo", check=0))


@pytest.mark.skipif(not HAVE_SOX, reason="sox not installed")
def test_a_44k1_stereo_24_bit_copy_is_resampled_and_mixed_down(tmp_path):
    other = tmp_path / "demo-44k1-stereo.wav"
    subprocess.run(["sox", "-D", str(DEMO_WAV), "-r", "44100", "-c", "2", "-b", "24", str(other)], check=True)
    found = detections(kwsd("stream", other, check=0))
    expected = detections(kwsd("stream", "--demo", check=0))
    assert [d["label"] for d in found] == [d["label"] for d in expected]
    for a, b in zip(found, expected, strict=True):
        assert abs(a["audio_time_ms"] - b["audio_time_ms"]) <= 60


def test_stdin_closing_mid_sample_keeps_what_was_found():
    with wave.open(str(DEMO_WAV)) as wav:
        raw = wav.readframes(wav.getnframes())
    result = kwsd("stream", "-", stdin=raw + b"\x01")
    assert result.returncode == 74
    assert detections(result) == detections(kwsd("stream", "--demo", check=0))
    stderr = result.stderr.decode().strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("kwsd: error: ")
    assert "1 trailing byte" in stderr[0]


def test_label_wav_prints_the_reference_format(tmp_path):
    bundle = read_bundle(demo_bundle_path())
    samples = read_wav(DEMO_WAV, 16000)
    truth = [(label, t) for label, t in ground_truth() if label in WANTED]
    label, start_ms = truth[0]
    start = int(start_ms * 16)
    clip = tmp_path / "one.wav"
    with wave.open(str(clip), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(samples[start : start + 16000].tobytes())
    out = kwsd("label-wav", clip, check=0).stdout.decode().splitlines()
    assert len(out) == 3
    assert out[0].startswith(f"{label} (score = ")
    for line in out:
        name, rest = line.split(" (score = ")
        assert name in bundle.labels and rest.endswith(")") and len(rest[:-1].split(".")[1]) == 5
    as_json = json.loads(kwsd("label-wav", "--json", clip, check=0).stdout)
    assert as_json["file"] == str(clip)
    assert [d["label"] for d in as_json["labels"]] == [line.split(" ")[0] for line in out]
    two = kwsd("label-wav", clip, clip, "--how-many-labels", "1", check=0).stdout.decode().splitlines()
    assert two == [f"{clip}:", out[0], f"{clip}:", out[0]]


def _limited(memory_bytes):
    """preexec_fn: the child may map at most ``memory_bytes`` (a bound a Pi could afford)."""

    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    return apply


def _kwsd_limited(args):
    """``python -m kwsd ARGS`` that may map at most 2 GB and must end within two minutes."""
    return subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)],
        capture_output=True,
        timeout=120,
        preexec_fn=_limited(2 << 30),
        check=False,
    )


def test_label_wav_reads_one_clip_of_an_endless_stream(tmp_path):
    # /dev/zero never ends: label-wav needs one clip and must read one clip (it once reached
    # 15.9 GB in 20 s). The same for a header claiming 55 hours of audio.
    limit = 2 << 30
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [sys.executable, "-m", "kwsd", "label-wav", "-"],
            stdin=zero,
            capture_output=True,
            timeout=120,
            preexec_fn=_limited(limit),
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert len(done.stdout.decode().splitlines()) == 3
    assert done.stdout.decode().startswith("_silence_ (score = ")
    huge = tmp_path / "huge.wav"  # a header that says 2 GB of 8 kHz stereo float64
    with open(huge, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 3, 2, 8000, 8000 * 16, 16, 64))
        f.write(b"data" + struct.pack("<I", 0x7FFFFFF0))
        f.write(b"\0" * 200_000)
    done = subprocess.run(
        [sys.executable, "-m", "kwsd", "label-wav", huge],
        capture_output=True,
        timeout=120,
        preexec_fn=_limited(limit),
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    tiny_rate = tmp_path / "one-hertz.wav"
    with wave.open(str(tiny_rate), "wb") as wav:  # 1 Hz: 400 KB would be 55 h at 16 kHz
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(1)
        wav.writeframes(b"\0" * 400_000)
    done = kwsd("label-wav", tiny_rate)
    assert done.returncode == EXIT_BAD_AUDIO, done.stderr.decode()
    assert (
        done.stderr.decode()
        .strip()
        .endswith("fmt chunk says a sample rate of 1 Hz (expected 1,000 to 384,000 Hz)")
    )


def _hostile_bundles(tmp_path):
    """Bundles that once ate memory or time, each beside the demo's model."""
    demo = read_bundle(demo_bundle_path())

    def bundle(name, manifest_bytes, tflite=demo.tflite):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            if isinstance(manifest_bytes, bytes):
                zf.writestr("bundle.json", manifest_bytes)
            else:  # a generator of blocks: written without holding them all
                info = zipfile.ZipInfo("bundle.json")
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w") as member:
                    for block in manifest_bytes:
                        member.write(block)
            if isinstance(tflite, bytes):
                zf.writestr("model.tflite", tflite)
            else:
                info = zipfile.ZipInfo("model.tflite")
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as member:
                    for block in tflite:
                        member.write(block)
        return path

    manifest = demo.manifest()
    manifest["frontend"]["mfcc"]["filter_count"] = 1_000_000_000
    good = json.dumps(demo.manifest()).encode()
    return [
        (bundle("json-bomb.kwsd", (b" " * (1 << 24) for _ in range(16))), "bundle.json would unpack to"),
        (
            bundle("model-bomb.kwsd", good, (b"\0" * (1 << 24) for _ in range(20))),
            "model.tflite would unpack to",
        ),
        (bundle("filters.kwsd", json.dumps(manifest).encode()), "mfcc.filter_count: expected an integer"),
        (bundle("deep.kwsd", b"[" * 100_000 + b"]" * 100_000), "bundle.json is nested too deeply"),
        (bundle("number.kwsd", good.replace(b'"name": "demo"', b'"name": ' + b"9" * 5000)), "not valid JSON"),
    ]


def test_hostile_inputs_end_in_their_exit_code_within_a_memory_and_time_limit(tmp_path):
    # Every case of issue 13 that once ran away (memory, time) or crashed, through the
    # command line a user runs, in a process that may map at most 2 GB and must finish within
    # the timeout: one line naming the problem, the documented exit code, no traceback.
    def laughs(levels):
        lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
        return "\n".join(lines) + "\n"

    configs = {
        "control.yaml": ("mqtt:\n  host: a\x07b\n", "character U+0007 is not allowed in YAML"),
        "digits.yaml": ("stats_interval_s: " + "9" * 5000 + "\n", "a number of 5000 characters"),
        "deep.yaml": ("a: " + "[" * 2000 + "]" * 2000 + "\n", "nested more than 32 levels deep"),
        "alias.yaml": ("a: &a [*a]\n", "an alias refers to a value that holds it"),
        "laughs.yaml": (laughs(10), "more than 20000 values"),
    }
    cases = []
    for name, (text, message) in configs.items():
        path = tmp_path / name
        path.write_text(text)
        cases.append((["check-config", path], EXIT_CONFIG, message))
    for path, message in _hostile_bundles(tmp_path):
        cases.append((["model", "info", path], EXIT_BAD_MODEL, message))
        config = tmp_path / f"uses-{path.stem}.yaml"
        config.write_text(f"model: {path}\n")
        cases.append((["check-config", config], EXIT_BAD_MODEL, message))
    one_hertz = tmp_path / "one-hertz.wav"
    with wave.open(str(one_hertz), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(1)
        wav.writeframes(b"\0" * 400_000)
    cases.append((["label-wav", one_hertz], EXIT_BAD_AUDIO, "sample rate of 1 Hz"))
    for args, code, message in cases:
        done = _kwsd_limited(args)
        stderr = done.stderr.decode()
        assert done.returncode == code, (args, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("kwsd: error: ")]
        assert len(errors) == 1 and message in errors[0], (args, stderr)
        assert "Traceback" not in stderr, (args, stderr)


def test_special_files_are_refused_not_read_forever(tmp_path):
    # /dev/zero as each input that is read whole (each once ran until memory ran out), and a
    # FIFO nobody writes to (once blocked forever): a clear error naming the file, in time,
    # under a memory limit.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def importing(model, *labels):
        return ["model", "import", model, *labels, "--frontend", "mfcc", "-o", tmp_path / "o.kwsd"]

    secret = tmp_path / "secret.yaml"
    secret.write_text(f"mqtt:\n  host: localhost\n  username: u\n  password_file: {fifo}\n")
    cases = [
        (["check-config", "/dev/zero"], EXIT_CONFIG, "/dev/zero: cannot read the file (not a regular file)"),
        (["check-config", fifo], EXIT_CONFIG, f"{fifo}: cannot read the file (not a regular file)"),
        (
            ["check-config", secret],
            EXIT_CONFIG,
            f"{secret}: mqtt.password_file: cannot read {fifo} (not a regular file)",
        ),
        (
            ["model", "info", "/dev/zero"],
            EXIT_BAD_MODEL,
            "/dev/zero: not a regular file, expected a .kwsd model bundle file",
        ),
        (
            ["label-wav", "-m", fifo, DEMO_WAV],
            EXIT_BAD_MODEL,
            f"{fifo}: not a regular file, expected a .kwsd model bundle file",
        ),
        (
            ["evaluate", "--audio", DEMO_WAV, "--truth", "/dev/zero"],
            EXIT_NO_INPUT,
            "/dev/zero: cannot read (not a regular file)",
        ),
        (
            importing("/dev/zero", "--labels", "a"),
            EXIT_NO_INPUT,
            "/dev/zero: cannot read (not a regular file)",
        ),
        (importing(fifo, "--labels", "a"), EXIT_NO_INPUT, f"{fifo}: cannot read (not a regular file)"),
        (
            importing(demo_bundle_path(), "--labels-file", "/dev/zero"),
            EXIT_NO_INPUT,
            "/dev/zero: cannot read (not a regular file)",
        ),
    ]
    for args, code, message in cases:
        done = _kwsd_limited(args)
        stderr = done.stderr.decode()
        assert (done.returncode, stderr.strip().splitlines()[-1:]) == (code, [f"kwsd: error: {message}"]), (
            args
        )
    assert not (tmp_path / "o.kwsd").exists()


def test_file_names_too_long_or_not_utf8_are_user_errors_or_work(tmp_path):
    long = "n" * 300  # a path component over 255 bytes: exit 70 in these once
    cases = [
        (["model", "info", f"{long}.kwsd"], f"{long}.kwsd: cannot read (File name too long)"),
        (["label-wav", "-m", f"{long}.kwsd", DEMO_WAV], f"{long}.kwsd: cannot read (File name too long)"),
        (
            ["evaluate", "--audio", DEMO_WAV, "--truth", f"{long}.txt"],
            f"{long}.txt: cannot read (File name too long)",
        ),
        (
            [
                "model",
                "import",
                demo_bundle_path(),
                "--labels-file",
                long,
                "--frontend",
                "mfcc",
                "-o",
                "o.kwsd",
            ],
            f"{long}: cannot read (File name too long)",
        ),
        (
            ["model", "import", f"{long}.tflite", "--labels", "a", "--frontend", "mfcc", "-o", "o.kwsd"],
            f"{long}.tflite: cannot read (File name too long)",
        ),
    ]
    for args, message in cases:
        done = subprocess.run(
            [sys.executable, "-m", "kwsd", *map(str, args)], capture_output=True, cwd=tmp_path, check=False
        )
        assert (done.returncode, done.stderr.decode().strip()) == (EXIT_NO_INPUT, f"kwsd: error: {message}")
    # A name that is not UTF-8, under a strict UTF-8 stdout: printed as the bytes it is.
    name = os.fsencode(tmp_path) + b"/bad\xff"
    shutil.copyfile(DEMO_WAV, name + b".wav")
    shutil.copyfile(DEMO_TRUTH, name + b".txt")
    strict = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    for args in (
        [b"label-wav", name + b".wav", os.fsencode(DEMO_WAV)],
        [b"evaluate", b"--audio", name + b".wav", b"--truth", name + b".txt"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "kwsd", *args], capture_output=True, env=strict, check=False
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert name + b".wav" in done.stdout


def test_model_import_wraps_a_bare_tflite_that_then_runs(tmp_path):
    float_bundle = read_bundle(demo_bundle_path().with_name("demo-float.kwsd"))
    bare = tmp_path / "model.tflite"
    bare.write_bytes(float_bundle.tflite)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(float_bundle.labels) + "\n")
    out = tmp_path / "imported.kwsd"
    result = kwsd(
        "model",
        "import",
        bare,
        "--labels-file",
        labels,
        "--frontend",
        "mfcc",
        "--window-stride-ms",
        "20",
        "-o",
        out,
        check=0,
    )
    assert "input float32 [1,49,13]" in result.stdout.decode()
    imported = read_bundle(out)
    assert imported.provenance["tool"] == "kwsd model import"
    assert imported.frontend == float_bundle.frontend
    same_settings = ["--clip-stride-ms", "20", "--average-window-ms", "1000", "--threshold", "0.6"]
    assert detections(kwsd("stream", DEMO_WAV, "-m", out, *same_settings, check=0)) == detections(
        kwsd(
            "stream", DEMO_WAV, "-m", demo_bundle_path().with_name("demo-float.kwsd"), *same_settings, check=0
        )
    )


def test_model_import_refuses_facts_that_disagree_with_the_model(tmp_path):
    float_bundle = read_bundle(demo_bundle_path().with_name("demo-float.kwsd"))
    bare = tmp_path / "model.tflite"
    bare.write_bytes(float_bundle.tflite)
    result = kwsd(
        "model",
        "import",
        bare,
        "--labels",
        "silence,unknown,yes,no",
        "--frontend",
        "micro",
        "-o",
        tmp_path / "x.kwsd",
    )
    assert result.returncode == 67
    message = result.stderr.decode().strip()
    assert "expects input [1,49,13] float32 but the bundle's front end" in message
    assert "makes [49,40]" in message
    assert not (tmp_path / "x.kwsd").exists()


@pytest.mark.parametrize(
    ("frontend", "bins", "params"),
    [
        # 13 coefficients at a 20 ms stride: 49x13, the demo model's input.
        (
            "tf_mfcc",
            "13",
            {
                "dct_coefficient_count": 13,
                "filterbank_channel_count": 40,
                "lower_frequency_limit_hz": 20.0,
                "upper_frequency_limit_hz": 4000.0,
            },
        ),
        # 12 bins: pooling width floor(257 / 12) = 21, ceil(257 / 21) = 13 features.
        ("tf_average", "12", {"feature_bin_count": 12}),
    ],
)
def test_model_import_with_train_py_front_ends(tmp_path, frontend, bins, params):
    demo = read_bundle(demo_bundle_path())
    bare = tmp_path / "model.tflite"
    bare.write_bytes(demo.tflite)
    out = tmp_path / "imported.kwsd"
    labels = ",".join(demo.labels)
    args = ["model", "import", bare, "--labels", labels, "--frontend", frontend, "-o", out]
    # Without a stride, train.py's 10 ms is assumed: 98 frames, which this model refuses.
    refused = kwsd(*args, "--feature-bin-count", bins)
    assert refused.returncode == 67
    assert f"front end ({frontend} 16000 Hz, 1000 ms clip, 30/10 ms window/stride (480/160 samples), " in (
        refused.stderr.decode()
    )
    result = kwsd(*args, "--feature-bin-count", bins, "--window-stride-ms", "20", check=0)
    assert f"{frontend} 16000 Hz, 1000 ms clip, 30/20 ms window/stride (480/320 samples), 49x13 features" in (
        result.stdout.decode()
    )
    manifest = json.loads(zipfile.ZipFile(out).read("bundle.json"))
    assert manifest["frontend"] == {
        "kind": frontend,
        "sample_rate_hz": 16000,
        "clip_duration_ms": 1000,
        "window_size_ms": 30,
        "window_stride_ms": 20,
        frontend: params,
    }
    lines = kwsd("label-wav", "-m", out, DEMO_WAV, "--how-many-labels", "1", check=0).stdout.decode()
    assert len(lines.splitlines()) == 1
    wrong = kwsd(*args, "--frontend", "micro", "--feature-bin-count", bins)
    assert (wrong.returncode, wrong.stderr.decode().strip()) == (
        64,
        "kwsd: error: --feature-bin-count: given for a micro front end "
        "(it is for --frontend tf_mfcc or tf_average)",
    )


def test_model_info_describes_the_demo():
    out = kwsd("model", "info", demo_bundle_path(), check=0).stdout.decode()
    assert "labels:     _silence_, _unknown_, yes, no, up, down, left, right, on, off, stop, go" in out
    assert "input:      int8 [1,49,13] (scale " in out
    assert "made by:    tools/recipe.py demo (tools/train.py)" in out
    # It names what it was trained on, and credits the real speech it learnt from.
    assert any(line.startswith("data:       people (weight 3): ") for line in out.splitlines())
    assert "Creative Commons BY 4.0" in out and "arXiv:1804.03209" in out


# --- bad input: one clear line on stderr, a distinct exit code, no traceback ----------------


def write_wav_bytes(path, header_only=False, fmt_tag=1, bits=16):
    import struct

    data = b"" if header_only else np.zeros(1600, np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", fmt_tag, 1, 16000, 16000 * bits // 8, bits // 8, bits)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


class STDIN:
    """Bytes to hand the command on its standard input."""

    def __init__(self, data):
        self.data = data


def rewrapped(tmp_path, name, **changes):
    """The demo bundle with some facts changed, written without the checks make_bundle does."""
    demo = read_bundle(demo_bundle_path())
    manifest = dataclasses.replace(demo, **changes).manifest()
    tflite = changes.get("tflite", demo.tflite)
    manifest["model"]["sha256"] = hashlib.sha256(tflite).hexdigest()
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bundle.json", json.dumps(manifest))
        zf.writestr("model.tflite", tflite)
    return path


def bad_inputs(tmp_path):
    demo = read_bundle(demo_bundle_path())
    truncated = tmp_path / "truncated.kwsd"
    truncated.write_bytes(demo_bundle_path().read_bytes()[:-100])
    random_tflite = tmp_path / "random.tflite"
    random_tflite.write_bytes(np.random.default_rng(2).bytes(5000))
    text = tmp_path / "notes.wav"
    text.write_text("these are my notes, not audio\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    random_after_identifier = tmp_path / "tfl3.tflite"
    random_after_identifier.write_bytes(b"\x00" * 4 + b"TFL3" + np.random.default_rng(3).bytes(4000))
    manifest = demo.manifest()
    manifest["detection"]["threshold"] = "high"
    bad_detection = tmp_path / "bad-detection.kwsd"
    with zipfile.ZipFile(bad_detection, "w") as zf:
        zf.writestr("bundle.json", json.dumps(manifest))
        zf.writestr("model.tflite", demo.tflite)
    latin1_labels = tmp_path / "labels.txt"
    latin1_labels.write_bytes("_silence_\n_unknown_\nja\nnein\nstopp\nl\xe4uft\n".encode("latin-1"))
    return {
        "missing file": (["stream", tmp_path / "nope.wav"], 66, "nope.wav"),
        "directory": (["stream", tmp_path], 66, "is a directory"),
        "empty wav": (["stream", empty], 65, "empty.wav"),
        "header-only wav": (["stream", write_wav_bytes(tmp_path / "h.wav", header_only=True)], 65, "h.wav"),
        "non-wav bytes": (["stream", text], 65, "not a WAV file"),
        "mu-law wav": (["stream", write_wav_bytes(tmp_path / "mu.wav", fmt_tag=7, bits=8)], 65, "mu.wav"),
        "label-wav missing": (["label-wav", tmp_path / "nope.wav"], 66, "nope.wav"),
        "truncated bundle": (["stream", "--demo", "-m", truncated], 67, "truncated.kwsd"),
        "random tflite import": (
            [
                "model",
                "import",
                random_tflite,
                "--labels",
                "a,b",
                "--frontend",
                "mfcc",
                "-o",
                tmp_path / "o.kwsd",
            ],
            67,
            "not a TFLite flatbuffer",
        ),
        "missing model": (["stream", "--demo", "-m", tmp_path / "none.kwsd"], 66, "no such model bundle"),
        "bad clip stride": (
            ["stream", "--demo", "--clip-stride-ms", "30"],
            64,
            "clip_stride_ms: expected a positive multiple of the model's window stride (20 ms)",
        ),
        "bad threshold": (
            ["stream", "--demo", "--threshold", "2"],
            64,
            "threshold: expected a number from 0 to 1, got 2.0",
        ),
        "window that can never fire": (
            ["stream", "--demo", "--average-window-ms", "10"],
            64,
            "average_window_ms: 10 ms holds at most 1 window(s) at a 20 ms clip stride, fewer than "
            "minimum_count (3): nothing could ever be detected",
        ),
        "empty stdin": (["stream", "-", STDIN(b"")], 65, "<stdin>: no audio samples"),
        "header-only wav on stdin": (
            ["stream", "-", STDIN(write_wav_bytes(tmp_path / "h2.wav", header_only=True).read_bytes())],
            65,
            "<stdin>: no audio samples",
        ),
        "tflite truncated inside a bundle": (
            [
                "stream",
                "--demo",
                "-m",
                rewrapped(tmp_path, "cut.kwsd", tflite=demo.tflite[: len(demo.tflite) // 2]),
            ],
            67,
            "the TFLite interpreter rejects the model",
        ),
        "random bytes after TFL3": (
            [
                "model",
                "import",
                random_after_identifier,
                "--labels",
                "a,b",
                "--frontend",
                "mfcc",
                "-o",
                tmp_path / "r.kwsd",
            ],
            67,
            "the TFLite interpreter rejects the model",
        ),
        "front end that disagrees with the model": (
            [
                "stream",
                "--demo",
                "-m",
                rewrapped(
                    tmp_path,
                    "spec.kwsd",
                    frontend=FrontendSpec(FrontendKind.MFCC, mfcc=MfccParams(cepstrum_count=10)),
                ),
            ],
            67,
            "expects input [1,49,13] int8 but the bundle's front end",
        ),
        "bad detection in a bundle": (
            ["stream", "--demo", "-m", bad_detection],
            67,
            "detection.threshold: expected a number from 0 to 1, got 'high'",
        ),
        "import into a missing folder": (
            [
                "model",
                "import",
                "MODEL",
                "--labels",
                ",".join(demo.labels),
                "--frontend",
                "mfcc",
                "-o",
                tmp_path / "no" / "such" / "dir.kwsd",
            ],
            73,
            "cannot write the bundle",
        ),
        "import onto a directory": (
            [
                "model",
                "import",
                "MODEL",
                "--labels",
                ",".join(demo.labels),
                "--frontend",
                "mfcc",
                "-o",
                tmp_path,
            ],
            73,
            "not a regular file; not replacing it with a bundle",
        ),
        "labels file not utf-8": (
            [
                "model",
                "import",
                "MODEL",
                "--labels-file",
                latin1_labels,
                "--frontend",
                "mfcc",
                "-o",
                tmp_path / "l.kwsd",
            ],
            64,
            "not UTF-8 text",
        ),
        "unknown label threshold": (
            ["stream", "--demo", "--label-threshold", "maybe=0.5"],
            64,
            "not a label of this model",
        ),
        "no audio": (["stream"], 64, "no audio given"),
        "unknown flag": (["stream", "--demo", "--thresold", "0.5"], 2, "unrecognized arguments"),
        "wrong labels": (
            [
                "model",
                "import",
                "MODEL",
                "--labels",
                ",".join([*demo.labels, "x"]),
                "--frontend",
                "mfcc",
                "-o",
                tmp_path / "w.kwsd",
            ],
            67,
            f"has {len(demo.labels)} scores but the bundle has {len(demo.labels) + 1} labels",
        ),
    }


BAD_INPUT_CASES = [
    "missing file",
    "directory",
    "empty wav",
    "header-only wav",
    "non-wav bytes",
    "mu-law wav",
    "label-wav missing",
    "truncated bundle",
    "random tflite import",
    "missing model",
    "bad clip stride",
    "bad threshold",
    "window that can never fire",
    "unknown label threshold",
    "no audio",
    "unknown flag",
    "wrong labels",
    "empty stdin",
    "header-only wav on stdin",
    "tflite truncated inside a bundle",
    "random bytes after TFL3",
    "front end that disagrees with the model",
    "bad detection in a bundle",
    "import into a missing folder",
    "import onto a directory",
    "labels file not utf-8",
]


def test_bad_input_cases_are_all_run(tmp_path):
    assert sorted(BAD_INPUT_CASES) == sorted(bad_inputs(tmp_path))


@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_gets_one_clear_line_and_its_own_exit_code(tmp_path, case):
    args, code, needle = bad_inputs(tmp_path)[case]
    if "MODEL" in args:
        bare = tmp_path / "demo.tflite"
        bare.write_bytes(read_bundle(demo_bundle_path().with_name("demo-float.kwsd")).tflite)
        args = [bare if a == "MODEL" else a for a in args]
    stdin = next((a.data for a in args if isinstance(a, STDIN)), None)
    result = kwsd(*(a for a in args if not isinstance(a, STDIN)), stdin=stdin)
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr
    assert needle in stderr
    if code != 2:  # argparse prints its usage line too
        assert len(stderr.strip().splitlines()) == 1, stderr
    assert result.stdout == b""


def test_exit_codes_are_distinct_per_kind_of_problem():
    from kwsd import cli

    codes = [
        cli.EXIT_USAGE,
        cli.EXIT_BAD_SETTING,
        cli.EXIT_BAD_AUDIO,
        cli.EXIT_NO_INPUT,
        cli.EXIT_BAD_MODEL,
        cli.EXIT_MISSING_DEPENDENCY,
        cli.EXIT_INTERNAL,
        cli.EXIT_STREAM_BROKEN,
    ]
    assert len(set(codes)) == len(codes)


def test_the_daemon_package_never_imports_tensorflow():
    code = (
        "import sys, kwsd.cli; from kwsd.cli import main; "
        "main(['stream', '--demo']); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')); "
        "print('IMPORTED', bad, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert "IMPORTED []" in result.stderr.decode()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip install .` installs (built once for the tests below)."""
    out = tmp_path_factory.mktemp("wheel")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, root],
        check=False,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    (built,) = out.glob("kwsd-*.whl")
    return built


def test_package_data_ships_the_demo(wheel):
    """`pip install .` (not editable) must carry the demo model and WAV: the README's first command."""
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every package of the checkout, so a new subpackage cannot be left out of what users get.
    root = Path(__file__).resolve().parents[1]
    packages = [*(root / "kwsd").rglob("__init__.py"), *(root / "tools" / "kwsd_tools").rglob("__init__.py")]
    for init in packages:
        installed = init.relative_to(root / "tools" if "kwsd_tools" in init.parts else root).as_posix()
        assert installed in names, installed
    assert {
        "kwsd/demo/demo.kwsd",
        "kwsd/demo/demo-float.kwsd",
        "kwsd/demo/demo.wav",
        "kwsd/demo/demo.txt",
        "kwsd/demo/ATTRIBUTION.txt",  # demo.wav and the models are derived from CC BY 4.0 speech
    } <= names


TOOL_COMMANDS = {
    "kwsd-train": "train",
    "kwsd-export": "export",
    "kwsd-synth": "synth",
    "kwsd-slice": "slice",
    "kwsd-check-dataset": "check_dataset",
    "kwsd-make-stream": "make_stream",
    "kwsd-plot": "plot",
    "kwsd-recipe": "recipe",
    "kwsd-relayout": "relayout",
    "kwsd-benchmark": "benchmark",
    "kwsd-benchmark-quality": "benchmark_quality",
}


def test_the_wheel_installs_the_tools_and_their_commands_without_a_checkout(wheel, tmp_path):
    # A desktop user's `pip install 'kwsd[train]'`: the tools come as the package kwsd_tools,
    # each with its command, and run from anywhere (here: the wheel unpacked into a folder of
    # its own, away from the checkout, with this venv's TensorFlow and numpy).
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=False,
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import kwsd_tools.training.dataset as m, kwsd_tools.harness.broker; print(m.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site)
    for command, module in TOOL_COMMANDS.items():
        script = site / "bin" / command
        assert f"from kwsd_tools.{module} import main" in script.read_text(), command
        shown = subprocess.run(
            [sys.executable, script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
            check=False, timeout=300,
        )  # fmt: skip
        assert shown.returncode == 0, (command, shown.stderr[-2000:])
        assert shown.stdout.startswith("usage: "), (command, shown.stdout[:200])


# --------------------------------------------------------------------------------------
# The README's exit-code table, row by row: each code produced by a real command.


def readme_exit_codes():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("### Exit codes") :]
    table = table[: table.index("\n\n", table.index("| code |"))]
    return sorted(int(line.split("|")[1]) for line in table.splitlines()[3:] if line.startswith("| "))


def in_process(code_text, *args, env=None):
    """``python -c CODE ARGS``: for the two rows no input can cause (a bug, a missing runtime)."""
    return subprocess.run(
        [sys.executable, "-c", code_text, *map(str, args)],
        capture_output=True,
        check=False,
        timeout=120,
        env=env,
    )


# The TFLite runtimes made unimportable, as on a machine where neither is installed.
NO_RUNTIME = """
import struct
import sys
sys.modules["ai_edge_litert"] = sys.modules["ai_edge_litert.interpreter"] = None
sys.modules["tflite_runtime"] = sys.modules["tflite_runtime.interpreter"] = None
from kwsd.cli import main
sys.exit(main(sys.argv[1:]))
"""

# A handler that fails as a bug would.
A_BUG = """
import struct
import sys
import kwsd.cli as cli
def broken(args):
    raise ZeroDivisionError("a bug")
cli._cmd_devices = broken
sys.exit(cli.main(["devices"]))
"""


def exit_code_cases(tmp_path):
    """code -> a thunk running a command that must end with it, and text its stderr must hold."""
    from kwsd_tools.harness.alsa import SYSTEM_ALSA_CONF

    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    garbage = tmp_path / "garbage.kwsd"
    garbage.write_bytes(b"not a model")
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("detection:\n  threshold: 3\n")
    truth = tmp_path / "wrong.txt"
    swap = SWAPPED
    truth.write_text("".join(f"{swap.get(label, label)}, {t:f}\n" for label, t in ground_truth()))
    no_devices = {**os.environ, "ALSA_CONFIG_PATH": SYSTEM_ALSA_CONF, "JACK_NO_START_SERVER": "1"}
    bare = tmp_path / "demo.tflite"
    bare.write_bytes(read_bundle(demo_bundle_path().with_name("demo-float.kwsd")).tflite)
    with wave.open(str(DEMO_WAV)) as wav:
        raw = wav.readframes(wav.getnframes())
    return {
        0: (lambda: kwsd("check-config", Path(__file__).resolve().parents[1] / "config.yaml"), ""),
        1: (
            lambda: kwsd(
                "calibrate",
                "--audio",
                DEMO_WAV,
                "--truth",
                truth,
                "--thresholds",
                "0.3,0.4",
                "--target-fa-per-hour",
                "0.5",
            ),
            "no setting reaches 0.5 false accepts per hour",
        ),
        2: (lambda: kwsd("stream", "--demo", "--thresold", "0.5"), "unrecognized arguments"),
        64: (
            lambda: kwsd("stream", "--demo", "--threshold", "2"),
            "threshold: expected a number from 0 to 1",
        ),
        65: (lambda: kwsd("stream", short), "500 ms of audio, shorter than one clip (1000 ms)"),
        66: (lambda: kwsd("stream", tmp_path / "nope.wav"), "nope.wav"),
        67: (lambda: kwsd("stream", "--demo", "-m", garbage), "not a kwsd model bundle"),
        69: (lambda: in_process(NO_RUNTIME, "stream", "--demo"), "ai-edge-litert"),
        70: (lambda: in_process(A_BUG), "Traceback"),
        73: (
            lambda: kwsd(
                "model",
                "import",
                bare,
                "--labels",
                ",".join(read_bundle(demo_bundle_path()).labels),
                "--frontend",
                "mfcc",
                "-o",
                tmp_path / "no" / "such" / "x.kwsd",
            ),
            "cannot write the bundle",
        ),
        74: (lambda: kwsd("stream", "-", stdin=raw + b"\x01"), "1 trailing byte"),
        75: (
            lambda: subprocess.run(
                [sys.executable, "-m", "kwsd", "devices"],
                capture_output=True,
                env=no_devices,
                timeout=120,
                check=False,
            ),
            "there are no capture devices",
        ),
        78: (lambda: kwsd("check-config", bad_config), "detection.threshold"),
    }


def test_every_exit_code_in_the_readme_has_a_case(tmp_path):
    assert readme_exit_codes() == sorted(exit_code_cases(tmp_path))


@pytest.mark.parametrize("code", readme_exit_codes())
def test_every_exit_code_in_the_readme_is_what_the_code_gives(tmp_path, code):
    run, needle = exit_code_cases(tmp_path)[code]
    result = run()
    stderr = result.stderr.decode()
    if code == 75 and result.returncode == 0 and result.stdout.strip():
        pytest.skip("this machine has a capture device: the no-device row cannot be produced here")
    assert result.returncode == code, stderr
    assert needle in stderr
    if code not in (0, 2, 70):
        assert "kwsd: error: " in stderr and "Traceback" not in stderr, stderr


# --------------------------------------------------------------------------------------
# One BLAS thread in kwsd's own processes (kwsd/blas.py), none imposed on a host program.

BLAS_THREADS = """
import struct
import sys
if sys.argv[1] == "entry":
    from kwsd.blas import one_blas_thread_before_numpy
    one_blas_thread_before_numpy()  # what kwsd/__main__.py does first
import kwsd.cli  # numpy and the front ends' libraries
import numpy, scipy.linalg
from threadpoolctl import threadpool_info
print(sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
"""


@pytest.mark.parametrize(
    ("how", "variables", "threads"),
    [
        ("entry", {}, "[1]"),  # kwsd's own processes: one thread
        ("entry", {"OPENBLAS_NUM_THREADS": "2"}, "[2]"),  # what the user sets wins
        ("import", {}, f"[{os.cpu_count()}]"),  # importing kwsd changes nothing: OpenBLAS's default
    ],
)
def test_kwsd_processes_use_one_blas_thread_unless_told_otherwise(how, variables, threads):
    pytest.importorskip("threadpoolctl")
    if how == "import" and os.cpu_count() == 1:
        pytest.skip("one core: OpenBLAS's default is one thread too")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    result = in_process(BLAS_THREADS, how, env={**env, **variables})
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == threads


# Several models: `kwsd stream -m A -m B`.


def renamed_demo(path, suffix, name, **spec_changes):
    """The demo's network and front end (changed by ``spec_changes``) under other keyword names
    (``yes`` -> ``yes<suffix>``), written to ``path``: its detections are the demo's, renamed."""
    from kwsd.bundle import make_bundle, write_bundle

    demo = read_bundle(demo_bundle_path())
    labels = [label if label.startswith("_") else label + suffix for label in demo.labels]
    spec = dataclasses.replace(demo.frontend, **spec_changes) if spec_changes else demo.frontend
    bundle = make_bundle(demo.tflite, labels, spec, name=name, tool="test", detection=demo.detection)
    return write_bundle(bundle, path)


@pytest.fixture(scope="module")
def again(tmp_path_factory):
    return renamed_demo(tmp_path_factory.mktemp("models") / "again.kwsd", "_again", "again")


def renamed_lines(lines, suffix, model):
    """The detection lines of the demo alone as those of its renamed copy among several models."""
    return [{**line, "label": line["label"] + suffix, "model": model} for line in lines]


def test_stream_with_two_models_names_each_model_and_each_hears_what_it_hears_alone(again):
    demo_alone = detections(kwsd("stream", "--demo", check=0))
    again_alone = detections(kwsd("stream", "--demo", "-m", again, check=0))
    both = kwsd("stream", "--demo", "-m", demo_bundle_path(), "-m", again, "--gate", "--stats", check=0)
    found = detections(both)
    assert [line for line in found if line["model"] == "demo"] == renamed_lines(demo_alone, "", "demo")
    assert [line for line in found if line["model"] == "again"] == renamed_lines(again_alone, "", "again")
    assert again_alone == [{**line, "label": line["label"] + "_again"} for line in demo_alone]
    # In audio time, the models in their -m order within one time.
    assert found == [
        line
        for pair in zip(
            renamed_lines(demo_alone, "", "demo"), renamed_lines(demo_alone, "_again", "again"), strict=True
        )
        for line in pair
    ]
    stats = both.stderr.decode()
    # The demo's 1751 windows for each model; one front end serves both.
    assert stats.startswith("kwsd: 36.00 s of audio, 2 models on 1 front end, 3502 windows, 12 detections; ")
    assert stats.endswith("; audio gate skipped 0 of 3502 windows\n")


def test_stream_with_one_model_given_prints_exactly_what_it_printed():
    alone = kwsd("stream", "--demo", check=0)
    given = kwsd("stream", "--demo", "-m", demo_bundle_path(), check=0)
    assert given.stdout == alone.stdout
    assert (
        given.stdout.decode().splitlines()[0] == '{"label": "yes", "score": 0.90019, "audio_time_ms": 2230}'
    )
    assert all(list(line) == ["label", "score", "audio_time_ms"] for line in detections(given))


def test_stream_flags_apply_to_every_model_and_a_label_threshold_to_the_models_that_have_it(again):
    flags = ["--threshold", "0.95", "--label-threshold", "yes_again=0.3"]
    demo_alone = detections(kwsd("stream", "--demo", "--threshold", "0.95", check=0))
    again_alone = detections(kwsd("stream", "--demo", "-m", again, *flags, check=0))
    found = detections(kwsd("stream", "--demo", "-m", demo_bundle_path(), "-m", again, *flags, check=0))
    assert [line for line in found if line["model"] == "demo"] == renamed_lines(demo_alone, "", "demo")
    assert [line for line in found if line["model"] == "again"] == renamed_lines(again_alone, "", "again")
    # At 0.3 yes_again fires earlier in its word (and once on another); the demo's yes stays at 0.95.
    assert [line["label"] for line in demo_alone] == ["yes", "no", "stop", "go"]
    assert [line["label"] for line in again_alone] == [
        "yes_again",
        "no_again",
        "yes_again",
        "stop_again",
        "go_again",
    ]
    assert again_alone[0]["audio_time_ms"] < demo_alone[0]["audio_time_ms"]


def test_stream_scores_with_two_models_show_every_label_once_per_window(again):
    lines = detections(kwsd("stream", "--demo", "-m", demo_bundle_path(), "-m", again, "--scores", check=0))
    scores = [line for line in lines if "scores" in line]
    labels = read_bundle(demo_bundle_path()).labels
    union = [*labels, *(label + "_again" for label in labels if not label.startswith("_"))]
    assert all(list(line["scores"]) == union for line in scores)
    # One line per window time (both models' windows end together), in order with the detections.
    assert [line["audio_time_ms"] for line in scores] == list(range(990, 36000, 20))
    times = [line["audio_time_ms"] for line in lines]
    assert times == sorted(times)
    for line in scores:  # the same network on the same front end: the same scores, renamed
        assert all(line["scores"][label + "_again"] == line["scores"][label] for label in labels[2:])


def test_stream_refuses_models_that_cannot_listen_together_before_reading_any_audio(tmp_path, again):
    demo = demo_bundle_path()
    float_demo = demo.with_name("demo-float.kwsd")
    slow = renamed_demo(
        tmp_path / "slow.kwsd",
        "_slow",
        "slow",
        sample_rate_hz=8000,
        mfcc=dataclasses.replace(read_bundle(demo).frontend.mfcc, high_freq_hz=3800.0),
    )
    nowhere = tmp_path / "not-read.wav"  # 66 if it were opened: every refusal comes first
    cases = {
        ("-m", demo, "-m", float_demo): (
            f"-m: the keyword 'yes' is in two models, {demo} and {float_demo}; "
            "each keyword may be in one loaded model only"
        ),
        ("-m", demo, "-m", demo): f"-m {demo}: given twice; each model may be loaded once",
        ("-m", demo, "-m", slow): (
            f"-m: {demo} takes 16000 Hz and {slow} takes 8000 Hz; kwsd feeds all models from one "
            "capture at one rate"
        ),
        ("-m", demo, "-m", again, "--label-threshold", "maybe=0.5"): (
            "--label-threshold: 'maybe' is not a label of any of the models (they have: _silence_, "
            "_unknown_, down, down_again, go, go_again, left, left_again, no, no_again, off, off_again, "
            "on, on_again, right, right_again, stop, stop_again, up, up_again, yes, yes_again)"
        ),
    }
    for args, message in cases.items():
        result = kwsd("stream", nowhere, *args)
        assert (result.returncode, result.stderr.decode(), result.stdout) == (
            64,
            f"kwsd: error: {message}\n",
            b"",
        )
