"""Loading a run's config: YAML with dotted overrides, validated against the schema, errors placed.

    cfg = load_config("configs/reference.yaml", overrides=["learner.lr=1e-5"])

Errors are raised as `ConfigError`, one line per problem, each naming the config path as the user writes
it (`data.train[1].path`) and where its value came from: the file line, or the `--set` that gave it
(`configs/x.yaml:12: learner.lr: ...`). The lines come from PyYAML's node graph, read before the data is
constructed, so a key given twice and a key that is not a string are reported at their lines too. Secret
values (`SecretStr` fields) never appear in an error.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, get_args

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from paced_core.config.schema import PacedConfig
from paced_core.redact import names_a_credential


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every problem and where it is."""


MAX_PROBLEMS = 50  # listed per invalid config; a generated file can hold thousands of the same mistake
KeyPath = tuple[str | int, ...]
"""A place in the plain config data: keys, and list indices as ints (`("data", "train", 1, "path")`)."""


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> PacedConfig:
    """Read a YAML file, apply `section.key=value` overrides (see `apply_override`), validate."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8") from err
    raw, lines = _read_yaml(text, str(path))
    for override in overrides:
        key = apply_override(raw, override)
        # A value set on the command line is reported as such, not at the file line it replaced.
        lines = {p: n for p, n in lines.items() if p[: len(key)] != key}
        lines[key] = _shown(override)
    return validate_config(raw, source=str(path), lines=lines)


def validate_config(
    raw: dict[str, Any], source: str = "<config>", lines: dict[KeyPath, int | str] | None = None
) -> PacedConfig:
    """Validate plain data as a `PacedConfig`. Each error is one line, `where: dotted.path: message`: `lines`
    maps key paths to their file line or to the `--set` that gave them, and `where` is the entry nearest the
    error (`source:LINE` or the `--set`), else `source`."""
    try:
        return PacedConfig.model_validate(raw)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems = [_problem(error, raw, source, lines or {}) for error in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"... and {len(errors) - MAX_PROBLEMS} more")
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None


def apply_override(raw: dict[str, Any], override: str) -> KeyPath:
    """Set `a.b.c=value` in nested plain data and return the path set. The value is parsed as YAML (`1e-5`,
    `true`, `[1, 2]`); a number indexes a list (`data.train.1.path=x`); missing sections are created."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    shown = _shown(override)
    if not sep or not all(parts):
        raise ConfigError(f"{shown}: expected dotted.path=value, e.g. learner.lr=1e-5")
    secret = tuple(parts) in _SECRET_PATHS
    try:
        # A secret is taken as written (YAML would read a token such as 123456 or 1e5 as a number); an
        # empty value or null unsets it.
        if secret:
            parsed = None if value.strip() in ("", "null", "~") else value.strip()
        else:
            parsed = yaml.load(value, Loader=_ConfigLoader) if value.strip() else ""
    except yaml.YAMLError as err:  # its full text quotes the value, which may be a secret
        problem = getattr(err, "problem", type(err).__name__)
        raise ConfigError(f"{shown}: the value is not valid YAML ({problem})") from err
    except (ValueError, TypeError) as err:  # a tag the value does not fit, e.g. !!int abc; never echo it
        raise ConfigError(f"{shown}: the value does not fit its YAML tag ({type(err).__name__})") from err
    path: list[str | int] = []
    node: Any = raw
    for depth, part in enumerate(parts):
        step: str | int = part
        if isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                indices = f"0 to {len(node) - 1}" if node else "none, it is empty"
                raise ConfigError(f"{shown}: {_dotted(path)} is a list; {part!r} is not one of its indices ({indices})")
            step = int(part)
        elif not isinstance(node, dict):
            value_shown = "***" if _holds_secret(tuple(path)) else repr(node)
            raise ConfigError(f"{shown}: {_dotted(path)} is a value ({value_shown}), not a section or a list")
        path.append(step)
        if depth == len(parts) - 1:
            node[step] = parsed
        else:
            child = node.get(step) if isinstance(node, dict) else node[step]
            if child is None:
                child = node[step] = {}
            node = child
    return tuple(path)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Plain config data (`PacedConfig.to_plain()`) as {dotted path: value}; an empty section is one `{}` value."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


