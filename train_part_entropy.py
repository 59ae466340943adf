"""Thin alias of `alod pretrain`; see `python train_part_entropy.py --help` and `alod.cli`."""
import sys

from alod.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("pretrain", prog="train_part_entropy.py"))
