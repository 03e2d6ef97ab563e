"""Model bundles: one file holding a .tflite, its labels, its front-end spec and provenance.

A bundle is a zip archive (extension ``.kwsd``) with two members:

``bundle.json``
    ``format`` ("kwsd-bundle"), ``format_version`` (1), ``name``, ``labels`` (index order of
    the model's output), ``frontend`` (:meth:`FrontendSpec.to_dict`), ``model`` (``file``,
    ``sha256``, ``bytes``), ``provenance`` (``tool``, ``tool_version``, ``created``,
    ``dataset``), optional ``metrics`` (what was measured on it, e.g. test accuracy) and
    optional ``detection`` (recommended smoother settings).
``model.tflite``
    The model, unmodified.
``frontend/mel_model.tflite``, ``frontend/embedding_model.tflite``
    Only with an ``embedding`` front end: its two feature models, named in ``frontend`` by
    their sha256 (the bundle's ``provenance`` says where they came from and on what terms).

Reading checks the archive and the manifest; whether the .tflite itself agrees with the
manifest is checked by :class:`kwsd.classifier.TfliteClassifier` when it loads the model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kwsd.detection import DetectionError, check_detection
from kwsd.errors import InputNotFoundError, ModelError, OutputError
from kwsd.frontend import FrontendSpec, SpecError

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "kwsd-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "bundle.json"
MODEL_NAME = "model.tflite"
#: An embedding front end's feature models, as bundle members (FrontendSpec.embedding's fields).
FEATURE_MODEL_MEMBERS = {
    "mel_model": "frontend/mel_model.tflite",
    "embedding_model": "frontend/embedding_model.tflite",
}
#: A TFLite flatbuffer carries this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"
#: Largest .tflite kwsd accepts (a keyword model is kilobytes; this catches wrong files).
MAX_MODEL_BYTES = 256 * 1024 * 1024
#: Largest bundle.json kwsd reads (the demo's is 10 KB).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    name: str
    labels: tuple[str, ...]
    frontend: FrontendSpec
    tflite: bytes = field(repr=False)
    sha256: str
    provenance: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    detection: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "name": self.name,
            "labels": list(self.labels),
            "frontend": self.frontend.to_dict(),
            "model": {"file": MODEL_NAME, "sha256": self.sha256, "bytes": len(self.tflite)},
            "provenance": self.provenance,
        }
        if self.metrics:
            out["metrics"] = self.metrics
        if self.detection:
            out["detection"] = self.detection
        return out


def check_tflite_bytes(data: bytes, where: str) -> None:
    """Cheap checks that ``data`` is a TFLite flatbuffer at all, before any native code sees it."""
    if not data:
        raise ModelError(f"{where}: empty file, expected a TFLite model")
    if len(data) < 16 or data[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(
            f"{where}: not a TFLite flatbuffer (expected identifier 'TFL3' at byte 4, got {data[4:8]!r})"
        )
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"{where}: {len(data)} bytes, larger than the {MAX_MODEL_BYTES} accepted")


def make_bundle(
    tflite: bytes,
    labels: list[str] | tuple[str, ...],
    frontend: FrontendSpec,
    *,
    name: str,
    tool: str,
    dataset: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    detection: dict[str, Any] | None = None,
    created: str | None = None,
) -> Bundle:
    """A bundle for ``tflite``, stamped with provenance (tool, kwsd version, date, sha256)."""
    from kwsd import __version__

    check_tflite_bytes(tflite, "model")
    _check_labels(list(labels), "labels")
    detection = _checked_detection(detection or {}, "detection")
    provenance = {
        "tool": tool,
        "tool_version": f"kwsd {__version__}",
        "created": created or dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "dataset": dataset or {},
    }
    return Bundle(
        name=name,
        labels=tuple(labels),
        frontend=frontend,
        tflite=tflite,
        sha256=hashlib.sha256(tflite).hexdigest(),
        provenance=provenance,
        metrics=dict(metrics or {}),
        detection=detection,
    )


def _checked_detection(data: Any, where: str) -> dict[str, Any]:
    try:
        return check_detection(data)
    except DetectionError as err:
        raise ModelError(f"{where}.{err}") from None


def write_bundle(bundle: Bundle, path: str | Path) -> Path:
    """Write atomically (temp file then rename), so a crash never leaves half a bundle."""
    path = Path(path)
    try:
        found = path.lstat()
    except OSError:
        found = None  # not there (or not reachable): the write below says why if it fails
    if found is not None and not stat.S_ISREG(found.st_mode):  # -o /dev/null must not replace it
        raise OutputError(f"{path}: not a regular file; not replacing it with a bundle")
    tmp = path.with_name(path.name + ".tmp")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        # Fixed timestamps: the same model gives the same bundle bytes.
        zf.writestr(
            zipfile.ZipInfo(MANIFEST_NAME, (2020, 1, 1, 0, 0, 0)),
            json.dumps(bundle.manifest(), indent=2, sort_keys=True) + "\n",
        )
        zf.writestr(zipfile.ZipInfo(MODEL_NAME, (2020, 1, 1, 0, 0, 0)), bundle.tflite)
        embedding = bundle.frontend.embedding
        if embedding is not None:
            if not embedding.loaded:
                raise OutputError(f"{path}: the embedding front end's feature models are not loaded")
            for key, member in FEATURE_MODEL_MEMBERS.items():
                zf.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), getattr(embedding, key))
    try:
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{path}: cannot write the bundle ({err.strerror or err})") from None
    return path


def read_bundle(path: str | Path) -> Bundle:
    """Read and check a bundle's archive and manifest. Raises ModelError naming the problem."""
    path = Path(path)
    where = str(path)
    try:
        found = path.stat()
    except FileNotFoundError:
        raise InputNotFoundError(f"{where}: no such model bundle") from None
    except OSError as err:  # a name too long, a component that is not a folder, ...
        raise InputNotFoundError(f"{where}: cannot read ({err.strerror or err})") from None
    if stat.S_ISDIR(found.st_mode):
        raise InputNotFoundError(f"{where}: is a directory, expected a .kwsd model bundle file")
    try:
        if not stat.S_ISREG(found.st_mode):  # /dev/zero or a FIFO would never end
            raise ModelError(f"{where}: not a regular file, expected a .kwsd model bundle file")
        if found.st_size > MAX_MODEL_BYTES:
            raise ModelError(
                f"{where}: {found.st_size} bytes, larger than the {MAX_MODEL_BYTES} a bundle may be"
            )
        raw = path.read_bytes()
    except OSError as err:
        raise InputNotFoundError(f"{where}: cannot read ({err.strerror})") from None
    if raw[4:8] == TFLITE_IDENTIFIER:
        raise ModelError(
            f"{where}: a bare .tflite, not a kwsd bundle; wrap it with "
            "'kwsd model import' (labels and front end are needed)"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = set(zf.namelist())
            for member in (MANIFEST_NAME, MODEL_NAME):
                if member not in names:
                    raise ModelError(f"{where}: bundle has no {member}")
            manifest_bytes = _member(zf, MANIFEST_NAME, MAX_MANIFEST_BYTES, where)
            tflite = _member(zf, MODEL_NAME, MAX_MODEL_BYTES, where)
            features = {
                key: _member(zf, member, MAX_MODEL_BYTES, where)
                for key, member in FEATURE_MODEL_MEMBERS.items()
                if member in names
            }
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as err:
        raise ModelError(f"{where}: not a kwsd model bundle (not a valid zip archive: {err})") from None
    except (OSError, ValueError, NotImplementedError) as err:  # corrupt member data
        raise ModelError(f"{where}: damaged bundle archive ({err})") from None
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an integer of 5,000 digits
        raise ModelError(f"{where}: {MANIFEST_NAME} is not valid JSON ({err})") from None
    except RecursionError:
        raise ModelError(f"{where}: {MANIFEST_NAME} is nested too deeply to be a bundle's") from None
    return bundle_from_manifest(manifest, tflite, where, features)


def _member(zf: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    """A member's bytes, refused by its declared size before anything is inflated, and read
    no further than ``limit`` in case the declaration lies (a zip bomb)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise ModelError(
            f"{where}: {name} would unpack to {info.file_size} bytes, more than the {limit} accepted"
        )
    with zf.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise ModelError(f"{where}: {name} unpacks to more than the {limit} bytes accepted")
    return data


def bundle_from_manifest(
    manifest: Any, tflite: bytes, where: str, features: dict[str, bytes] | None = None
) -> Bundle:
    """The bundle a manifest describes; ``features``: the feature-model members by
    :data:`FEATURE_MODEL_MEMBERS` key (an ``embedding`` front end needs both)."""
    if not isinstance(manifest, dict):
        raise ModelError(f"{where}: {MANIFEST_NAME}: expected a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{where}: format: expected {BUNDLE_FORMAT!r}, got {manifest.get('format')!r}")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise ModelError(
            f"{where}: format_version: this kwsd reads version {BUNDLE_FORMAT_VERSION}, "
            f"got {manifest.get('format_version')!r}"
        )
    for key, kind in (
        ("name", str),
        ("labels", list),
        ("frontend", dict),
        ("model", dict),
        ("provenance", dict),
    ):
        if not isinstance(manifest.get(key), kind):
            raise ModelError(f"{where}: {key}: expected a {kind.__name__}, got {manifest.get(key)!r}")
    labels = manifest["labels"]
    try:
        _check_labels(labels, "labels")
    except ModelError as err:
        raise ModelError(f"{where}: {err}") from None
    try:
        spec = FrontendSpec.from_dict(manifest["frontend"])
    except SpecError as err:
        raise ModelError(f"{where}: {err}") from None
    if spec.embedding is not None:
        features = features or {}
        for key, member in FEATURE_MODEL_MEMBERS.items():
            if key not in features:
                raise ModelError(f"{where}: bundle has no {member} (its embedding front end needs it)")
            check_tflite_bytes(features[key], f"{where}: {member}")
        try:
            spec = spec.with_embedding_models(features["mel_model"], features["embedding_model"])
        except SpecError as err:
            raise ModelError(f"{where}: frontend.{err} (damaged or edited bundle)") from None
    model = manifest["model"]
    check_tflite_bytes(tflite, f"{where}: {MODEL_NAME}")
    digest = hashlib.sha256(tflite).hexdigest()
    if model.get("sha256") != digest:
        raise ModelError(
            f"{where}: {MODEL_NAME} has sha256 {digest[:16]}..., but the manifest says "
            f"{str(model.get('sha256'))[:16]}... (damaged or edited bundle)"
        )
    if not isinstance(manifest.get("metrics", {}), dict):
        raise ModelError(f"{where}: metrics: expected an object")
    detection = _checked_detection(manifest.get("detection", {}), f"{where}: detection")
    return Bundle(
        name=manifest["name"],
        labels=tuple(labels),
        frontend=spec,
        tflite=tflite,
        sha256=digest,
        provenance=manifest["provenance"],
        metrics=manifest.get("metrics", {}),
        detection=detection,
        source=where,
    )


def _check_labels(labels: list[Any], where: str) -> None:
    if not labels:
        raise ModelError(f"{where}: expected at least one label, got none")
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip() or label != label.strip():
            raise ModelError(
                f"{where}[{i}]: expected a non-empty label without surrounding spaces, got {label!r}"
            )
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ModelError(f"{where}: label {label!r} appears twice")
        seen.add(label)


def demo_bundle_path() -> Path:
    """The built-in demo model shipped inside the package."""
    return Path(__file__).parent / "demo" / "demo.kwsd"


def demo_wav_path() -> Path:
    return Path(__file__).parent / "demo" / "demo.wav"