def dump_config(cfg: PacedConfig) -> str:
    """The resolved config as YAML (secrets masked): what `paced config show` prints."""
    return yaml.safe_dump(cfg.to_plain(), sort_keys=False)


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without timestamps: `name: 2024-01-01` stays the string it looks like (a date
    object would fail as a name, and an impossible date such as 2024-13-01 would raise while loading)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[KeyPath, int | str]]:
    """The document as plain data, and the 1-based line of every key path in it. A key repeated in one
    mapping is an error (a YAML loader would silently keep the last), and so is a key that is not a
    string (`2024:` must be quoted to name an evaluation set)."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        lines, problems = _key_lines(node, source) if node is not None else ({}, [])
        raw = loader.construct_document(node) if node is not None and not problems else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from err
    except (ValueError, TypeError) as err:  # a value that does not fit its tag (!!int abc); it may be a secret
        raise ConfigError(f"{source}: a value does not fit its YAML tag ({type(err).__name__})") from err
    finally:
        loader.dispose()
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    return raw, lines


def _key_lines(root: yaml.Node, source: str) -> tuple[dict[KeyPath, int | str], list[str]]:
    """The line of every key path under `root`, and the problems with its keys. Runs on the node graph
    before construction, so merge keys (`<<: *base`) are still visible as such: a key given next to a
    merge overrides the merged one and is not a repeat. A node reached again through an alias is not
    walked again (its lines are those of its first appearance), so recursive or exponentially nested
    aliases cost nothing here."""
    lines: dict[KeyPath, int | str] = {}
    problems: list[str] = []
    seen: set[int] = set()

    def walk(node: yaml.Node, prefix: KeyPath) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            merged: list[yaml.Node] = []
            for key, value in node.value:
                line = key.start_mark.line + 1
                if key.tag == _MERGE_TAG:
                    merged.extend(value.value if isinstance(value, yaml.SequenceNode) else [value])
                    continue
                if key.tag != _STR_TAG:
                    where = _dotted(prefix) or "the top level"
                    if isinstance(key, yaml.ScalarNode):
                        problem = f"key {key.value!r} is not a name; quote it ('{key.value}')"
                    else:
                        problem = "a key here is a list or a mapping, not a name"
                    problems.append(f"{source}:{line}: {where}: {problem}")
                    continue
                path = (*prefix, key.value)
                if key.value in first:
                    again = f"key given twice (first on line {first[key.value]}); keep one"
                    problems.append(f"{source}:{line}: {_dotted(path)}: {again}")
                first.setdefault(key.value, line)
                lines[path] = line
                walk(value, path)
            for base in merged:  # keys given explicitly win over merged ones
                if isinstance(base, yaml.MappingNode):
                    for key, value in base.value:
                        path = (*prefix, str(key.value))
                        if key.value not in first:
                            lines.setdefault(path, key.start_mark.line + 1)
                            walk(value, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*prefix, i)] = item.start_mark.line + 1
                walk(item, (*prefix, i))

    walk(root, ())
    return lines, problems


def _problem(error: ErrorDetails, raw: dict[str, Any], source: str, lines: dict[KeyPath, int | str]) -> str:
    """One pydantic error as `where: dotted.path: message`; a cross-field error is placed at its fields."""
    fields = (error.get("ctx") or {}).get("fields")
    missing = error["type"] == "missing"
    if fields:
        paths: list[KeyPath] = [tuple(field.split(".")) for field in fields]
    else:
        paths = [_user_path(error["loc"], raw, keep_last=missing)]
    origins = [_missing_origin(path[:-1], lines) if missing else _origin(path, lines) for path in paths]
    # Of the fields involved, blame the one the command line set, if any.
    origin = next((o for o in origins if isinstance(o, str)), origins[0])
    where = origin if isinstance(origin, str) else f"{source}:{origin}" if origin else source
    message = error["msg"] + (_near_name(paths[0]) if error["type"] == "extra_forbidden" else "")
    return f"{where}: {_dotted(paths[0]) or '(top level)'}: {message}"


def _near_name(path: KeyPath) -> str:
    """For an unknown key, the setting of its section with the nearest name, as a hint ("" if none)."""
    section = tuple(part for part in path[:-1] if isinstance(part, str))
    # A union section lists every member's fields; the key itself may be one of another member.
    names = {setting[-1] for setting in _SETTINGS if setting[:-1] == section} - {path[-1]}
    close = difflib.get_close_matches(str(path[-1]), sorted(names), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _user_path(loc: tuple[str | int, ...], raw: dict[str, Any], keep_last: bool) -> KeyPath:
    """The path the user wrote, from a pydantic error location: parts the input does not contain (union
    tags such as `synthetic`, `two_stage` or `list`) are dropped, but the name of a missing field is kept."""
    path: list[str | int] = []
    node: Any = raw
    for i, part in enumerate(loc):
        if isinstance(node, dict) and node.get("type") == part and i < len(loc) - 1:
            continue  # pydantic's tag for the union member this section chose, e.g. `jsonl`, not a key of it
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif keep_last and i == len(loc) - 1:
            path.append(part)
    return tuple(path)


def _origin(path: KeyPath, lines: dict[KeyPath, int | str], inside: bool = True) -> int | str | None:
    """Where the value at `path` came from: a `--set` of it or (with `inside`) of one of its own fields,
    else the file line of it or of its nearest enclosing section (or a `--set` that gave that section)."""
    for key, where in lines.items():
        own_field = inside and len(key) == len(path) + 1 and key[: len(path)] == path
        if path and isinstance(where, str) and (key == path or own_field):
            return where
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return None


def _missing_origin(section: KeyPath, lines: dict[KeyPath, int | str]) -> int | str | None:
    """Where a field missing from `section` is to be blamed: a `--set` of the section's `type` (which
    chose what the section needs), else wherever the section itself came from (not a `--set` of a
    sibling field inside it)."""
    chosen_by = lines.get((*section, "type"))
    return chosen_by if isinstance(chosen_by, str) else _origin(section, lines, inside=False)


def _dotted(path: KeyPath) -> str:
    """`("data", "train", 1, "path")` -> `data.train[1].path`."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _setting_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, annotation) of every setting a `--set` can name under `model`: sections and fields, through
    union members and list and dict item types (list indices are not part of a path)."""
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        yield path, field.annotation
        for kind in _member_types(field.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _setting_paths(kind, path)


def _member_types(annotation: Any) -> Iterator[Any]:
    """The types inside an annotation: itself, union members, list and dict item types, Annotated's type."""
    yield annotation
    for arg in get_args(annotation):
        yield from _member_types(arg)


