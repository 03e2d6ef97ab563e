"""tools/synth.py: voices with accents, repeatable clips, one partition per voice."""

import dataclasses
import shutil

import numpy as np
import pytest

from tools import synth
from tools.training.dataset import which_set

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
