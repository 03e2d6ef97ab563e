"""Writing the detection section (and the model) of config.yaml in place, keeping the rest."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kwsd.errors import OutputError, read_limited

# --------------------------------------------------------------------------------------
# Writing the detection section of config.yaml in place.


_TOP_KEY = re.compile(r"^(?P<key>[^\s#][^:#]*):(?P<rest>.*)$")
_CHILD_KEY = re.compile(r"^(?P<indent>[ ]+)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<space>[ ]*)(?P<value>.*)$")
_TRAILING_COMMENT = re.compile(r"(?P<value>.*?)(?P<comment>[ ]+#.*)?$")


def yaml_value(value: Any) -> str:
    """A detection value as one YAML flow scalar or mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_yaml_key(str(k))}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return _yaml_key(str(value))


def _yaml_key(text: str) -> str:
    # Plain when every YAML reader reads it back as this very string (YAML 1.1 readers take
    # yes/no/on/off for booleans: those are quoted), else double-quoted.
    import yaml

    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text):
        with contextlib.suppress(yaml.YAMLError):
            if yaml.safe_load(text) == text:
                return text
    return json.dumps(text)


def detection_snippet(values: Mapping[str, Any], comment_lines: Sequence[str] = ()) -> str:
    """The ``detection:`` section as YAML text."""
    lines = [f"# {line}" for line in comment_lines]
    lines.append("detection:")
    lines.extend(f"  {key}: {yaml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def edit_detection_text(text: str, values: Mapping[str, Any], source: str = "<config>") -> str:
    """``text`` with the values of the ``detection:`` keys replaced in place (comments, order and
    every other line kept); keys not there are added at the end of the section, and a missing
    section at the end of the file. Raises :class:`EvaluationError` when the section is not a
    block mapping that can be edited line by line."""
    from kwsd.config import ConfigError

    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if (m := _TOP_KEY.match(line.rstrip("\r\n"))) and m["key"] == "detection"
        ),
        None,
    )
    if start is None:
        separator = "" if not text or text.endswith("\n") else newline
        return text + separator + newline + detection_snippet(values).replace("\n", newline)
    rest = _TOP_KEY.match(lines[start].rstrip("\r\n"))
    assert rest is not None
    inline = _TRAILING_COMMENT.match(rest["rest"].strip())
    inline_value = inline["value"].strip() if inline else ""
    if inline_value not in ("", "{}", "null", "~"):
        raise ConfigError(
            [
                f"detection: written as {inline_value!r} on one line; kwsd calibrate edits a block mapping "
                "(one key a line) only: nothing written (use --dry-run and paste the snippet)"
            ],
            source,
        )
    if inline_value:
        lines[start] = "detection:" + (inline["comment"] or "" if inline else "") + newline
    end = start + 1
    while end < len(lines):
        stripped = lines[end].strip()
        if stripped and not stripped.startswith("#") and not lines[end][0].isspace():
            break
        end += 1
    # The section's own keys: lines at the indentation of its first key. A key's value goes on
    # over the lines indented deeper than the key (a block mapping), up to the next line that is not.
    indent: str | None = None
    keys: dict[str, tuple[int, list[int]]] = {}  # key -> (its line, its value's lines)
    insert_at = start + 1
    i = start + 1
    while i < end:
        m = _CHILD_KEY.match(lines[i].rstrip("\r\n"))
        if m is None or (indent is not None and m["indent"] != indent):
            i += 1
            continue
        indent = m["indent"]
        deeper: list[int] = []
        j = i + 1
        while j < end and (not lines[j].strip() or _indent(lines[j]) > len(indent)):
            if lines[j].strip():
                deeper.append(j)
            j += 1
        keys[m["key"]] = (i, deeper)
        insert_at = (deeper[-1] if deeper else i) + 1
        i = j
    indent = indent or "  "
    out = list(lines)
    removed: set[int] = set()
    for key, value in values.items():
        if key not in keys:
            continue
        line, deeper = keys[key]
        m = _CHILD_KEY.match(out[line].rstrip("\r\n"))
        assert m is not None
        tail = _TRAILING_COMMENT.match(m["value"])
        comment = tail["comment"] if tail and tail["comment"] and tail["value"].strip() else None
        out[line] = f"{m['indent']}{key}: {yaml_value(value)}{comment or ''}{newline}"
        # A block-mapping value's lines (not its comments) give way to the flow value.
        removed.update(k for k in deeper if not out[k].strip().startswith("#"))
    added = [
        f"{indent}{key}: {yaml_value(value)}{newline}" for key, value in values.items() if key not in keys
    ]
    if added and not out[insert_at - 1].endswith(("\n", "\r")):
        out[insert_at - 1] += newline
    out[insert_at:insert_at] = added
    shift = len(added)
    removed = {k + shift if k >= insert_at else k for k in removed}
    return "".join(line for k, line in enumerate(out) if k not in removed)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def edit_model_text(text: str, model: Path, source: str = "<config>") -> str:
    """``text`` with the top-level ``model:`` value set to ``model`` (its comment kept); a file
    without the key gets it as its first line after the opening comments."""
    from kwsd.config import ConfigError

    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    value = json.dumps(str(model))  # a YAML double-quoted string
    for i, line in enumerate(lines):
        m = _TOP_KEY.match(line.rstrip("\r\n"))
        if m and m["key"] == "model":
            inline = _TRAILING_COMMENT.match(m["rest"].strip())
            comment = inline["comment"] or "" if inline else ""
            if i + 1 < len(lines) and lines[i + 1][:1].isspace() and lines[i + 1].strip():
                raise ConfigError(
                    ["model: written over several lines; kwsd calibrate edits `model: PATH` on one line "
                     "only: nothing written"],
                    source,
                )  # fmt: skip
            lines[i] = f"model: {value}{comment}{newline}"
            return "".join(lines)
    first = 0
    while first < len(lines) and (not lines[first].strip() or lines[first].lstrip().startswith("#")):
        first += 1
    return "".join([*lines[:first], f"model: {value}{newline}", *lines[first:]])


