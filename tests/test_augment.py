"""Robustness augmentation and several data sources (tools/kwsd_tools/training/augment.py, features.py,
sources.py, tools/train.py's flags): each transform does what it says, seeded; bad inputs are
refused with one line and their exit code; the per-source report appears everywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kwsd_tools.training import augment
from kwsd_tools.training.augment import AugmentError, SpecAugment
from kwsd_tools.training.dataset import DatasetSettings, load_dataset
from kwsd_tools.training.features import Augmentation, make_recipe, partition_features, render
from kwsd_tools.training.sources import DataSource, batch_shares, parse_data_sources, pooled_features
from kwsd_tools.training.trainer import (
    TrainingError,
    accuracy_breakdown,
    breakdown_metrics,
    breakdown_text,
)
from tests.training_tools import missing_training_tools
from tests.wavgen import as_int16, sine, write_wav

RATE = 16000
NYQUIST = RATE / 2


def power_db(x: np.ndarray) -> float:
    return 10 * float(np.log10(np.mean(x**2)))


def band_energy(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum())


def peak_hz(x: np.ndarray) -> float:
    return float(np.fft.rfftfreq(len(x), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(x)))])


# --- the transforms ---------------------------------------------------------------------------


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_noise_is_mixed_at_the_requested_snr(snr_db: float) -> None:
    rng = np.random.default_rng(1)
    clip = sine(300, 1.0, RATE, 0.2) * np.hanning(RATE)
    noise = rng.standard_normal(RATE) * 0.05
    mixed = augment.mix_at_snr(clip, noise, snr_db)
    measured = power_db(clip) - power_db(mixed - clip)
    assert measured == pytest.approx(snr_db, abs=1e-6)
    # Nothing to measure an SNR against: the clip comes back unchanged.
    silent = np.zeros(RATE)
    np.testing.assert_array_equal(augment.mix_at_snr(silent, noise, snr_db), silent)


@pytest.mark.parametrize("rt60_ms", [200.0, 500.0, 900.0])
def test_a_simulated_room_decays_in_the_requested_time(rt60_ms: float) -> None:
    rir = augment.simulated_rir(rt60_ms, RATE, np.random.default_rng(7))
    assert rir[0] == 1.0  # the direct path first: the word is not delayed
    assert augment.decay_time_ms(rir, RATE) == pytest.approx(rt60_ms, rel=0.1)


def test_reverberation_lengthens_the_decay_and_keeps_the_level() -> None:
    burst = np.zeros(RATE)
    burst[2000:4000] = sine(500, 0.125, RATE, 0.3)
    rir = augment.simulated_rir(600.0, RATE, np.random.default_rng(3))
    wet = augment.reverberate(burst, rir)
    assert len(wet) == RATE
    assert power_db(wet) == pytest.approx(power_db(burst), abs=1e-9)
    after = slice(4800, 8000)  # 50-250 ms after the burst ended
    assert np.all(burst[after] == 0)
    assert power_db(wet[after]) > power_db(wet[2000:4000]) - 40  # a tail within 40 dB of the burst


def test_band_limiting_removes_energy_outside_the_band() -> None:
    noise = np.random.default_rng(2).standard_normal(RATE) * 0.1
    out = augment.band_limit(noise, 250.0, 3500.0, RATE)
    # Well past the corners: the order-4 low-pass is 40 dB down an octave and a half above.
    assert band_energy(out, 7000, NYQUIST) < band_energy(noise, 7000, NYQUIST) * 1e-4
    assert band_energy(out, 0, 60) < band_energy(noise, 0, 60) * 0.1
    # The middle of the band passes within half a dB.
    assert 10 * np.log10(band_energy(out, 800, 2000) / band_energy(noise, 800, 2000)) == pytest.approx(
        0, abs=0.5
    )


def test_gain_scales_and_clips_at_full_scale() -> None:
    tone = sine(440, 0.1, RATE, 0.25)
    np.testing.assert_allclose(augment.apply_gain(tone, -6.0), tone * 10 ** (-6 / 20))
    loud = augment.apply_gain(tone, 20.0)
    assert loud.max() == 1.0 and loud.min() == -1.0


def test_speed_moves_pitch_and_tempo_and_keeps_the_length() -> None:
    tone = sine(400, 1.0, RATE, 0.3)
    faster = augment.change_speed(tone, 1.25, RATE)
    assert len(faster) == RATE
    assert peak_hz(faster) == pytest.approx(500, abs=2)


def test_pitch_moves_pitch_and_keeps_the_length_and_the_timing() -> None:
    tone = sine(220, 1.0, RATE, 0.3)
    higher = augment.shift_pitch(tone, 3.0, RATE)
    assert len(higher) == RATE
    assert peak_hz(higher) == pytest.approx(220 * 2 ** (3 / 12), abs=2)
    burst = np.zeros(RATE)
    burst[6000:10000] = sine(220, 0.25, RATE, 0.3)
    shifted = augment.shift_pitch(burst, -2.0, RATE)
    loud = np.flatnonzero(np.abs(shifted) > 0.05)
    assert abs(loud[0] - 6000) < 0.02 * RATE and abs(loud[-1] - 10000) < 0.02 * RATE


def test_masks_set_the_stated_frames_and_features_to_the_fill_value() -> None:
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((8, 49, 13)).astype(np.float32) + 5.0
    original = batch.copy()
    fill = np.arange(13, dtype=np.float32) * -1.0
    one_frame = SpecAugment(time_masks=1, time_mask_frames=1).apply(batch, fill, np.random.default_rng(1))
    for i in range(8):
        masked = np.flatnonzero(np.all(one_frame[i] == fill, axis=1))
        assert len(masked) == 1
        np.testing.assert_array_equal(np.delete(one_frame[i], masked, axis=0), np.delete(batch[i], masked, 0))
    two_bins = SpecAugment(freq_masks=1, freq_mask_bins=1).apply(batch, fill, np.random.default_rng(1))
    for i in range(8):
        masked = np.flatnonzero(np.all(two_bins[i] == fill, axis=0))
        assert len(masked) == 1
    wide = SpecAugment(time_masks=1, time_mask_frames=6).apply(batch, fill, np.random.default_rng(2))
    for i in range(8):
        masked = np.flatnonzero(np.all(wide[i] == fill, axis=1))
        assert 1 <= len(masked) <= 6 and np.all(np.diff(masked) == 1)  # one contiguous run
    np.testing.assert_array_equal(batch, original)  # the pool itself is never masked
    masks = SpecAugment(time_masks=2, time_mask_frames=5, freq_masks=1, freq_mask_bins=2)
    same = [masks.apply(batch, fill, np.random.default_rng(9)) for _ in range(2)]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], masks.apply(batch, fill, np.random.default_rng(10)))


# --- recipes, rendering and seeds ---------------------------------------------------------------


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """yes/no/up clips of tones from 8 'speakers', and 3 s of noise."""
    rng = np.random.default_rng(5)
    for word, hz in (("yes", 300), ("no", 500), ("up", 700)):
        (tmp_path / word).mkdir()
        for k in range(8):
            clip = sine(hz + 10 * k, 0.6, RATE, 0.3)
            write_wav(
                tmp_path / word / f"spk{k:03d}_nohash_0.wav", as_int16(np.pad(clip, (3200, 3200))), RATE
            )
    (tmp_path / "_background_noise_").mkdir()
    write_wav(
        tmp_path / "_background_noise_" / "white.wav", as_int16(rng.standard_normal(3 * RATE) * 0.1), RATE
    )
    return tmp_path


SETTINGS = DatasetSettings(wanted_words=("yes", "no"), validation_percentage=20, testing_percentage=20)
EVERYTHING = Augmentation(
    reverb_probability=1.0,
    simulated_rir_count=4,
    noise_probability=1.0,
    gain_db_range=(-6.0, 6.0),
    speed_range=(0.9, 1.1),
    pitch_semitones_range=(-2.0, 2.0),
    bandlimit_probability=1.0,
)


def _assets(augmentation: Augmentation, seed: int = 1) -> augment.AugmentAssets:
    return augment.make_assets(
        sample_rate_hz=RATE,
        clip_samples=RATE,
        seed=seed,
        simulated_rir_count=augmentation.simulated_rir_count,
        rt60_ms_range=augmentation.rt60_ms_range,
    )


def _recipes(data: Path, augmentation: Augmentation, seed: int) -> tuple[list, list[np.ndarray]]:
    dataset = load_dataset(data, SETTINGS, seed=1)
    assets = _assets(augmentation)
    rng = np.random.default_rng(seed)
    items = dataset.items["training"]
    recipes = [
        make_recipe(
            item, dataset.label_index(item.label), dataset, augmentation, rng, augment=True, assets=assets
        )
        for item in items
    ]
    return recipes, [render(r, dataset, RATE, assets) for r in recipes]


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(tiny_data: Path) -> None:
    first, audio_1 = _recipes(tiny_data, EVERYTHING, seed=4)
    again, audio_2 = _recipes(tiny_data, EVERYTHING, seed=4)
    other, audio_3 = _recipes(tiny_data, EVERYTHING, seed=5)
    assert first == again
    for a, b in zip(audio_1, audio_2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first != other
    assert any(not np.array_equal(a, b) for a, b in zip(audio_1, audio_3, strict=True))
    speech = [r for r in first if r.path is not None]
    assert speech and all(r.rir >= 0 and r.snr_noise == "_background_noise_/white.wav" for r in speech)
    assert all(r.noise_volume == 0.0 for r in speech)  # the SNR mix replaces train.py's, not on top
    assert all(0.9 <= r.speed <= 1.1 and -2 <= r.pitch_semitones <= 2 for r in speech)
    assert all(100 <= r.highpass_hz <= 300 and 3000 <= r.lowpass_hz <= 7000 for r in first)
    silence = [r for r in first if r.path is None]
    assert silence and all(r.rir == -1 and r.speed == 1.0 and r.snr_noise is None for r in silence)


def test_with_the_new_flags_off_recipes_are_train_py_s(tiny_data: Path) -> None:
    reference = Augmentation(0.1, 0.8, 100)
    recipes, audio = _recipes(tiny_data, reference, seed=4)
    dataset = load_dataset(tiny_data, SETTINGS, seed=1)
    for recipe, rendered in zip(recipes, audio, strict=True):
        assert (recipe.speed, recipe.pitch_semitones, recipe.rir, recipe.snr_noise, recipe.gain_db) == (
            1.0,
            0.0,
            -1,
            None,
            0.0,
        )
        assert (recipe.highpass_hz, recipe.lowpass_hz) == (0.0, 0.0)
        # train.py's formula by hand: clip(shift(clip) + noise * volume, -1, 1).
        clip = np.zeros(RATE) if recipe.path is None else dataset.clip(recipe.path)
        clip = np.roll(np.pad(clip, (RATE, RATE)), recipe.shift_samples)[RATE:-RATE]
        if recipe.noise is not None:
            noise = dataset.noise[recipe.noise][recipe.noise_offset : recipe.noise_offset + RATE]
            clip = np.clip(clip + noise * recipe.noise_volume, -1, 1)
        np.testing.assert_array_equal(rendered, as_int16(clip))


def test_the_feature_cache_key_follows_the_augmentation(tiny_data: Path, tmp_path: Path) -> None:
    from kwsd.frontend import FrontendKind, FrontendSpec

    spec = FrontendSpec(FrontendKind.MFCC, window_stride_ms=20)
    dataset = load_dataset(tiny_data, SETTINGS, seed=1)
    cache = tmp_path / "cache"
    common = {"copies": 1, "seed": 3, "cache_dir": cache, "workers": 1}
    partition_features(dataset, spec, "training", augmentation=Augmentation(), **common)
    partition_features(
        dataset, spec, "training", augmentation=EVERYTHING, assets=_assets(EVERYTHING), **common
    )
    partition_features(
        dataset, spec, "training", augmentation=EVERYTHING, assets=_assets(EVERYTHING, seed=2), **common
    )
    assert len(list(cache.glob("training-*.npz"))) == 3


# --- the user's folders ---------------------------------------------------------------------


def test_impulse_responses_at_another_rate_or_stereo_are_refused_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "rirs"
    folder.mkdir()
    decay = np.exp(-np.arange(4000) / 400.0) * 0.5
    write_wav(folder / "hall.wav", as_int16(decay), RATE)
    loaded = augment.load_rir_folder(folder, RATE)
    assert list(loaded) == ["hall.wav"] and loaded["hall.wav"][0] == 1.0
    write_wav(folder / "z44k.wav", as_int16(decay), 44100)
    with pytest.raises(AugmentError) as err:
        augment.load_rir_folder(folder, RATE)
    assert str(err.value) == (
        f"--rir_dir {folder / 'z44k.wav'}: 44100 Hz, 1 channel, pcm16, expected mono at 16000 Hz "
        f"(--sample_rate); convert it: sox {folder / 'z44k.wav'} -c 1 -r 16000 OUT.wav"
    )
    (folder / "z44k.wav").unlink()
    write_wav(folder / "stereo.wav", as_int16(np.stack([decay, decay], axis=1)), RATE)
    with pytest.raises(AugmentError, match=r"stereo\.wav: 16000 Hz, 2 channels, pcm16, expected mono"):
        augment.load_rir_folder(folder, RATE)


def test_a_noise_folder_with_nothing_usable_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "noise"
    folder.mkdir()
    (folder / "notes.txt").write_text("no audio here")
    with pytest.raises(AugmentError) as err:
        augment.load_noise_folder(folder, RATE, RATE)
    assert str(err.value) == (
        f"--noise_dir {folder}: no usable noise in it (expected .wav recordings of at least one clip)"
    )
    write_wav(folder / "short.wav", as_int16(np.full(800, 0.1)), RATE)
    with pytest.raises(AugmentError) as err:
        augment.load_noise_folder(folder, RATE, RATE)
    assert (
        str(err.value)
        == f"--noise_dir {folder / 'short.wav'}: 50 ms of noise, shorter than one clip (1000 ms)"
    )
    with pytest.raises(AugmentError, match="no such folder"):
        augment.load_noise_folder(tmp_path / "missing", RATE, RATE)


# --- tools/train.py: flags and their errors --------------------------------------------------


#: train.py sends TensorFlow's native output to <train_dir>/tensorflow.log from its start.
NOTHING_BUT_TENSORFLOW_LOG = ["train/tensorflow.log"]


def written(work: Path) -> list[str]:
    """Every file under ``work``, relative, sorted."""
    return sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())


def _train_main(tmp_path: Path, data: Path, *flags: str) -> int:
    from kwsd_tools.train import main

    return main(
        [
            "--data_url=http://127.0.0.1:9/never-downloaded.tar.gz",
            f"--data_dir={data}",
            f"--train_dir={tmp_path / 'train'}",
            f"--summaries_dir={tmp_path / 'logs'}",
            f"--model_dir={tmp_path / 'model'}",
            "--wanted_words=yes,no",
            *flags,
        ]
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (
            "--snr_db_range=20,0",
            "--snr_db_range: the range is upside down ('20,0'; expected LOW,HIGH with LOW <= HIGH)",
        ),
        ("--reverb_probability=1.5", "--reverb_probability: expected a probability from 0 to 1, got 1.5"),
        ("--gain_db_range=loud", "--gain_db_range: expected two numbers LOW,HIGH, got 'loud'"),
        ("--lowpass_hz_range=3000,9000", "--lowpass_hz_range: expected values in 0..8000, got '3000,9000'"),
        ("--time_masks=-1", "--time_masks: expected 0 or more, got -1"),
        ("--data_dir=extra=/x:-1", "--data_dir extra=/x:-1: the weight must be a number >= 0, got '-1'"),
    ],
)
def test_bad_augmentation_flags_are_one_line_and_exit_64_before_anything_is_written(
    tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    work = tmp_path / "run"
    assert _train_main(work, tiny_data, flag) == 64
    assert capsys.readouterr().err.splitlines() == [f"train: error: {message}"]
    assert written(work) == NOTHING_BUT_TENSORFLOW_LOG  # no feature cache, checkpoint or download


def test_one_value_is_a_fixed_setting_and_the_switch_turns_everything_off() -> None:
    from kwsd_tools.train import augmentation_from_args, build_parser

    augmentation, masks = augmentation_from_args(build_parser().parse_args(["--speed_range=0.9"]))
    assert augmentation.speed_range == (0.9, 0.9)
    assert masks == SpecAugment(2, 5, 1, 2)
    augmentation, masks = augmentation_from_args(build_parser().parse_args(["--no_robust_augmentation"]))
    assert augmentation == Augmentation(0.1, 0.8, 100)
    assert not masks.active


def test_unusable_folders_exit_65_naming_the_flag_and_file_before_anything_is_written(
    tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rirs = tmp_path / "rirs"
    rirs.mkdir()
    write_wav(rirs / "church.wav", as_int16(np.stack([np.ones(100), np.ones(100)], axis=1) * 0.5), 48000)
    work = tmp_path / "run"
    assert _train_main(work, tiny_data, f"--rir_dir={rirs}") == 65
    assert capsys.readouterr().err.splitlines() == [
        f"train: error: --rir_dir {rirs / 'church.wav'}: 48000 Hz, 2 channels, pcm16, expected mono at "
        f"16000 Hz (--sample_rate); convert it: sox {rirs / 'church.wav'} -c 1 -r 16000 OUT.wav"
    ]
    empty = tmp_path / "empty_noise"
    empty.mkdir()
    assert _train_main(work, tiny_data, f"--noise_dir={empty}") == 65
    assert capsys.readouterr().err.splitlines() == [
        f"train: error: --noise_dir {empty}: no usable noise in it "
        "(expected .wav recordings of at least one clip)"
    ]
    assert written(work) == NOTHING_BUT_TENSORFLOW_LOG  # no feature cache, checkpoint or download


# --- several sources ----------------------------------------------------------------------------


def test_data_dir_syntax_keeps_a_plain_folder_and_names_weighted_sources(tmp_path: Path) -> None:
    assert parse_data_sources("/tmp/speech_dataset/") == [
        DataSource("speech_dataset", Path("/tmp/speech_dataset"))
    ]
    assert parse_data_sources(["real=/a:2.0,synth=/b:1"]) == [
        DataSource("real", Path("/a"), 2.0),
        DataSource("synth", Path("/b"), 1.0),
    ]
    assert parse_data_sources(["me=/rec:3", "/x/odd=name"]) == [
        DataSource("me", Path("/rec"), 3.0),
        DataSource("odd=name", Path("/x/odd=name"), 1.0),
    ]
    assert parse_data_sources(["real=/r:0", "synth=/s"])[0] == DataSource("real", Path("/r"), 0.0)
    with pytest.raises(TrainingError) as err:
        parse_data_sources(["real=/r:0"])
    assert str(err.value) == "--data_dir: every source has weight 0 (evaluation only): nothing to train on"
    with pytest.raises(
        TrainingError, match=r"^--data_dir: two sources named 'd'; name each one: NAME=DIR\[:WEIGHT\]$"
    ):
        parse_data_sources(["/one/d", "/two/d"])


def test_pooled_features_carry_sources_and_weights(tiny_data: Path, tmp_path: Path) -> None:
    from kwsd.frontend import FrontendKind, FrontendSpec

    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    sources = [DataSource("a", tiny_data, 3.0), DataSource("b", other, 1.0)]
    spec = FrontendSpec(FrontendKind.MFCC, window_stride_ms=20)
    datasets = [load_dataset(s.data_dir, SETTINGS, seed=1) for s in sources]
    common = {"augmentation": Augmentation(), "copies": 2, "seed": 1, "cache_dir": None, "workers": 1}
    training = pooled_features(datasets, sources, spec, "training", **common)
    testing = pooled_features(datasets, sources, spec, "testing", **common)
    n = len(training) // 2
    assert training.source_names == ("a", "b")
    np.testing.assert_array_equal(training.source, [0] * n + [1] * n)
    np.testing.assert_array_equal(training.weight, [3.0] * n + [1.0] * n)
    assert batch_shares(training) == {"a": 0.75, "b": 0.25}
    assert testing.weight is None and testing.source_names == ("a", "b")


def test_the_breakdown_counts_per_source_and_word() -> None:
    labels = ["_silence_", "_unknown_", "yes", "no"]
    truth = [2, 2, 3, 0, 2, 3]
    predicted = [2, 3, 3, 0, 2, 2]
    source = [0, 0, 0, 0, 1, 1]
    breakdown = accuracy_breakdown(truth, predicted, labels, source, ("real", "synth"))
    assert breakdown == {
        "real": {"all": (3, 4), "_silence_": (1, 1), "_unknown_": (0, 0), "yes": (1, 2), "no": (1, 1)},
        "synth": {"all": (1, 2), "_silence_": (0, 0), "_unknown_": (0, 0), "yes": (1, 1), "no": (0, 1)},
    }
    assert breakdown_metrics(breakdown)["synth"] == {
        "accuracy": 0.5,
        "count": 2,
        "words": {"yes": {"accuracy": 1.0, "count": 1}, "no": {"accuracy": 0.0, "count": 1}},
    }
    lines = breakdown_text(breakdown, labels, "Final test accuracy").splitlines()
    assert lines[0] == "Final test accuracy by source and word (%, count):"
    assert lines[1].split() == ["source", "all", "_silence_", "_unknown_", "yes", "no"]
    assert lines[2].split() == ["real", "75.0", "(4)", "100.0", "(1)", "-", "50.0", "(2)", "100.0", "(1)"]
    assert lines[3].split() == ["synth", "50.0", "(2)", "-", "-", "100.0", "(1)", "0.0", "(1)"]


@pytest.mark.skipif(missing_training_tools() is not None, reason=str(missing_training_tools()))
def test_two_sources_train_and_report_per_source_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tensorflow as tf

    from kwsd.bundle import read_bundle
    from kwsd_tools.synth import synthesise
    from kwsd_tools.train import main

    synth = tmp_path / "synth"
    synthesise(synth, ["yes", "no"], ["up", "down"], voice_count=30, repetitions=1, seed=3)
    mine = tmp_path / "mine"
    shutil.copytree(synth, mine)
    code = main(
        [
            "--data_url=",
            f"--data_dir=mine={mine}:2",
            f"--data_dir=synth={synth}",
            "--wanted_words=yes,no",
            "--how_many_training_steps=4",
            "--learning_rate=0.01",
            "--model_architecture=tiny_conv",
            "--window_stride_ms=20",
            "--feature_bin_count=13",
            "--batch_size=8",
            "--eval_step_interval=4",
            "--save_step_interval=4",
            "--augment_copies=1",
            "--workers=1",
            "--representative_count=10",
            "--simulated_rir_count=2",
            f"--train_dir={tmp_path / 'train'}",
            f"--summaries_dir={tmp_path / 'logs'}",
            f"--model_dir={tmp_path / 'model'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()
    assert "sources: share of training batches mine 66.7%, synth 33.3%" in lines
    for title in ("Step 4: Validation accuracy", "Final test accuracy"):
        at = lines.index(f"{title} by source and word (%, count):")
        assert lines[at + 1].split() == ["source", "all", "_silence_", "_unknown_", "yes", "no"]
        assert [lines[at + 2].split()[0], lines[at + 3].split()[0]] == ["mine", "synth"]
    events = next((tmp_path / "logs" / "validation").glob("events.out.tfevents.*"))
    tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events)) for v in e.summary.value}
    assert {"accuracy_by_source/mine", "accuracy_by_source/synth", "accuracy_by_word/mine/yes"} <= tags
    bundle = read_bundle(tmp_path / "model" / "tiny_conv.kwsd")
    by_source = bundle.metrics["test_by_source"]
    assert sorted(by_source) == ["mine", "synth"]
    assert sum(s["count"] for s in by_source.values()) == bundle.metrics["test_count"]
    assert set(by_source["mine"]["words"]) <= {"_silence_", "_unknown_", "yes", "no"}
    assert sorted(bundle.metrics["keras_validation_by_source"]) == ["mine", "synth"]
    assert sorted(bundle.provenance["dataset"]["sources"]) == ["mine", "synth"]
    record = json.loads((tmp_path / "train" / "tiny_conv.ckpt-4.json").read_text())
    assert [s["name"] for s in record["data"]["sources"]] == ["mine", "synth"]
    assert record["data"]["augmentation"]["reverb_probability"] == 0.3