_SETTINGS = dict(_setting_paths(PacedConfig))
# The `SecretStr` settings, e.g. ("store", "url").
_SECRET_PATHS = frozenset(path for path, kind in _SETTINGS.items() if SecretStr in _member_types(kind))


def _holds_secret(path: KeyPath) -> bool:
    """Whether the value at `path` is a secret, a section holding one, or a part of one."""
    return any(secret[: len(path)] == path or path[: len(secret)] == secret for secret in _SECRET_PATHS)


# Settings whose values errors may quote.
_PLAIN_PATHS = frozenset(path for path in _SETTINGS if not _holds_secret(path))


def _shown(override: str) -> str:
    """An override as errors quote it, `--set key=value`. The value is shown for a known setting that is
    not a secret, and for an unknown key unless it looks like a mistyped secret (`dashboard.tokn=...`:
    a key in a section that holds secrets, or named like a credential)."""
    key, sep, value = override.partition("=")
    if not sep:
        return "--set ***"  # no `=`: the whole text may be a secret written as `key:value`
    parts = tuple(part for part in key.strip().split(".") if not part.isdigit())
    if parts not in _PLAIN_PATHS and (parts in _SETTINGS or _looks_secret(parts)):
        value = "***"
    return f"--set {key}{sep}{value}"


_SECRET_SECTIONS = frozenset(path[0] for path in _SECRET_PATHS)


def _looks_secret(parts: tuple[str, ...]) -> bool:
    """A key in a section that holds secrets, or named like a credential or a URL (which may embed one)."""
    return parts[0].lower() in _SECRET_SECTIONS or any(
        names_a_credential(part) or "url" in part.lower() for part in parts
    )


def add_set_option(parser: argparse.ArgumentParser, example: str = "learner.lr=1e-5") -> None:
    """The `--set KEY=VALUE` option of every command that loads a config (repeatable; into `args.overrides`)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override one setting by its dotted path, e.g. --set {example} (repeatable)",
    )
