"""tools/benchmark_embedding.py: where it puts a clip, what a training copy holds, the synthetic
set's labels and its refusals. Behaviour only: the feature models it measures (openWakeWord's)
are not kwsd's to ship, so the measurement itself is the README's, not a test's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kwsd.audio import write_wav
from kwsd.labels import SILENCE_LABEL, UNKNOWN_LABEL
from kwsd_tools import benchmark_embedding as be

LABELS = (SILENCE_LABEL, UNKNOWN_LABEL, "yes", "no")


def test_a_clip_ends_where_it_is_placed_in_two_seconds_of_zeros():
    clip = np.linspace(0.1, 0.5, be.CLIP_SAMPLES)
    window = be.place(clip, 100.0)
    end = be.WINDOW_SAMPLES - 1600
    assert len(window) == be.WINDOW_SAMPLES
    assert np.array_equal(window[end - be.CLIP_SAMPLES : end], clip)
    assert not window[: end - be.CLIP_SAMPLES].any() and not window[end:].any()


def test_a_training_copy_is_the_same_for_a_seed_and_its_noise_is_at_the_drawn_snr():
    rng = np.random.default_rng(0)
    clip = 0.3 * np.sin(np.arange(be.CLIP_SAMPLES) * 0.05)
    noise = [rng.normal(0, 0.1, 5 * be.RATE_HZ)]
    first = be.training_window(clip, 0, np.random.default_rng(7), noise)
    assert np.array_equal(first, be.training_window(clip, 0, np.random.default_rng(7), noise))
    # The first copy is clean: the clip alone, somewhere in the last 200 ms.
    assert np.count_nonzero(first) == np.count_nonzero(clip)
    for seed in range(40):
        again = np.random.default_rng(seed)
        copy = be.training_window(clip, 1, np.random.default_rng(seed), noise)
        end_ms = again.uniform(*be.TRAIN_END_MS)
        gain = 10 ** (again.uniform(*be.GAIN_DB) / 20)
        placed = be.place(clip, end_ms) * gain
        if again.uniform() >= be.NOISE_PROBABILITY:
            assert np.allclose(copy, placed)
            continue
        snr_db = again.uniform(*be.SNR_DB)
        added = copy - placed
        measured = 10 * math.log10(np.mean(clip**2) / np.mean(added**2))
        assert abs(measured - snr_db) < 0.01
        assert be.GAIN_DB[0] <= 20 * math.log10(gain) <= be.GAIN_DB[1]


def test_other_words_are_unknown_and_silence_gets_as_many_items_as_a_word(tmp_path):
    for word, count in (("yes", 3), ("no", 5), ("bird", 4), ("_background_noise_", 1)):
        (tmp_path / word).mkdir()
        for i in range(count):
            write_wav(tmp_path / word / f"v{i}_nohash_0.wav", np.full(800, 1000 * (i + 1), np.int16), 16000)
    clips = be.synthetic_clips(tmp_path, LABELS)
    names = [LABELS[i] for i in clips.labels]
    assert names.count("yes") == 3 and names.count("no") == 5
    assert names.count(UNKNOWN_LABEL) == 4  # bird; the noise folder is not a word
    assert names.count(SILENCE_LABEL) == 4  # ceil(8 keyword clips / 2 words)
    assert all(c is None for c, n in zip(clips.clips, names, strict=True) if n == SILENCE_LABEL)
    assert len(be.generated_noise(tmp_path)) == 1


@pytest.mark.parametrize(
    ("flags", "code", "named"),
    [
        (["--feature_models", "{missing}"], 66, "--feature_models"),
        (["--feature_models", "{empty}"], 66, "melspectrogram.tflite"),
        (["--feature_models", "{models}", "--seeds", "a,b"], 64, "--seeds"),
        (["--feature_models", "{models}", "--epochs", "0"], 64, "--epochs"),
    ],
)
def test_bad_input_is_refused_naming_it_before_any_work(tmp_path, capsys, flags, code, named):
    (tmp_path / "empty").mkdir()
    (tmp_path / "models").mkdir()
    for name in be.FEATURE_MODELS:
        (tmp_path / "models" / name).write_bytes(b"")
    places = {key: str(tmp_path / key) for key in ("missing", "empty", "models")}
    work = tmp_path / "work"
    argv = [f.format(**places) for f in flags]
    argv += ["--real_dir", str(tmp_path / "no-real"), "--work_dir", str(work)]
    assert be.main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("benchmark_embedding: error: ") and named in err and "Traceback" not in err
    assert not work.exists()


def test_a_missing_real_folder_is_refused(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    for name in be.FEATURE_MODELS:
        (models / name).write_bytes(b"")
    argv = [
        "--feature_models",
        str(models),
        "--real_dir",
        str(tmp_path / "nowhere"),
        "--work_dir",
        str(tmp_path / "w"),
    ]
    assert be.main(argv) == 66
    assert "--real_dir" in capsys.readouterr().err
    assert not Path(tmp_path / "w").exists()
