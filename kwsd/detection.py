"""Detection settings: how often the model runs and how the smoother decides.

A bundle may recommend them (its ``detection`` section, written by the tool that tuned
them); config.yaml and the command line may override them; what none gives takes
TensorFlow's RecognizeCommands defaults. This module is the one place that validates and
merges them. Partial settings (a bundle's, a config's, flags) are plain mappings checked by
:func:`check_detection`; once merged they are one :class:`DetectionSettings`, which is what
the pipeline, the reports and reload carry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kwsd.smoother import FiringRule, SmootherError, SmootherSettings
from kwsd.state import StateError, StateSettings, check_states

log = logging.getLogger(__name__)

_INT_KEYS = ("clip_stride_ms", "average_window_ms", "suppression_ms", "minimum_count")
KEYS = (*_INT_KEYS, "threshold", "rule", "label_thresholds", "states")


#: What ``kwsd model import`` records for a model with the micro front end (micro_speech and
#: train.py --preprocess=micro) when no detection flag is given. Measured on real speech, not
#: copied from the firmware: a tiny_conv model trained as the TinyML course trains it, on the
#: Speech Commands clips of ../shared/realspeech, its settings swept by ``kwsd calibrate`` over
#: 2.5 h of streams made from held-out people (README, "Importing a model made by TensorFlow's
#: tools", has the table and the commands). micro_speech's own firmware values (micro rule,
#: 1000 ms, 0.78, 1500 ms) were off the frontier there and heard one keyword in eleven.
MICRO_IMPORT_DETECTION: Mapping[str, Any] = MappingProxyType(
    {
        "clip_stride_ms": 20,
        "average_window_ms": 750,
        "threshold": 0.8,
        "suppression_ms": 500,
        "minimum_count": 3,
        "rule": FiringRule.TF.value,
    }
)


class DetectionError(ValueError):
    """A detection setting of the wrong type or range; the message starts with its key."""


_DEFAULTS = SmootherSettings()


@dataclass(frozen=True)
class DetectionSettings:
    """How often the model runs and how the smoother decides: every setting, resolved.

    Made by :func:`resolve_detection` (or directly, e.g. in a sweep); checked once, here, so
    whoever holds one can use it as it is. The smoother's settings default to TensorFlow's
    RecognizeCommands (1000 ms / 0.2 / 500 ms / 3, TF rule).
    """

    clip_stride_ms: int
    average_window_ms: int = _DEFAULTS.average_window_ms
    threshold: float = _DEFAULTS.threshold
    suppression_ms: int = _DEFAULTS.suppression_ms
    minimum_count: int = _DEFAULTS.minimum_count
    rule: FiringRule = _DEFAULTS.rule
    #: Per-label overrides of ``threshold`` (read-only).
    label_thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    #: The labels reported as a state, on and off (:mod:`kwsd.state`); the rest are events.
    states: Mapping[str, StateSettings] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        values = check_detection({**self.to_dict(), "label_thresholds": dict(self.label_thresholds)})
        object.__setattr__(self, "threshold", values["threshold"])
        object.__setattr__(self, "rule", FiringRule(values["rule"]))
        object.__setattr__(self, "label_thresholds", MappingProxyType(values["label_thresholds"]))
        object.__setattr__(self, "states", MappingProxyType(check_states(values.get("states", {}))))
        windows = self.average_window_ms // self.clip_stride_ms + 1
        if windows < self.minimum_count:
            raise DetectionError(
                f"average_window_ms: {self.average_window_ms} ms holds at most {windows} window(s) at a "
                f"{self.clip_stride_ms} ms clip stride, fewer than minimum_count ({self.minimum_count}): "
                "nothing could ever be detected"
            )

    @property
    def smoother(self) -> SmootherSettings:
        """What :class:`kwsd.smoother.RecognizeCommands` takes (everything but the clip stride)."""
        return _smoother_settings(self.to_dict())

    def threshold_of(self, label: str) -> float:
        """The threshold ``label``'s smoothed score must pass: its own, else ``threshold``."""
        return float(self.label_thresholds.get(label, self.threshold))

    def to_dict(self) -> dict[str, Any]:
        """Every setting under its key (the form of a bundle's ``detection`` and of reports);
        ``states`` only when there are state labels."""
        values = {
            "clip_stride_ms": self.clip_stride_ms,
            "average_window_ms": self.average_window_ms,
            "threshold": self.threshold,
            "label_thresholds": dict(self.label_thresholds),
            "suppression_ms": self.suppression_ms,
            "minimum_count": self.minimum_count,
            "rule": self.rule.value if isinstance(self.rule, FiringRule) else self.rule,
        }
        if self.states:
            values["states"] = {
                label: state.to_dict() if isinstance(state, StateSettings) else dict(state)
                for label, state in self.states.items()
            }
        return values

    def replace(self, **changes: Any) -> DetectionSettings:
        """A copy with some settings changed, checked as a whole."""
        return DetectionSettings.from_dict({**self.to_dict(), **changes})

    @staticmethod
    def from_dict(values: Mapping[str, Any]) -> DetectionSettings:
        """From a complete set of settings under their keys (:func:`check_detection`'s form)."""
        if "clip_stride_ms" not in values:
            raise DetectionError("clip_stride_ms: missing (the resolved settings need a clip stride)")
        # check_detection refuses unknown keys; the constructor normalises the rest.
        return DetectionSettings(**check_detection(values))


