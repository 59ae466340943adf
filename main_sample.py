"""Thin alias of `alod cycles`; see `python main_sample.py --help` and `alod.cli`."""
import sys

from alod.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("cycles", prog="main_sample.py"))
