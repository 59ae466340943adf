"""The ``alod`` command and the three stage scripts: parse, dispatch, print user errors. No logic here.

    alod demo                 all three stages on the built-in dataset (configs/demo.yaml)
    alod pretrain  ...        = accelerate launch train_part_entropy.py ...
    alod batches --ckpt ...   = python make_batches.py --ckpt ...
    alod cycles    ...        = python main_sample.py ...
    alod compare --strategies entropy,random --modes precomputed,adaptive --seeds 0,1,2
    alod evaluate --gt ... --pred ... --out metrics.json
    alod export --cycle N --format labelme [--preannotate]    a cycle's images for annotators
    alod import --cycle N PATH                                 their labels back (cycles.oracle: human)
    alod serve [--port 9090] | --continue [--allow-partial]   Label Studio ML backend over the waiting cycle

Every subcommand lives in :mod:`alod.commands` (its parser and its ``run``, registered in
``COMMANDS``); a stage script is the same command under the script's own name (:func:`script_main`).
"""
from __future__ import annotations

import argparse
import sys

from alod.commands import COMMANDS
from alod.utils import AlodError


def build_parser() -> argparse.ArgumentParser:
    """``alod`` with one subparser per registered command."""
    top = argparse.ArgumentParser(prog="alod", description="Active learning for object detection.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help)
        command.configure(p)
        p.set_defaults(func=command.run)
    return top


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return _guard(lambda: args.func(args))


def script_main(command: str, *, prog: str, argv=None) -> int:
    """A stage script (``train_part_entropy.py``, ...): subcommand ``command`` under its own name."""
    cmd = COMMANDS.get(command)
    parser = argparse.ArgumentParser(prog=prog)
    cmd.configure(parser)
    args = parser.parse_args(argv)
    return _guard(lambda: cmd.run(args))


def _guard(fn) -> int:
    """User errors (AlodError) print one clear line instead of a traceback."""
    try:
        rc = fn()
    except AlodError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"not built yet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(rc or 0)
