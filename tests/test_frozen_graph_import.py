"""`kwsd model import` of freeze.py's frozen graphs, compared with the frozen graph run in TensorFlow.

freeze.py itself fails on TensorFlow 2.21 and is not in the wheel, so each test builds a graph
the way it does (``wav_data`` -> DecodeWav ``decoded_sample_data`` -> AudioSpectrogram -> Mfcc,
or ExpandDims + average pooling, or AudioMicrofrontend and the 10/256 multiply -> Reshape to
the fingerprint -> a dense layer ->
``labels_softmax``) and freezes it with ``tf.compat.v1.graph_util.convert_variables_to_constants``.
The reference answer is the frozen graph run as label_wav.py runs it: a WAV file's bytes fed to
``wav_data``, scores read from ``labels_softmax``.

The real speech in tests/fixtures/realspeech is from Speech Commands (Pete Warden, Google,
CC BY 4.0, https://creativecommons.org/licenses/by/4.0/; arXiv:1804.03209).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from training_tools import missing_tensorflow

from kwsd.cli import main

pytestmark = pytest.mark.skipif(missing_tensorflow() is not None, reason=str(missing_tensorflow()))

SPEECH = sorted((Path(__file__).parent / "fixtures" / "realspeech").glob("*_nohash_*.wav"))
#: train.py's labels for its default wanted words, as conv_labels.txt lists them.
LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
#: Typical size of a feature (tf_mfcc values run about -247..30), to give the dense layer logits
#: a spread of a few units, so that the top three labels are well apart.
FEATURE_SCALE = {"mfcc": 60.0, "average": 1.0, "micro": 4.0}


def freeze_graph(
    preprocess="mfcc",
    *,
    rate=16000,
    clip_ms=1000,
    window_ms=30,
    stride_ms=10,
    bins=40,
    labels=12,
    seed=1,
    names=("wav_data", "labels_softmax"),
    extra_op=False,
    micro_scale=32767,
    audio_leak=False,
):
    """The GraphDef freeze.py writes for a single dense layer, frozen; its bytes."""
    import tensorflow as tf

    desired = int(rate * clip_ms / 1000)
    window = int(rate * window_ms / 1000)
    stride = int(rate * stride_ms / 1000)
    frames = 1 + (desired - window) // stride
    graph = tf.Graph()
    with graph.as_default():
        wav = tf.compat.v1.placeholder(tf.string, [], name=names[0])
        decoded = tf.audio.decode_wav(
            wav, desired_channels=1, desired_samples=desired, name="decoded_sample_data"
        )
        audio = tf.abs(decoded.audio) if extra_op else decoded.audio
        spectrogram = tf.raw_ops.AudioSpectrogram(
            input=audio, window_size=window, stride=stride, magnitude_squared=True
        )
        if preprocess == "micro":
            from tensorflow.lite.experimental.microfrontend.python.ops import audio_microfrontend_op

            # freeze.py's micro front end, its 32767 included (train.py: 32768).
            micro = audio_microfrontend_op.audio_microfrontend(
                tf.cast(tf.multiply(audio, micro_scale), tf.int16),
                sample_rate=rate,
                window_size=window_ms,
                window_step=stride_ms,
                num_channels=bins,
                out_scale=1,
                out_type=tf.float32,
            )
            fingerprint = tf.multiply(micro, 10.0 / 256.0)
            width = bins
        elif preprocess == "mfcc":
            fingerprint = tf.raw_ops.Mfcc(
                spectrogram=spectrogram, sample_rate=rate, dct_coefficient_count=bins
            )
            width = bins
        else:
            fft_bins = 1 + (1 << (window - 1).bit_length()) // 2
            average_width = fft_bins // bins
            width = -(-fft_bins // average_width)
            fingerprint = tf.nn.pool(
                input=tf.expand_dims(spectrogram, -1),
                window_shape=[1, average_width],
                strides=[1, average_width],
                pooling_type="AVG",
                padding="SAME",
            )
        size = frames * width
        reshaped = tf.reshape(fingerprint, [-1, size])
        rng = np.random.default_rng(seed)
        stddev = 3.0 / (np.sqrt(size) * FEATURE_SCALE[preprocess])
        weights = tf.compat.v1.get_variable(
            "weights", initializer=rng.normal(0.0, stddev, (size, labels)).astype(np.float32)
        )
        bias = tf.compat.v1.get_variable("bias", initializer=np.zeros(labels, np.float32))
        logits = tf.matmul(reshaped, weights) + bias
        if audio_leak:  # a model that reads the audio besides the features: kwsd cannot feed it
            logits += tf.reduce_mean(decoded.audio)
        tf.nn.softmax(logits, name=names[1])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [names[1]]
            )
    return frozen.SerializeToString()


def frozen_graph_scores(graph_bytes, wav_paths):
    """label_wav.py's way: the WAV file's bytes into wav_data, labels_softmax out."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_bytes)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return [
                session.run("labels_softmax:0", {"wav_data:0": Path(path).read_bytes()})[0]
                for path in wav_paths
            ]


