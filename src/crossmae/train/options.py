"""A dataclass of settings, set by a YAML file and overridden from the command line.

Every field becomes a flag (`--mask-ratio` or `--mask_ratio`) whose help is the field's
`metadata["help"]`; values given on the command line are parsed with the field's type, so
YAML files and flags accept the same spellings (`1e-4`, `true`, `none`, `0.9,0.95`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from crossmae.errors import CrossMAEError

T = TypeVar("T")
_NONE = ("none", "null", "~")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def setting(
    default: Any, help: str, group: str = "", metavar: str | None = None, shown: str | None = None
) -> Any:
    """A dataclass field with its command-line help: the section it belongs to, the
    placeholder for its value, and how to show its default (when not the value itself)."""
    meta = {"help": help, "group": group, "metavar": metavar, "shown": shown}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class DashesFormatter(argparse.HelpFormatter):
    """Help that lists each flag once, with dashes (the underscore spelling also works)."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        saved = action.option_strings
        shown = [s for s in saved if "_" not in s] or saved
        if isinstance(action, _BoolAction):  # the value goes with the plain flag alone
            plain, *negated = shown
            return ", ".join([f"{plain} [{{true,false}}]", *negated])
        action.option_strings = shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of `cls`; only flags given on the command line land in the args."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        title = f.metadata.get("group", "")
        group = groups.get(title)
        if group is None:
            group = groups[title] = parser.add_argument_group(title) if title else parser
        tp = hints[f.name]
        flags = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            flags.append(f"--{f.name}")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = f.metadata.get("shown") or _show(default)
        kwargs: dict[str, Any] = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": f"{f.metadata.get('help', '')} (default: {shown})",
            "metavar": f.metadata.get("metavar") or _metavar(tp),
        }
        if tp is bool:
            kwargs["metavar"] = "{true,false}"
            group.add_argument(
                *flags, *[f"--no-{s[2:]}" for s in flags], action=_BoolAction, nargs="?",
                **kwargs,
            )  # fmt: skip
        elif _strip_optional(tp) is bool:  # true, false or auto; alone, the flag means true
            group.add_argument(*flags, nargs="?", const="true", **kwargs)
        elif typing.get_origin(tp) is dict:
            group.add_argument(*flags, nargs="+", action="extend", **kwargs)  # repeats add up
        else:
            group.add_argument(*flags, **kwargs)


