"""Thin alias of `alod batches`; see `python make_batches.py --help` and `alod.cli`."""
import sys

from alod.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("batches", prog="make_batches.py"))
