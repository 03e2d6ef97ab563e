"""Typed errors. Library code raises these; only ``kwsd.cli`` maps them to exit codes."""

from __future__ import annotations


class KwsdError(Exception):
    """A problem with the user's input, told in one line that names the thing and what was expected."""


class InputNotFoundError(KwsdError):
    """A named input file does not exist, is a directory, or cannot be opened."""


class AudioFormatError(KwsdError):
    """Audio that is not valid, or in an encoding kwsd does not convert."""


class StreamError(KwsdError):
    """An audio stream that broke off (for example stdin closing mid-sample)."""


class ModelError(KwsdError):
    """A model bundle or .tflite that is unusable or disagrees with its own front end or labels."""


class RuntimeDependencyError(KwsdError):
    """A runtime library that is missing or cannot work in this environment."""


class OutputError(KwsdError):
    """An output file that cannot be written (missing folder, a directory in the way, no space)."""


class EvaluationError(KwsdError):
    """A ground-truth file or a calibration request that cannot be used (names the thing).

    Here rather than in :mod:`kwsd.evaluate` so that the command line can catch it without
    importing the evaluation code (and numpy) at start-up.
    """
