"""What every ``alod`` subcommand shares: the command registry and the config arguments.

A command is a :class:`Command` (its help line, ``configure(parser)`` and ``run(args)``) registered
in :data:`COMMANDS` under the name the user types. Commands hold no logic: parse, load the config
(:func:`load_args_config`: the config checked by every registry before any work), call one function.
"""
from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from alod.config import Config
from alod.stages.setup import load_checked_config
from alod.utils import Registry

REPO_CONFIGS = Path(__file__).resolve().parent.parent.parent / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "demo.yaml"


@dataclass(frozen=True)
class Command:
    """One subcommand: ``configure(parser)`` adds its arguments, ``run(args) -> int | None`` runs it."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


#: ``alod <name>`` -> its :class:`Command`, in the order ``alod --help`` lists them.
COMMANDS: Registry[Command] = Registry("command")


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--set KEY=VALUE`` (repeatable) and ``--no-progress``."""
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="YAML config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def load_args_config(args: argparse.Namespace) -> Config:
    """The config of ``--config`` and ``--set``, checked (:func:`alod.stages.setup.load_checked_config`)."""
    return load_checked_config(args.config, args.overrides)


def command_line(name: str, args: argparse.Namespace, *rest: str, raw: str = "") -> str:
    """``alod <name>`` with the config and overrides this command was given, then ``rest`` (quoted)
    and ``raw`` (a placeholder, unquoted)."""
    parts = ["alod", name, "--config", args.config]
    for o in args.overrides:
        parts += ["--set", o]
    return " ".join(shlex.quote(p) for p in [*parts, *rest]) + (f" {raw}" if raw else "")
