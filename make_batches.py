"""Thin CLI; see `alod.cli` and `python make_batches.py --help`."""
import sys

from alod.cli import run_batches_cli

if __name__ == "__main__":
    sys.exit(run_batches_cli())
