"""kwsd.wordfinder: the one word finder ``kwsd record`` and the slicer share.

(The slicer's own cases, merging, hysteresis and the drop reasons, are in test_slice.py.)
"""

from __future__ import annotations

import math

import numpy as np

from kwsd.record import cut_word
from kwsd.wordfinder import WordSettings, find_words

RATE = 16000


def word_with_a_long_faint_tail(seed: int = 0) -> tuple[np.ndarray, int, int]:
    """2.5 s: quiet room, a 300 ms "word", then 1.2 s of its tail 40 dB down; and where the word is."""
    rng = np.random.default_rng(seed)
    take = rng.normal(0, 3, int(2.5 * RATE))  # about -80 dBFS: a quiet room
    start, end = int(0.5 * RATE), int(0.8 * RATE)
    t = np.arange(end - start) / RATE
    take[start:end] += 8000 * np.sin(2 * math.pi * 300 * t)
    take[end : end + int(1.2 * RATE)] += rng.normal(0, 80, int(1.2 * RATE))  # 40 dB below the word
    return np.clip(np.rint(take), -32768, 32767).astype(np.int16), start, end


def test_a_word_is_trimmed_to_within_below_peak_db_of_its_loudest():
    take, start, end = word_with_a_long_faint_tail()
    (word,) = find_words(take, RATE).words
    assert abs(word.start_sample - start) <= RATE // 50 and abs(word.end_sample - end) <= RATE // 50
    # Without the trim the tail, far above the room but far below the word, makes it too long.
    untrimmed = find_words(take, RATE, WordSettings(below_peak_db=math.inf))
    assert untrimmed.words == () and untrimmed.dropped[0][0].length_samples > 1.4 * RATE


def test_kwsd_record_cuts_the_word_the_slicer_finds():
    take, _, _ = word_with_a_long_faint_tail(seed=1)
    (word,) = find_words(take, RATE).words
    result = cut_word(take, RATE, RATE)
    assert result.reason is None and result.clip is not None
    assert result.word_ms == (word.start_sample * 1000 // RATE, word.end_sample * 1000 // RATE)
    # Centred on the word's energy: the clip starts half a clip before the centroid.
    clip_start = int(
        np.flatnonzero((np.lib.stride_tricks.sliding_window_view(take, 64) == result.clip[:64]).all(1))[0]
    )
    assert clip_start == word.centre_sample - RATE // 2


def test_kwsd_record_takes_the_loudest_of_several_sounds_as_the_word():
    rng = np.random.default_rng(2)
    take = rng.normal(0, 3, 3 * RATE)
    t = np.arange(int(0.15 * RATE)) / RATE
    take[int(0.3 * RATE) : int(0.45 * RATE)] += 1000 * np.sin(2 * math.pi * 200 * t)  # a knock
    t = np.arange(int(0.4 * RATE)) / RATE
    take[int(1.5 * RATE) : int(1.9 * RATE)] += 9000 * np.sin(2 * math.pi * 300 * t)  # the word
    take = np.clip(np.rint(take), -32768, 32767).astype(np.int16)
    result = cut_word(take, RATE, RATE)
    assert result.reason is None and result.word_ms is not None
    assert abs(result.word_ms[0] - 1500) <= 20 and abs(result.word_ms[1] - 1900) <= 20


def test_the_word_finder_benchmark_reports_both_jobs_for_each_setting(tmp_path, capsys):
    from kwsd.audio import write_wav
    from kwsd_tools import benchmark_wordfinder

    real = tmp_path / "real"
    (real / "yes").mkdir(parents=True)
    (real / "_background_noise_").mkdir()
    for n in range(6):
        take, start, _ = word_with_a_long_faint_tail(seed=10 + n)
        write_wav(real / "yes" / f"ann_nohash_{n}.wav", take[start - RATE // 4 : start + 3 * RATE // 4], RATE)
    rng = np.random.default_rng(0)
    write_wav(real / "_background_noise_" / "room.wav", rng.normal(0, 3, 5 * RATE).astype(np.int16), RATE)
    assert benchmark_wordfinder.main(["--real_dir", str(real), "--below_peak_db", "inf,30"]) == 0
    out = capsys.readouterr().out.splitlines()
    takes = [line for line in out if "takes;" in line]
    found = [line for line in out if "words found in" in line]
    assert [line.split()[0] for line in takes] == ["below_peak_db=inf", "below_peak_db=30"]
    assert all("of 6 takes" in line for line in takes) and all("of 6 clips" in line for line in found)
    # Clear words in a quiet room: the shipped setting keeps every take, each clip whole.
    assert "accepted 100.0% of 6 takes; clips keeping >=95% of the word 100.0%" in takes[1]


def test_the_word_finder_benchmark_refuses_a_folder_without_clips(tmp_path, capsys):
    from kwsd_tools import benchmark_wordfinder

    assert benchmark_wordfinder.main(["--real_dir", str(tmp_path)]) == 66
    assert f"--real_dir {tmp_path}: no <word>/*.wav or <word>/*.flac clips" in capsys.readouterr().err