def check_detection(data: Any) -> dict[str, Any]:
    """Validate a (possibly partial) set of detection settings; returns a normalised copy."""
    if not isinstance(data, Mapping):
        raise DetectionError(f"expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise DetectionError(f"{unknown[0]}: unknown setting (expected one of {', '.join(KEYS)})")
    out: dict[str, Any] = {}
    for key in _INT_KEYS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise DetectionError(f"{key}: expected a whole number of {_unit(key)}, got {value!r}")
            out[key] = value
    if "clip_stride_ms" in out and out["clip_stride_ms"] <= 0:
        raise DetectionError(f"clip_stride_ms: expected > 0, got {out['clip_stride_ms']}")
    if "threshold" in data:
        out["threshold"] = _probability("threshold", data["threshold"])
    if "rule" in data:
        try:
            out["rule"] = FiringRule(data["rule"]).value
        except ValueError:
            choices = ", ".join(rule.value for rule in FiringRule)
            raise DetectionError(f"rule: expected one of {choices}, got {data['rule']!r}") from None
    if "label_thresholds" in data:
        thresholds = data["label_thresholds"]
        if not isinstance(thresholds, Mapping):
            raise DetectionError(f"label_thresholds: expected a mapping of label to 0..1, got {thresholds!r}")
        out["label_thresholds"] = {
            str(label): _probability(f"label_thresholds.{label}", value)
            for label, value in thresholds.items()
        }
    if "states" in data:
        try:
            out["states"] = {label: state.to_dict() for label, state in check_states(data["states"]).items()}
        except StateError as err:
            raise DetectionError(
                f"states: {err}" if str(err).startswith("expected") else f"states.{err}"
            ) from None
    try:
        _smoother_settings(out)  # the smoother's own range checks
    except SmootherError as err:
        raise DetectionError(str(err)) from None
    return out


def resolve_detection(
    recommended: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    window_stride_ms: int,
) -> DetectionSettings:
    """Overrides, else the bundle's recommendation, else the defaults, as one checked value.

    ``overrides`` with value None are not given. Label thresholds merge per label. The clip
    stride defaults to the model's window stride and must be a multiple of it. Refuses
    settings under which nothing could ever fire.
    """
    given = check_detection({k: v for k, v in overrides.items() if v is not None})
    merged = {**check_detection(recommended), **given}
    for per_label in ("label_thresholds", "states"):
        if per_label in recommended and per_label in given:
            merged[per_label] = {**recommended[per_label], **given[per_label]}
    merged.setdefault("clip_stride_ms", window_stride_ms)
    clip_stride_frames(merged["clip_stride_ms"], window_stride_ms)
    return DetectionSettings.from_dict(merged)


def clip_stride_frames(clip_stride_ms: int, window_stride_ms: int) -> int:
    """Front-end frames from one window to the next; :class:`DetectionError` unless the clip
    stride is a positive multiple of the model's window stride (the one place this is checked)."""
    if clip_stride_ms <= 0 or clip_stride_ms % window_stride_ms:
        raise DetectionError(
            f"clip_stride_ms: expected a positive multiple of the model's window stride "
            f"({window_stride_ms} ms), got {clip_stride_ms}"
        )
    return clip_stride_ms // window_stride_ms


def _smoother_settings(values: Mapping[str, Any]) -> SmootherSettings:
    defaults = SmootherSettings()
    return SmootherSettings(
        average_window_ms=values.get("average_window_ms", defaults.average_window_ms),
        threshold=values.get("threshold", defaults.threshold),
        suppression_ms=values.get("suppression_ms", defaults.suppression_ms),
        minimum_count=values.get("minimum_count", defaults.minimum_count),
        rule=FiringRule(values.get("rule", defaults.rule.value)),
        label_thresholds=values.get("label_thresholds") or None,
    )


def _probability(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise DetectionError(f"{key}: expected a number from 0 to 1, got {value!r}")
    return float(value)


def _unit(key: str) -> str:
    return "windows" if key == "minimum_count" else "milliseconds"
