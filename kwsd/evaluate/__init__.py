"""Streaming accuracy: ground truth, the reference's scoring, a WAV through the daemon's pipeline,
and calibration sweeps of the smoother over recorded scores.

**Times.** kwsd stamps a window's scores, and a detection, with the audio time at the window's
*end* (:class:`kwsd.pipeline.Detection`). A ground-truth file (TensorFlow's streaming test format,
``label, time_ms`` a line, e.g. ``yes, 1234.562500``) gives the *start* of each word's clip, as
TensorFlow's generate_streaming_test_wav writes it. They meet in one place, :func:`clip_start_ms`:
a window covers ``spec.span_samples`` (the frames of one clip: 990 ms of a 1000 ms clip at 30/20 ms
window/stride), so it starts that long before it ends. Scoring then compares clip starts with clip
starts, which is what the reference's own test does (it stamps a detection with its clip's start).

**Scoring** (:func:`score_detections`), the reference's ``CalculateAccuracyStats``: the truth in
time order; each detection in time order is matched with the first truth word whose time is within
``tolerance_ms`` of its start, inclusive. Same label and that word not yet matched: correct;
otherwise wrong (any hit, right label or not, marks the word as matched, so a second hit is wrong).
No word in reach: a false positive. ``matched``, ``correct``, ``wrong`` and ``false positive`` are
percentages of the number of truth words (``matched`` = correct + wrong, so it can pass 100%).
A state label (``detection.states``) is reported on and off; its on is scored like an event, at
the window where the sound started (not the later one that reported it, ``min_on_ms`` on), and
its off is not a detection (:func:`scored_window_end_ms`).

**False accepts and misses** (kwsd's own figures). The keywords are the model's labels other than
``_silence_`` and ``_unknown_`` (``_unknown_`` is detected and scored like any label, as in the
reference, but a user acts on keywords only). A *false accept* is a keyword detection that is not
correct: a wrong one (wrong label, or a second hit on a word) or a false positive; false accepts per
hour are over all the audio measured. A truth word is *missed* when no detection is correct for it;
the miss rate of a label is its missed words over its words, and the overall miss rate is over the
keyword words.

**Streaming** (:func:`run_stream`): the WAV goes through :class:`kwsd.pipeline.Pipeline` (the
daemon's ring buffer, incremental front end, clip stride and :class:`~kwsd.smoother.RecognizeCommands`)
in blocks, as fast as it runs (audio time, not the wall clock). Each window's scores are recorded
once, so that other smoother settings can be replayed on them without running the model again.

**Calibration** (:func:`sweep`) replays many settings on recorded scores. Averaging (the smoother's
steps 1-4) does not depend on the threshold or the suppression, so it runs once per averaging window
through RecognizeCommands itself (:func:`average_scores`); the firing step (5) is then replayed per
threshold and suppression (:func:`fire`). The setting chosen is run again through RecognizeCommands
in full (:func:`smooth`) and must give the very same detections (:func:`check_replay`).

Runtime package: numpy only (matplotlib is imported by :func:`plot_det` alone, when asked for).

The parts, each usable alone (everything is also importable from here):
:mod:`~kwsd.evaluate.truth` (ground-truth files), :mod:`~kwsd.evaluate.scoring` (matching and the
figures), :mod:`~kwsd.evaluate.streams` (a WAV through the pipeline, recorded scores, the report),
:mod:`~kwsd.evaluate.calibration` (calibration: replay, frontier, choice), :mod:`~kwsd.evaluate.plots`
(the DET picture) and :mod:`~kwsd.evaluate.configfile` (writing the choice into config.yaml).
"""

from kwsd.evaluate.calibration import (
    DEFAULT_AVERAGE_WINDOWS_MS,
    DEFAULT_SUPPRESSIONS_MS,
    DEFAULT_TARGET_FA_PER_HOUR,
    DEFAULT_THRESHOLDS,
    Averages,
    Calibration,
    Choice,
    Measured,
    Point,
    Setting,
    Sweeper,
    average_scores,
    calibrate,
    choose,
    detection_values,
    fire,
    frontier,
    grid_table,
    label_threshold_list,
    refine_per_label,
    sweep,
)
from kwsd.evaluate.captures import ReviewedCapture, ReviewedSet, read_reviewed
from kwsd.evaluate.configfile import (
    detection_snippet,
    edit_detection_text,
    edit_model_text,
    write_detection,
    yaml_value,
)
from kwsd.evaluate.plots import plot_det
from kwsd.evaluate.scoring import (
    CORRECT,
    DEFAULT_TOLERANCE_MS,
    FALSE_POSITIVE,
    MS_PER_HOUR,
    STATE_SCORING,
    WRONG,
    LabelFigures,
    ScoredDetection,
    StreamFigures,
    StreamScore,
    clip_start_ms,
    figures,
    is_keyword,
    score_detections,
    score_stream,
    scored_window_end_ms,
    window_span_ms,
)
from kwsd.evaluate.streams import (
    BLOCK_MS,
    AudioFacts,
    RecordedScores,
    file_sha256,
    run_stream,
    smooth,
    smooth_scores,
    state_scoring,
    stream_report,
)
from kwsd.evaluate.truth import (
    MAX_TRUTH_BYTES,
    GroundTruth,
    TruthError,
    TruthWord,
    check_truth,
    format_truth,
    parse_truth,
    read_truth,
)

__all__ = [
    "BLOCK_MS",
    "CORRECT",
    "DEFAULT_AVERAGE_WINDOWS_MS",
    "DEFAULT_SUPPRESSIONS_MS",
    "DEFAULT_TARGET_FA_PER_HOUR",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_TOLERANCE_MS",
    "FALSE_POSITIVE",
    "MAX_TRUTH_BYTES",
    "MS_PER_HOUR",
    "STATE_SCORING",
    "WRONG",
    "AudioFacts",
    "Averages",
    "Calibration",
    "Choice",
    "GroundTruth",
    "LabelFigures",
    "Measured",
    "Point",
    "RecordedScores",
    "ReviewedCapture",
    "ReviewedSet",
    "ScoredDetection",
    "Setting",
    "StreamFigures",
    "StreamScore",
    "Sweeper",
    "TruthError",
    "TruthWord",
    "average_scores",
    "calibrate",
    "check_truth",
    "choose",
    "clip_start_ms",
    "detection_snippet",
    "detection_values",
    "edit_detection_text",
    "edit_model_text",
    "figures",
    "file_sha256",
    "fire",
    "format_truth",
    "frontier",
    "grid_table",
    "is_keyword",
    "label_threshold_list",
    "parse_truth",
    "plot_det",
    "read_reviewed",
    "read_truth",
    "refine_per_label",
    "run_stream",
    "score_detections",
    "score_stream",
    "scored_window_end_ms",
    "smooth",
    "smooth_scores",
    "state_scoring",
    "stream_report",
    "sweep",
    "window_span_ms",
    "write_detection",
    "yaml_value",
]