def write_detection(
    path: str | os.PathLike[str],
    values: Mapping[str, Any],
    *,
    parse: Callable[[str, str], Any],
    model: Path | None = None,
) -> str:
    """Edit ``path``'s detection section in place (:func:`edit_detection_text`), and its
    ``model:`` too when ``model`` is given; returns the new text.

    ``parse(text, source)`` must accept the file before (else its error propagates and nothing is
    written) and the edited text after, which must then hold exactly ``values`` (and ``model``)
    and, of the keys ``values`` does not name (``states``), what the file held before.
    The new file replaces the old one atomically, with the same permissions; the old one is kept
    as ``<name>.bak``.
    """
    path = Path(path)
    from kwsd.config import MAX_CONFIG_BYTES, ConfigError

    try:
        raw = read_limited(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(["no such file (nothing written)"], str(path)) from None
    except OSError as err:
        raise ConfigError([f"cannot read the file ({err.strerror or err})"], str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(["not UTF-8 text (nothing written)"], str(path)) from None
    before = parse(text, str(path))  # a config with problems is refused before anything is written
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    new_text = edit_detection_text(text, values, str(path))
    if model is not None:
        new_text = edit_model_text(new_text, model, str(path))
    config = parse(new_text, str(path))
    if model is not None and getattr(config, "model", None) != model:
        raise ConfigError(
            [f"model: the edited file reads as {config.model}, not {model}: nothing written (a bug)"],
            str(path),
        )
    kept = {k: v for k, v in dict(getattr(before, "detection", {})).items() if k not in values}
    expected = {**_normalised(values), **kept}
    got = dict(getattr(config, "detection", {}))
    if got != expected:
        raise ConfigError(
            [
                f"detection: the edited file reads as {got}, not {expected}: nothing written (a bug; "
                "use --dry-run and paste the snippet)"
            ],
            str(path),
        )
    backup = path.with_name(path.name + ".bak")
    tmp = path.with_name(f".{path.name}.kwsd-tmp")
    try:
        # Both copies hold what the config holds (a password, maybe): each is created private
        # and given the config's own permissions, never the umask's (often world-readable).
        owner = os.stat(path)
        _write_private(backup, raw, owner)
        _write_private(tmp, (bom + new_text).encode("utf-8"), owner)
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(f"{path}: cannot write ({err.strerror or err}); the file is unchanged") from None
    return new_text


def _write_private(path: Path, data: bytes, like: os.stat_result) -> None:
    """Write ``data`` to ``path`` (replacing a regular file only), created 0600 and then given
    the mode (and, where allowed, the owner and group) of ``like``, so it is never readable by
    others while it is written. Raises OSError."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(errno.EEXIST, f"{path} is not a regular file; not replacing it")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_TRUNC
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # only root may give a file away
            os.fchown(f.fileno(), like.st_uid, like.st_gid)
        os.fchmod(f.fileno(), stat.S_IMODE(like.st_mode))


def _normalised(values: Mapping[str, Any]) -> dict[str, Any]:
    from kwsd.detection import check_detection

    checked = check_detection({k: v for k, v in values.items() if v is not None})
    if not checked.get("label_thresholds", True):
        del checked["label_thresholds"]
    return checked
