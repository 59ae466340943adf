"""The commands that run the pipeline on a config: ``pretrain``, ``batches``, ``cycles`` (one stage
each, also the three top-level scripts), ``demo`` (all three in one process) and ``compare`` (the
comparison protocol, :mod:`alod.compare`).

The stages and orchestrators are imported inside each ``run`` function: they import torch, and
``alod --help`` or a bad config should answer without it.
"""
from __future__ import annotations

import argparse
import time

from alod.commands.common import Command, add_config_args, load_args_config
from alod.config import Config
from alod.strategies import STRATEGIES


# ------------------------------------------------------------------------------------ pretrain
def _pretrain_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Stage 1: train the scorer on the fixed pretraining partition (resumes from the last epoch). "
                     "Writes runs/<run>/pretrain/ and tensor_logs/<run>/pretrain/.")
    add_config_args(p)


def _pretrain(args) -> None:
    from alod.stages.pretrain import run_pretrain  # why: keeps torch out of alod --help and config checks

    ckpt = run_pretrain(load_args_config(args), progress=not args.no_progress)
    print(f"checkpoint: {ckpt}\nnext: python make_batches.py --ckpt {ckpt} --config {args.config}")


# ------------------------------------------------------------------------------------- batches
def _batches_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Stage 2: score every training image with a checkpoint and write runs/<run>/schedule.json "
                     "(resumes from the last complete score shard). Strategies: "
                     + ", ".join(sorted(STRATEGIES)) + "; parameters per strategy with "
                     "--set score.params.<strategy>.<param>=<value>.")
    p.add_argument("--ckpt", default=None,
                   help="scorer checkpoint (default: runs/<run>/pretrain/checkpoint_last.pt; "
                        "not read by strategies that need no model, such as random)")
    add_config_args(p)


def _batches(args) -> None:
    from alod.stages.scoring import run_scoring  # why: keeps torch out of alod --help and config checks

    out = run_scoring(load_args_config(args), ckpt=args.ckpt, progress=not args.no_progress)
    print(f"schedule: {out}\nnext: python main_sample.py --config {args.config}")


# -------------------------------------------------------------------------------------- cycles
def _cycles_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Stage 3: run the cycles (select, label, retrain from scratch, evaluate, log); rerun to "
                     "resume. Writes runs/<run>/cycles/ and tensor_logs/<run>/.")
    p.add_argument("--schedule", default=None, help="schedule.json (default: runs/<run>/schedule.json)")
    p.add_argument("--max-cycles", type=int, default=None, help="stop after this many cycles in total")
    add_config_args(p)


def _cycles(args) -> None:
    from alod.stages.cycles import run_cycles, summary_table  # why: keeps torch out of alod --help

    cfg = load_args_config(args)
    state = run_cycles(cfg, schedule_file=args.schedule, progress=not args.no_progress, max_cycles=args.max_cycles)
    print(summary_table(state))
    print(f"TensorBoard: tensorboard --logdir {cfg.run.tb_dir}")


# ---------------------------------------------------------------------------------------- demo
def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Pretrain, score and run the cycles in one process (default: configs/demo.yaml)."
    add_config_args(p)


def _demo(args) -> None:
    run_demo(load_args_config(args), progress=not args.no_progress)


def run_demo(cfg: Config, *, progress: bool = True, log=print) -> dict:
    """``alod demo``: pretrain, score, run the cycles in one process (an orchestrator: stages never
    call each other; a rerun resumes every stage where it stopped); logs the per-cycle table.

    Returns:
        The cycles stage's state (``state.json``'s content).
    """
    from alod.engine import make_accelerator  # why: keeps torch out of alod --help and config checks
    from alod.stages.cycles import run_cycles, summary_table  # why: as above
    from alod.stages.pretrain import run_pretrain  # why: as above
    from alod.stages.scoring import run_scoring  # why: as above

    t0 = time.perf_counter()
    acc = make_accelerator(amp=cfg.train.amp)
    log(f"[1/3] pretraining the scorer on {cfg.pretrain.fraction:.0%} of the training set")
    ckpt = run_pretrain(cfg, accelerator=acc, progress=progress, log=log)
    log(f"[2/3] scoring the training pool ({cfg.score.strategy}) and writing the schedule")
    run_scoring(cfg, ckpt=ckpt, accelerator=acc, progress=progress, log=log)
    log("[3/3] active-learning cycles")
    state = run_cycles(cfg, accelerator=acc, progress=progress, log=log)
    log(summary_table(state))
    log(f"done in {time.perf_counter() - t0:.0f}s. Curves: tensorboard --logdir {cfg.run.tb_dir}")
    return state


# ------------------------------------------------------------------------------------- compare
def _csv(kind):
    def parse(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        try:
            return [kind(x) for x in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def _compare_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Run the comparison protocol of the config's compare: section (every strategy and the random "
                     "baseline in every mode and seed from the same cycle-1 images, a random run at equal boxes per "
                     "strategy run, the full-data line) and write runs/<run>/compare/{report.md, report.json, "
                     "curves.png, run.json}. Rerun the same command to resume; finished runs are reused.")
    p.add_argument("--strategies", type=_csv(str), default=None,
                   help="comma-separated strategies, random included (default: compare.strategies)")
    p.add_argument("--modes", type=_csv(str), default=None,
                   help="comma-separated selection modes: precomputed, adaptive (default: compare.modes)")
    p.add_argument("--seeds", type=_csv(int), default=None, help="comma-separated seeds (default: compare.seeds)")
    p.add_argument("--full-seeds", type=_csv(int), default=None,
                   help="seeds of the full-data line; empty string for none (default: compare.full_seeds)")
    p.add_argument("--no-full", action="store_true", help="skip the full-data line (same as --full-seeds '')")
    p.add_argument("--no-equal-boxes", action="store_true", help="skip the random runs at equal boxes")
    p.add_argument("--variant", action="append", default=None, metavar="NAME=KEY=VALUE[;KEY=VALUE...]",
                   help="an extra strategy <strategy>+NAME per strategy but random, with these config overrides, "
                        "e.g. div=score.batch=kmeanspp; repeatable; replaces compare.variants")
    add_config_args(p)


def _compare(args) -> None:
    from alod.compare import resolve, run_compare  # why: keeps torch out of alod --help and config checks

    cfg = resolve(load_args_config(args), strategies=args.strategies, modes=args.modes, seeds=args.seeds,
                  full_seeds=[] if args.no_full else args.full_seeds,
                  equal_boxes=False if args.no_equal_boxes else None, variants=args.variant)
    report = run_compare(cfg, progress=not args.no_progress)
    for entry in report["comparisons"]:
        print(entry["sentence"])


#: The commands of this module, registered by :mod:`alod.commands`.
ENTRIES = {
    "demo": Command("run all three stages on the built-in dataset", _demo_parser, _demo),
    "pretrain": Command("stage 1: train the scorer (= train_part_entropy.py)", _pretrain_parser, _pretrain),
    "batches": Command("stage 2: score the pool and write the schedule (= make_batches.py)", _batches_parser, _batches),
    "cycles": Command("stage 3: run the active-learning cycles (= main_sample.py)", _cycles_parser, _cycles),
    "compare": Command("strategies against random over seeds: report and curves", _compare_parser, _compare),
}
