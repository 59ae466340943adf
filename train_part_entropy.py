"""Thin CLI; see `alod.cli` and `python train_part_entropy.py --help`."""
import sys

from alod.cli import run_pretrain_cli

if __name__ == "__main__":
    sys.exit(run_pretrain_cli())