def kwsd_scores(bundle, wav_paths, capsys):
    """`kwsd label-wav --json` on each WAV: [(label, score), ...] best first, all labels."""
    capsys.readouterr()
    assert (
        main(["label-wav", "--json", "-m", str(bundle), "--how-many-labels", "99", *map(str, wav_paths)]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    return [[(item["label"], item["score"]) for item in json.loads(line)["labels"]] for line in lines]


def top3(scores):
    order = np.argsort(-np.asarray(scores), kind="stable")[:3]
    return [LABELS[i] for i in order]


def resampled_copies(paths, rate, folder):
    """The speech fixtures at another rate, as 16-bit WAVs (DecodeWav does not resample: both see these)."""
    import soxr

    from kwsd.audio import read_wav

    folder.mkdir()
    out = []
    for path in paths:
        samples = read_wav(str(path), 16000).astype(np.float64) / 32768
        converted = np.clip(np.round(soxr.resample(samples, 16000, rate) * 32768), -32768, 32767)
        target = folder / path.name
        with wave.open(str(target), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(converted.astype(np.int16).tobytes())
        out.append(target)
    return out


def clip_folder(paths, folder):
    """A folder holding just ``paths`` (links), for --representative-dir."""
    folder.mkdir()
    for path in paths:
        (folder / path.name).symlink_to(path.resolve())
    return folder


def run_import(tmp_path, graph_bytes, capsys, *extra, name="model"):
    pb = tmp_path / f"{name}.pb"
    pb.write_bytes(graph_bytes)
    labels = tmp_path / "conv_labels.txt"
    labels.write_text("".join(f"{label}\n" for label in LABELS))
    out = tmp_path / f"{name}.kwsd"
    capsys.readouterr()
    code = main(["model", "import", str(pb), "--labels-file", str(labels), "-o", str(out), *map(str, extra)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, out


CASES = {
    # train.py's defaults: 16 kHz, 1000 ms, 30/10 ms, 40 MFCC coefficients: 98x40.
    "mfcc defaults": dict(preprocess="mfcc"),
    # 22,050 Hz (661-sample windows, truncated as train.py does), 30/20 ms, 20 coefficients.
    "mfcc 22050 Hz 30/20 ms": dict(preprocess="mfcc", rate=22050, stride_ms=20, bins=20),
    "average defaults": dict(preprocess="average"),
    # micro_speech's front end (30/20 ms, 40 channels), audio scaled as train.py scales it.
    "micro 30/20 ms": dict(preprocess="micro", stride_ms=20, micro_scale=32768),
    # Not micro_speech's: 25/15 ms and 32 channels.
    "micro 25/15 ms 32 channels": dict(
        preprocess="micro", window_ms=25, stride_ms=15, bins=32, micro_scale=32768
    ),
}
MICRO_OP_DEFAULTS = {
    "channel_count": 40,
    "low_freq_hz": 125.0,
    "high_freq_hz": 7500.0,
    "noise_reduction": True,
    "pcan_gain_control": True,
    "log_scale": True,
    "output_scale": 0.0390625,
    "smoothing_bits": 10,
    "even_smoothing": 0.025,
    "odd_smoothing": 0.06,
    "min_signal_remaining": 0.05,
    "pcan_strength": 0.95,
    "pcan_offset": 80.0,
    "gain_bits": 21,
    "scale_shift": 6,
    "state": "per_clip",
}
FRONTENDS = {
    "mfcc defaults": {
        "kind": "tf_mfcc",
        "sample_rate_hz": 16000,
        "clip_duration_ms": 1000,
        "window_size_ms": 30,
        "window_stride_ms": 10,
        "tf_mfcc": {
            "dct_coefficient_count": 40,
            "filterbank_channel_count": 40,
            "lower_frequency_limit_hz": 20.0,
            "upper_frequency_limit_hz": 4000.0,
        },
    },
    "mfcc 22050 Hz 30/20 ms": {
        "kind": "tf_mfcc",
        "sample_rate_hz": 22050,
        "clip_duration_ms": 1000,
        "window_size_ms": 30,
        "window_stride_ms": 20,
        "tf_mfcc": {
            "dct_coefficient_count": 20,
            "filterbank_channel_count": 40,
            "lower_frequency_limit_hz": 20.0,
            "upper_frequency_limit_hz": 4000.0,
        },
    },
    "average defaults": {
        "kind": "tf_average",
        "sample_rate_hz": 16000,
        "clip_duration_ms": 1000,
        "window_size_ms": 30,
        "window_stride_ms": 10,
        "tf_average": {"feature_bin_count": 40},
    },
    "micro 30/20 ms": {
        "kind": "micro",
        "sample_rate_hz": 16000,
        "clip_duration_ms": 1000,
        "window_size_ms": 30,
        "window_stride_ms": 20,
        "micro": MICRO_OP_DEFAULTS,
    },
    "micro 25/15 ms 32 channels": {
        "kind": "micro",
        "sample_rate_hz": 16000,
        "clip_duration_ms": 1000,
        "window_size_ms": 25,
        "window_stride_ms": 15,
        "micro": {**MICRO_OP_DEFAULTS, "channel_count": 32},
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_frozen_graph_import_reads_the_facts_and_labels_wavs_as_the_graph_does(tmp_path, capsys, case):
    settings = CASES[case]
    graph = freeze_graph(**settings)
    rate = settings.get("rate", 16000)
    wavs = SPEECH if rate == 16000 else resampled_copies(SPEECH, rate, tmp_path / "clips")
    code, out, err, bundle = run_import(tmp_path, graph, capsys)
    assert (code, err) == (0, "")
    manifest = json.loads(zipfile.ZipFile(bundle).read("bundle.json"))
    assert manifest["frontend"] == FRONTENDS[case]
    assert manifest["metrics"] == {"quantization": "float32"}
    assert "note: converted to float32: no --representative-dir given" in out
    reference = frozen_graph_scores(graph, wavs)
    ours = kwsd_scores(bundle, wavs, capsys)
    for want, got in zip(reference, ours, strict=True):
        assert [label for label, _ in got[:3]] == top3(want)
        # Printed to 5 decimals; the front ends agree with TensorFlow's ops to float32 rounding.
        assert max(abs(float(want[LABELS.index(label)]) - score) for label, score in got) < 2e-4

    # int8, calibrated on kwsd's own features of the same clips. mfcc, micro: same top label, scores
    # within what 8 bits carry (the output's scale is 1/256). average: the pooled squared
    # magnitudes span 0..~1000 with a median near 1e-6, which one int8 scale cannot hold; the
    # import says what that costs rather than hiding it.
    code, out, err, int8_bundle = run_import(
        tmp_path,
        graph,
        capsys,
        "--representative-dir",
        clip_folder(wavs, tmp_path / "calibration"),
        name="model-int8",
    )
    assert (code, err) == (0, "")
    assert f"note: converted to int8, calibrated on kwsd's features of {len(wavs)} WAVs" in out
    assert "input int8 [1," in out and "output int8 [1,12] (scale 0.00390625, zero point -128)" in out
    int8_scores = kwsd_scores(int8_bundle, wavs, capsys)
    agree = sum(got[0][0] == top3(want)[0] for want, got in zip(reference, int8_scores, strict=True))
    assert f"note: int8 vs float32 on those {len(wavs)} clips: top label the same on {agree}, " in out
    metrics = json.loads(zipfile.ZipFile(int8_bundle).read("bundle.json"))["metrics"]
    assert (metrics["quantization"], metrics["calibration_clips"]) == ("int8", len(wavs))
    assert metrics["int8_vs_float32_top1_same"] == agree
    if settings["preprocess"] != "average":
        for want, got in zip(reference, int8_scores, strict=True):
            assert max(abs(float(want[LABELS.index(label)]) - score) for label, score in got) < 0.05
            # A near tie (the two best within 0.1) may flip under 8 bits; anything clearer may not.
            best, second = np.sort(want)[::-1][:2]
            if best - second > 0.1:
                assert got[0][0] == top3(want)[0]


def test_a_micro_graph_as_freeze_py_writes_it_is_served_as_training_computed(tmp_path, capsys):
    """freeze.py scales audio by 32767 for micro; train.py by 32768. kwsd keeps training's."""
    as_frozen = freeze_graph("micro", stride_ms=20, micro_scale=32767)
    as_trained = freeze_graph("micro", stride_ms=20, micro_scale=32768)
    code, out, err, bundle = run_import(tmp_path, as_frozen, capsys, "--micro-state", "continuous")
    assert (code, err) == (0, "")
    assert (
        "note: the graph feeds the micro front end audio x 32767 (Mul's constant, freeze.py's); train.py "
        "trained on x 32768, and kwsd computes the features as training did, so its scores can differ "
        "slightly from this graph's"
    ) in out.splitlines()
    manifest = json.loads(zipfile.ZipFile(bundle).read("bundle.json"))
    assert manifest["frontend"]["micro"] == {**MICRO_OP_DEFAULTS, "state": "continuous"}
    # label-wav computes one clip afresh whatever the state: the scores of the graph at 32768.
    for want, got in zip(
        frozen_graph_scores(as_trained, SPEECH), kwsd_scores(bundle, SPEECH, capsys), strict=True
    ):
        assert [label for label, _ in got[:3]] == top3(want)
        assert max(abs(float(want[LABELS.index(label)]) - score) for label, score in got) < 2e-4
    # --micro-state is for a micro front end only.
    code, _, err, refused = run_import(
        tmp_path, freeze_graph(), capsys, "--micro-state", "per_clip", name="no"
    )
    assert (code, err.strip()) == (
        64,
        "kwsd: error: --micro-state: given for a graph whose front end is mfcc (it is for micro)",
    )
    assert not refused.exists()


def test_the_facts_are_printed_with_the_op_they_come_from(tmp_path, capsys):
    code, out, _, _ = run_import(tmp_path, freeze_graph("mfcc", rate=22050, stride_ms=20, bins=20), capsys)
    assert code == 0
    assert out.splitlines()[0] == (
        "read from model.pb: preprocess mfcc (ops AudioSpectrogram + Mfcc), "
        "Mfcc's sample_rate input 22050 Hz, "
        "decoded_sample_data desired_samples 22050 samples, AudioSpectrogram window_size 661 samples, "
        "AudioSpectrogram stride 441 samples, Mfcc dct_coefficient_count 20, "
        "Mfcc filterbank_channel_count 40, Mfcc lower_frequency_limit 20, Mfcc upper_frequency_limit 4000"
    )
    code, out, _, _ = run_import(tmp_path, freeze_graph("average"), capsys, name="average")
    assert code == 0
    assert (
        "note: sample rate 16000 Hz assumed (train.py's default): the graph's average front end does not "
        "state it; give --sample-rate if the model was trained at another"
    ) in out.splitlines()


def test_flags_that_agree_with_the_graph_are_accepted(tmp_path, capsys):
    graph = freeze_graph("mfcc", rate=22050, stride_ms=20, bins=20)
    agreeing = ["--frontend", "tf_mfcc", "--sample-rate", "22050", "--clip-duration-ms", "1000"]
    agreeing += ["--window-size-ms", "30", "--window-stride-ms", "20", "--feature-bin-count", "20"]
    code, _, err, _ = run_import(tmp_path, graph, capsys, *agreeing)
    assert (code, err) == (0, "")
    # python_speech_features' parameters have no place in a graph that states its own front end.
    code, _, err, bundle = run_import(tmp_path, graph, capsys, "--mfcc", "lifter=0", name="refused")
    assert (code, err.strip()) == (
        64,
        "kwsd: error: --mfcc: given for a frozen graph (its front end is read from its ops)",
    )
    assert not bundle.exists()


def bad_graph_cases(tmp_path):
    """name -> (graph bytes, extra flags, labels, the one stderr line)."""
    where = str(tmp_path / "model.pb")
    return {
        "no wav_data input": (
            freeze_graph(names=("audio_bytes", "labels_softmax")),
            [],
            f"kwsd: error: {where}: no node 'wav_data' (Placeholder), expected freeze.py's graph: "
            "wav_data -> ... -> labels_softmax "
            "(found placeholders and softmaxes: audio_bytes, labels_softmax)",
        ),
        "no labels_softmax output": (
            freeze_graph(names=("wav_data", "scores")),
            [],
            f"kwsd: error: {where}: no node 'labels_softmax' (Softmax), expected freeze.py's graph: wav_data "
            "-> ... -> labels_softmax (found placeholders and softmaxes: scores, wav_data)",
        ),
        "an op kwsd cannot map": (
            freeze_graph(extra_op=True),
            [],
            f"kwsd: error: {where}: ops kwsd cannot map in the mfcc front end: Abs (Abs) (expected only "
            "AudioSpectrogram, Const, DecodeWav, Identity, Mfcc, Placeholder, as freeze.py builds it)",
        ),
        "a model that reads the audio itself": (
            freeze_graph(audio_leak=True),
            [],
            f"kwsd: error: {where}: the model reads decoded_sample_data, wav_data besides the front end's "
            "output Mfcc; expected it to see the audio only through the features",
        ),
        "labels that are too few": (
            freeze_graph(labels=len(LABELS) + 1),
            [],
            f"kwsd: error: {where}: labels_softmax gives 13 scores, but --labels-file "
            f"{tmp_path / 'conv_labels.txt'} has 12 labels ({', '.join(LABELS)}); "
            "expected one label per score",
        ),
        "a stride the graph contradicts": (
            freeze_graph(),
            ["--window-stride-ms", "20"],
            f"kwsd: error: {where}: --window-stride-ms 20 contradicts the graph: AudioSpectrogram stride is "
            "160 samples, 10 ms at 16000 Hz",
        ),
        "a sample rate the graph contradicts": (
            freeze_graph(),
            ["--sample-rate", "8000"],
            f"kwsd: error: {where}: --sample-rate 8000 contradicts the graph: "
            "Mfcc's sample_rate input is 16000",
        ),
        "a front end the graph contradicts": (
            freeze_graph(),
            ["--frontend", "tf_average"],
            f"kwsd: error: {where}: --frontend tf_average contradicts the graph: "
            "its ops AudioSpectrogram + Mfcc are train.py's --preprocess=mfcc, kwsd's tf_mfcc",
        ),
        "a bin count the graph contradicts": (
            freeze_graph("average"),
            ["--feature-bin-count", "13"],
            f"kwsd: error: {where}: --feature-bin-count 13 contradicts the graph: "
            "it gives a pooling width of 19 bins, avg_pool ksize is 6",
        ),
        "not a graph at all": (
            b"\xff" * 64,
            [],
            f"kwsd: error: {where}: not a TensorFlow GraphDef "
            "(expected freeze.py's binary .pb; parse error: ",
        ),
    }


BAD_GRAPHS = [
    "no wav_data input",
    "no labels_softmax output",
    "an op kwsd cannot map",
    "a model that reads the audio itself",
    "labels that are too few",
    "a stride the graph contradicts",
    "a sample rate the graph contradicts",
    "a front end the graph contradicts",
    "a bin count the graph contradicts",
    "not a graph at all",
]


def test_bad_graph_cases_are_all_run(tmp_path):
    assert sorted(bad_graph_cases(tmp_path)) == sorted(BAD_GRAPHS)


@pytest.mark.parametrize("case", BAD_GRAPHS)
def test_a_bad_graph_gets_one_line_exit_67_and_nothing_written(tmp_path, capsys, case):
    graph, flags, line = bad_graph_cases(tmp_path)[case]
    code, out, err, bundle = run_import(tmp_path, graph, capsys, *flags)
    assert code == 67
    assert out == ""
    assert len(err.splitlines()) == 1
    if case == "not a graph at all":
        assert err.startswith(line)
    else:
        assert err.strip() == line
    assert not bundle.exists()


def test_without_tensorflow_a_pb_import_names_the_extra(tmp_path):
    pb = tmp_path / "model.pb"
    pb.write_bytes(b"\x0a\x00")
    code = (
        "import sys\n"
        "sys.modules['tensorflow'] = None\n"
        "from kwsd.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["model", "import", pb, "--labels", "a,b", "-o", tmp_path / "x.kwsd"]
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, check=False, timeout=120
    )
    assert result.returncode == 69
    assert result.stderr.decode().strip() == (
        "kwsd: error: importing a frozen graph (.pb) needs TensorFlow, which is not installed: "
        "pip install 'kwsd[train]' (the daemon itself never needs it)"
    )
    assert not (tmp_path / "x.kwsd").exists()


def flat_input_tflite(size, labels, seed=2, int8=False):
    """A .tflite as the course's conversion writes one: input [1, frames*bins], softmax out.

    ``int8``: full integer, input and output int8, as the course converts micro_speech.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 0.01, (size, labels)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, size], tf.float32)])
    def model(fingerprint):
        return tf.nn.softmax(tf.matmul(fingerprint, weights))

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(0, 26, (1, size)).astype(np.float32)] for _ in range(20)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the representative data gives them.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        return converter.convert()


def test_a_course_tflite_with_train_py_labels_file(tmp_path, capsys):
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(flat_input_tflite(98 * 40, len(LABELS)))
    labels = tmp_path / "conv_labels.txt"
    labels.write_text("".join(f"{label}\n" for label in LABELS))
    base = ["model", "import", str(tflite), "--labels-file", str(labels), "--frontend", "tf_mfcc"]
    capsys.readouterr()
    assert main([*base, "-o", str(tmp_path / "ok.kwsd")]) == 0
    out = capsys.readouterr().out
    assert f"labels {', '.join(LABELS)}, tf_mfcc 16000 Hz, 1000 ms clip, 30/10 ms" in out
    assert "input float32 [1,3920]" in out
    # A 20 ms stride makes 49x40 = 1960 features: this model takes 3920.
    assert main([*base, "--window-stride-ms", "20", "-o", str(tmp_path / "no.kwsd")]) == 67
    err = capsys.readouterr().err.strip()
    assert err == (
        f"kwsd: error: {tflite}: model.tflite expects input [1,3920] float32 but the bundle's front end "
        "(tf_mfcc 16000 Hz, 1000 ms clip, 30/20 ms window/stride (480/320 samples), 49x40 features) makes "
        "[49,40] (accepted model inputs: [1,49,40], [1,1960], [1,49,40,1]); "
        "--window-stride-ms 10 would make 98 frames of 40 (3920 values)"
    )
    assert not (tmp_path / "no.kwsd").exists()
    # An input size no front-end setting makes: 3921 values are no whole number of 40-value frames.
    odd = tmp_path / "odd.tflite"
    odd.write_bytes(flat_input_tflite(98 * 40 + 1, len(LABELS)))
    assert main(["model", "import", str(odd), *base[3:], "-o", str(tmp_path / "no.kwsd")]) == 67
    assert capsys.readouterr().err.strip() == (
        f"kwsd: error: {odd}: model.tflite expects input [1,3921] float32 but the bundle's front end "
        "(tf_mfcc 16000 Hz, 1000 ms clip, 30/10 ms window/stride (480/160 samples), 98x40 features) makes "
        "[98,40] (accepted model inputs: [1,98,40], [1,3920], [1,98,40,1]); 3921 input values are no whole "
        "number of frames of 40 features: check --frontend and --feature-bin-count"
    )
    assert not (tmp_path / "no.kwsd").exists()
    # The course's micro_speech conversion: int8, [1, 49 * 40], micro features at 30/20 ms.
    quantised = tmp_path / "micro_int8.tflite"
    quantised.write_bytes(flat_input_tflite(49 * 40, len(LABELS), int8=True))
    micro = ["model", "import", str(quantised), "--labels-file", str(labels), "--frontend", "micro"]
    assert main([*micro, "-o", str(tmp_path / "micro.kwsd")]) == 0
    out = capsys.readouterr().out
    assert "micro 16000 Hz, 1000 ms clip, 30/20 ms window/stride, 49x40 features" in out
    assert (
        "input int8 [1,1960] (scale " in out
        and "output int8 [1,12] (scale 0.00390625, zero point -128)" in out
    )
    # A .tflite does not say how its features were computed.
    assert main([*base[:-2], "-o", str(tmp_path / "no.kwsd")]) == 64
    assert capsys.readouterr().err.strip() == (
        "kwsd: error: --frontend: required for a .tflite, which does not say how its features were "
        "computed (a frozen graph .pb states its own)"
    )
    # --representative-dir is for a graph still to be converted.
    assert main([*base, "--representative-dir", str(tmp_path), "-o", str(tmp_path / "no.kwsd")]) == 64
    # A labels file one short of the model's output.
    labels.write_text("".join(f"{label}\n" for label in LABELS[:-1]))
    assert main([*base, "-o", str(tmp_path / "no.kwsd")]) == 67
    assert "model output [1,12] has 12 scores but the bundle has 11 labels" in capsys.readouterr().err
    assert not (tmp_path / "no.kwsd").exists()


def test_wav_bytes_as_label_wav_feeds_them():
    # The reference feeds whole files: our fixtures are plain 16-bit mono WAVs DecodeWav reads.
    with wave.open(io.BytesIO(SPEECH[0].read_bytes())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)


def test_a_large_representative_folder_is_sampled_evenly_and_said(tmp_path, capsys, monkeypatch):
    from kwsd import frozengraph

    monkeypatch.setattr(frozengraph, "REPRESENTATIVE_MAX_FILES", 2)
    folder = clip_folder(SPEECH, tmp_path / "calibration")
    code, out, err, _ = run_import(tmp_path, freeze_graph(), capsys, "--representative-dir", folder)
    assert (code, err) == (0, "")
    assert (
        f"note: converted to int8, calibrated on kwsd's features of 2 WAVs in {folder} (of 5, evenly spaced)"
    ) in out.splitlines()
    assert "note: int8 vs float32 on those 2 clips: top label the same on " in out


def test_the_command_prints_only_kwsd_s_lines(tmp_path):
    """TensorFlow's native notes (oneDNN, absl, MLIR) stay out of the terminal; kwsd's lines stay in."""
    pb = tmp_path / "model.pb"
    pb.write_bytes(freeze_graph())
    labels = tmp_path / "conv_labels.txt"
    labels.write_text("".join(f"{label}\n" for label in LABELS))
    args = ["model", "import", pb, "--labels-file", labels, "-o", tmp_path / "model.kwsd"]
    result = subprocess.run(
        [sys.executable, "-m", "kwsd", *map(str, args)], capture_output=True, check=False, timeout=300
    )
    assert (result.returncode, result.stderr.decode()) == (0, "")
    lines = result.stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "read from model.pb",
        "note",
        f"wrote {tmp_path}/model.kwsd",
    ]
