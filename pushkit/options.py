"""Command-line flags with environment twins, shared by every `pushscale` program.

`pushserver.settings` and `adapter.settings` each declare a tuple of `Option`s and call
`add_options` / `option_values`; their settings dataclasses validate the result. A flag
`--foo-bar` has the twin `<PREFIX>FOO_BAR`; a flag wins over its variable. Values stay strings
until `option_values`, so flags and variables share one conversion and one error message.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A flag, an environment variable or a combination of them is invalid."""


@dataclass(frozen=True)
class Option:
    flag: str
    convert: Callable[[str], Any]
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def env(self, prefix: str) -> str:
        return prefix + self.dest.upper()


LOG_LEVELS = ("debug", "info", "warning", "error")


def check_log_level(level: str) -> None:
    if level not in LOG_LEVELS:
        raise SettingsError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")


def comma_list(text: str) -> tuple[str, ...]:
    """`a, b,,c` → ("a", "b", "c")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def switch(text: str) -> bool:
    """A boolean flag's value: `--flag` alone, or true/false/1/0/yes/no in the environment."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def options_parser(
    prog: str, description: str, options: Sequence[Option], prefix: str
) -> argparse.ArgumentParser:
    """A program's parser: its description, then every option with its environment twin."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{description} Every flag has an environment twin {prefix}<FLAG_NAME>.",
    )
    add_options(parser, options, prefix)
    return parser


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option], prefix: str) -> None:
    for option in options:
        help_text = f"{option.help} [{option.env(prefix)}]"
        if option.convert is switch:
            parser.add_argument(option.flag, dest=option.dest, action="store_const", const="true",
                                help=help_text)  # fmt: skip
            # `--no-flag` turns off a switch that is on by default (or by its variable).
            negated = "--no-" + option.flag.removeprefix("--")
            parser.add_argument(negated, dest=option.dest, action="store_const", const="false",
                                help=argparse.SUPPRESS)  # fmt: skip
        else:
            parser.add_argument(option.flag, dest=option.dest, help=help_text)


def option_values(
    options: Sequence[Option], namespace: argparse.Namespace, environ: Mapping[str, str],
    prefix: str,
) -> dict[str, Any]:  # fmt: skip
    """The converted value of every option given as a flag or a variable (absent ones left out)."""
    values: dict[str, Any] = {}
    for option in options:
        flag_value = getattr(namespace, option.dest, None)
        if flag_value is not None:
            values[option.dest] = _convert(option, flag_value, option.flag)
        elif option.env(prefix) in environ:
            values[option.dest] = _convert(option, environ[option.env(prefix)], option.env(prefix))
    return values


def _convert(option: Option, text: str, origin: str) -> Any:
    try:
        return option.convert(text)
    except ValueError as exc:
        raise SettingsError(f"{origin}: invalid value {text!r} ({exc})") from exc


def read_secret_file(path: str, what: str) -> str:
    """A token from a file (a mounted Secret); never echoed in errors."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    if not secret:
        raise SettingsError(f"the {what} file {path} is empty")
    return secret
