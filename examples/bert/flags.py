"""Command lines made from settings dataclasses, for the training script and the experiments.

A field carries its help (:func:`opt`); :func:`add_dataclass` makes every field a flag typed
from its annotation, and :func:`to_argv` gives the flags back for a set of settings. Importing
this module imports neither JAX nor a model library.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

TRUE = ("1", "true", "t", "yes", "y", "on")
FALSE = ("0", "false", "f", "no", "n", "off")


def opt(default: Any, help: str) -> Any:
    """A settings field with its ``--help`` text (a list default: a fresh copy each time)."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def flag_name(name: str) -> str:
    """The flag of a field: ``--batch-size`` for ``batch_size``."""
    return "--" + name.replace("_", "-")


def parse_bool(text: str) -> bool:
    """A boolean flag's value: true, yes, 1, on (and t, y) or false, no, 0, off (f, n)."""
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _typed(hint: Any) -> dict[str, Any]:
    """``add_argument``'s keywords for a field's annotation (``X | None`` is an X)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    args = typing.get_args(hint)
    if hint is bool:  # --flag, or --flag false
        return {"nargs": "?", "const": True, "type": parse_bool, "metavar": "BOOL"}
    if typing.get_origin(hint) is Literal:
        return {"choices": args, "type": type(args[0])}
    if typing.get_origin(hint) is list:
        return {"nargs": "+", "type": args[0]}
    return {"type": hint}


def add_dataclass(parser: argparse.ArgumentParser, cls: type, *, defaults: bool = True) -> None:
    """Every field of the dataclass ``cls`` as a flag (``--batch-size`` or ``--batch_size``),
    typed from its annotation, with its help and default (said in the help unless None).

    With ``defaults=False`` a flag not given is left out of the parsed namespace, which then
    holds what was typed and only that.
    """
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        help = field.metadata.get("help", "")
        if defaults and default not in (None, ""):
            help += f" (default: {default})"
        parser.add_argument(
            *dict.fromkeys([flag_name(field.name), f"--{field.name}"]), dest=field.name,
            help=help, default=default if defaults else argparse.SUPPRESS,
            **_typed(hints[field.name]),
        )  # fmt: skip


def to_argv(cls: type, settings: Mapping[str, Any]) -> list[str]:
    """The flags that give ``settings`` (fields of the dataclass ``cls``): one for each that
    differs from its default; a None is left out (no flag gives it).

    Example:
      >>> @dataclasses.dataclass
      ... class Settings:
      ...     batch_size: int = 32
      ...     shuffle: bool = True
      >>> to_argv(Settings, {"batch_size": 8, "shuffle": False})
      ['--batch-size', '8', '--shuffle', 'false']
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    argv = []
    for name, value in settings.items():
        if value == defaults[name] or value is None:
            continue
        if isinstance(value, bool):
            argv += [flag_name(name)] if value else [flag_name(name), "false"]
        else:
            argv += [flag_name(name), str(value)]
    return argv
