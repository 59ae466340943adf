"""Thin CLI; see `alod.cli` and `python main_sample.py --help`."""
import sys

from alod.cli import run_cycles_cli

if __name__ == "__main__":
    sys.exit(run_cycles_cli())
