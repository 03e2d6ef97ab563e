"""tools/make_stream.py: TensorFlow's generate_streaming_test_wav, on a data set made here."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from kwsd.audio import read_wav, write_wav
from kwsd.evaluate import parse_truth
from kwsd.labels import UNKNOWN_LABEL
from kwsd_tools import make_stream

RATE = 16000
#: Each folder's clips are a tone of its own frequency (Hz), so a clip can be recognised.
TONES = {"yes": 300, "no": 500, "up": 700, "down": 900}


def _tone(freq_hz: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(RATE) / RATE
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Speakers s0, s1 in the test partition, s2 in validation, s3 training (by the lists)."""
    root = tmp_path_factory.mktemp("stream_data")
    testing, validation = [], []
    for word, freq in TONES.items():
        (root / word).mkdir()
        for speaker in range(4):
            for rep in range(2):
                name = f"{word}/s{speaker}_nohash_{rep}.wav"
                # The training speaker's clips are louder: a clip from it would show.
                amplitude = 0.9 if speaker == 3 else 0.5
                write_wav(root / name, np.rint(_tone(freq, amplitude) * 32767).astype(np.int16), RATE)
                if speaker < 2:
                    testing.append(name)
                elif speaker == 2:
                    validation.append(name)
    (root / "testing_list.txt").write_text("\n".join(testing) + "\n")
    (root / "validation_list.txt").write_text("\n".join(validation) + "\n")
    noise = root / "_background_noise_"
    noise.mkdir()
    rng = np.random.default_rng(0)
    write_wav(noise / "white.wav", np.rint(rng.uniform(-0.5, 0.5, 5 * RATE) * 32767).astype(np.int16), RATE)
    return root


def _settings(**kw: object) -> make_stream.StreamSettings:
    return make_stream.StreamSettings(**kw)  # type: ignore[arg-type]


def test_words_sit_in_their_slots_with_the_reference_timing(data_dir: Path) -> None:
    settings = _settings(duration_s=300.0, background_volume=0.0)
    stream = make_stream.generate(data_dir, ["yes", "no"], settings, seed=1)
    assert len(stream.audio) == 300 * RATE
    assert len(stream.words) == 100  # floor(300 s / 3 s)
    for k, word in enumerate(stream.words):
        start_ms = word.start_ms(RATE)
        assert 3000 * k <= start_ms < 3000 * k + 2000
        # Mixed at full volume, 500-sample ramps: the middle of the clip is the clip itself.
        tone = _tone(TONES[word.path.split("/")[0]])
        middle = stream.audio[word.start_sample + 500 : word.start_sample + RATE - 500] / 32768
        assert np.max(np.abs(middle - tone[500 : RATE - 500])) < 1e-3
        # Only test-partition speakers (s0, s1).
        assert re.fullmatch(r"[a-z]+/s[01]_nohash_[01]\.wav", word.path)
        expected = UNKNOWN_LABEL if word.path.split("/")[0] in ("up", "down") else word.path.split("/")[0]
        assert word.label == expected
    # Nothing but the words: no noise at volume 0.
    first = stream.words[0].start_sample
    assert not stream.audio[:first].any()


def test_about_thirty_percent_are_unknown_words(data_dir: Path) -> None:
    stream = make_stream.generate(data_dir, ["yes", "no"], _settings(background_volume=0.0), seed=2)
    labels = [w.label for w in stream.words]
    assert len(labels) == 200
    share = labels.count(UNKNOWN_LABEL) / len(labels)
    assert 0.2 <= share <= 0.4  # binomial(200, 0.3): 5 standard deviations either side
    assert {"yes", "no"} <= set(labels)
    none = make_stream.generate(
        data_dir, ["yes", "no"], _settings(duration_s=60.0, unknown_percentage=0.0), seed=2
    )
    assert UNKNOWN_LABEL not in {w.label for w in none.words}


def test_the_same_seed_gives_the_same_stream(data_dir: Path) -> None:
    settings = _settings(duration_s=30.0)
    a = make_stream.generate(data_dir, ["yes", "no"], settings, seed=7)
    b = make_stream.generate(data_dir, ["yes", "no"], settings, seed=7)
    c = make_stream.generate(data_dir, ["yes", "no"], settings, seed=8)
    assert np.array_equal(a.audio, b.audio) and a.words == b.words
    assert not np.array_equal(a.audio, c.audio)


