"""The demo model's words, and a partner for each: the ground truth made wrong on purpose."""

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
#: Every word swapped with its opposite (yes <-> no, up <-> down, ...).
SWAPPED = {word: WORDS[i ^ 1] for i, word in enumerate(WORDS)}