class _BoolAction(argparse.Action):
    """`--flag` or `--flag true` sets True; `--no-flag` or `--flag false` sets False."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None) -> None:
        negated = (option or "").startswith("--no")
        if values is None:
            setattr(namespace, self.dest, not negated)
        elif negated:
            parser.error(f"{option} takes no value, got {values!r}")
        else:
            setattr(namespace, self.dest, values)  # checked with the other values


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def _metavar(tp: Any) -> str:
    base = _strip_optional(tp)
    if typing.get_origin(base) is Literal:
        return "{" + ",".join(map(str, typing.get_args(base))) + "}"
    if typing.get_origin(base) is dict:
        return "KEY=VALUE"
    if typing.get_origin(base) in (list, tuple):
        return "A,B"
    if typing.get_origin(base) in (Union, types.UnionType):
        return " or ".join(_metavar(member) for member in typing.get_args(base))
    if base is bool:
        return "{true,false,auto}" if base is not tp else "{true,false}"
    return {int: "N", float: "X"}.get(base, "VALUE")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def coerce(name: str, value: Any, tp: Any, flag: str | None = None) -> Any:
    """`value` (from YAML or a flag) as type `tp`, or a CrossMAEError naming the setting
    (`flag`, by default `--name`)."""
    flag = flag or f"--{name.replace('_', '-')}"
    optional = typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(
        tp
    )
    base = _strip_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in _NONE):
        if optional:
            return None
        raise CrossMAEError(f"{flag} needs a value")
    if optional and base in (bool, int, float) and value == "auto":
        return None
    origin = typing.get_origin(base)
    try:
        if base is Any:
            return value
        if origin is Literal:
            choices = typing.get_args(base)
            if value not in choices:
                raise ValueError(f"must be one of {', '.join(map(str, choices))}")
            return value
        if base is bool:
            return _to_bool(value)
        if base is int:
            if isinstance(value, str) and "e" in value.lower():  # 1e5 samples per epoch
                value = float(value)
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("must be a whole number")
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError("must be a number")
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("must be a finite number")
            return number
        if base is str:
            if isinstance(value, (list, tuple, dict, bool)):
                raise ValueError("must be text")
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = [v for v in value.strip("[]()").split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise ValueError(f"is not a valid {_metavar(base)}")
            items = typing.get_args(base)
            if origin is tuple and len(value) != len(items):
                raise ValueError(f"must be {len(items)} values")
            kinds = items if origin is tuple else items * len(value)
            coerced = [coerce(name, v.strip() if isinstance(v, str) else v, kind, flag)
                       for v, kind in zip(value, kinds, strict=True)]  # fmt: skip
            return tuple(coerced) if origin is tuple else coerced
        if origin in (Union, types.UnionType):  # e.g. int | tuple[int, int]: the first that fits
            for member in typing.get_args(base):
                with contextlib.suppress(CrossMAEError):
                    return coerce(name, value, member, flag)
            raise ValueError(f"is not a valid {_metavar(base)}")
        if origin is dict:
            return _to_dict(value)
    except (TypeError, ValueError) as err:
        plain = isinstance(err, ValueError) and "must" in str(err)  # ours, not int()'s
        reason = str(err) if plain else f"is not a valid {_metavar(base)}"
        raise CrossMAEError(f"{flag} {reason}, got {value!r}") from None
    raise TypeError(f"setting {name} has an unsupported type {tp}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("must be true or false")


def _to_dict(value: Any) -> dict[str, Any]:
    """A mapping from YAML, or `KEY=VALUE` words from the command line (values as YAML)."""
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"must have names as keys, not {key!r}")
        return dict(value)
    words = [value] if isinstance(value, str) else list(value)
    out: dict[str, Any] = {}
    for word in words:
        key, sep, raw = str(word).partition("=")
        if not sep or not key:
            raise ValueError("must be KEY=VALUE pairs")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CrossMAEError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CrossMAEError(f"config file {path} is not valid YAML: {err}") from None
    except (UnicodeDecodeError, OSError) as err:
        raise CrossMAEError(f"config file {path} cannot be read as UTF-8 text: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CrossMAEError(f"config file {path} must hold a mapping of settings")
    for key in data:
        if not isinstance(key, str):
            raise CrossMAEError(f"config file {path} has a setting named {key!r}, not a name")
    return data


def check_output_folder(folder: str | Path, flag: str = "--output-dir") -> None:
    """A folder to write into: neither it nor a folder above it may be a file (found now,
    not as a traceback after the work is done)."""
    target = Path(folder).expanduser()
    for path in (target, *target.parents):
        if path.exists():
            if not path.is_dir():
                where = "is a file" if path == target else f"is under the file {path}"
                raise CrossMAEError(f"{flag} {folder} {where}, not a folder")
            return


def build_dataclass(cls: type[T], *layers: dict[str, Any], source: str = "") -> T:
    """`cls()` updated by each mapping in turn (YAML, then flags), with types checked.

    A mapping-valued setting (`model_overrides`) is updated key by key, not replaced: a flag
    `--model-overrides depth=6` changes the recipe's (or the demo's) model in one setting."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in hints or name not in names:
                close = [n for n in names if n.startswith(name[:4])]
                hint = f" (did you mean {close[0]}?)" if close else ""
                where = f" in {source}" if source else ""
                raise CrossMAEError(f"unknown setting {key!r}{where}{hint}")
            value = coerce(name, value, hints[name])
            if isinstance(value, dict) and isinstance(values.get(name), dict):
                value = {**values[name], **value}
            values[name] = value
    return cls(**values)