def test_noise_volume_and_snr(data_dir: Path) -> None:
    quiet = make_stream.generate(data_dir, ["yes"], _settings(duration_s=30.0, word_gap_ms=2000), seed=3)
    first = quiet.words[0].start_sample
    # Uniform white noise of amplitude 0.5 at volumes below 0.1; segments overlap for 500 ms
    # (the reference's 1.5 s segments every 1 s), where two add up: peaks below 0.1.
    assert 0.01 * 32768 < np.abs(quiet.audio[:first]).max() <= 0.1 * 32768
    snr = make_stream.generate(data_dir, ["yes", "no"], _settings(duration_s=60.0, snr_db=10.0), seed=3)
    for word in snr.words:
        clip = np.zeros(RATE)
        tone = _tone(TONES[word.path.split("/")[0]])
        make_stream.mix_in(clip, 0, tone, 0, RATE, volume=1.0, ramp_in=500, ramp_out=500)
        mixed = snr.audio[word.start_sample : word.start_sample + RATE] / 32768
        noise = mixed - clip
        measured = 10 * math.log10(np.mean(clip**2) / np.mean(noise**2))
        assert measured == pytest.approx(10.0, abs=0.05)


def test_background_only_is_noise_with_an_empty_truth(data_dir: Path, tmp_path: Path) -> None:
    wav, txt = tmp_path / "noise.wav", tmp_path / "noise.txt"
    code = make_stream.main(
        [
            "--data_dir",
            str(data_dir),
            "--wanted_words",
            "yes,no",
            "--output_audio_file",
            str(wav),
            "--background_only",
            "--duration_s",
            "20",
        ]
    )
    assert code == 0
    assert txt.read_text() == ""
    audio = read_wav(wav, RATE)
    assert len(audio) == 20 * RATE and np.abs(audio).max() > 0


def test_command_line_writes_the_reference_truth_format(data_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "s.wav"
    args = ["--data_dir", str(data_dir), "--wanted_words", "yes,no", "--output_audio_file", str(wav)]
    assert make_stream.main([*args, "--duration_s", "30", "--seed", "5"]) == 0
    lines = (tmp_path / "s.txt").read_text().splitlines()
    assert len(lines) == 10
    for line in lines:
        assert re.fullmatch(r"(yes|no|_unknown_), \d+\.\d{6}", line), line
    truth = parse_truth("\n".join(lines))
    assert [w.label for w in truth.words] == [line.split(",")[0] for line in lines]
    assert len(read_wav(wav, RATE)) == 30 * RATE


def test_bad_requests_are_refused(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = str(tmp_path / "x.wav")
    base = ["--data_dir", str(data_dir), "--output_audio_file", wav]
    assert make_stream.main([*base, "--wanted_words", "yes,left"]) == 1
    assert "the testing partition has no clips of left" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        make_stream.main([*base, "--wanted_words", "yes", "--background_only", "--snr_db", "5"])
    assert exit_info.value.code == 2
    assert "--snr_db: needs words" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        make_stream.main([*base, "--unknown_percentage", "120"])


def test_a_sequence_scripts_the_words_and_their_order(data_dir: Path, tmp_path: Path) -> None:
    wav = tmp_path / "s.wav"
    args = ["--data_dir", str(data_dir), "--wanted_words", "yes,no", "--output_audio_file", str(wav)]
    assert make_stream.main([*args, "--duration_s", "30", "--sequence", "no,_unknown_,yes"]) == 0
    labels = [w.label for w in parse_truth((tmp_path / "s.txt").read_text()).words]
    assert labels == ["no", "_unknown_", "yes"] * 3 + ["no"]


def test_a_sequence_of_unwanted_words_is_refused(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--data_dir",
        str(data_dir),
        "--wanted_words",
        "yes,no",
        "--output_audio_file",
        str(tmp_path / "s.wav"),
    ]
    with pytest.raises(SystemExit) as exit_info:
        make_stream.main([*args, "--sequence", "yes,maybe"])
    assert exit_info.value.code == 2
    assert "--sequence: maybe is neither a --wanted_words word nor _unknown_" in capsys.readouterr().err
    assert not (tmp_path / "s.wav").exists()
