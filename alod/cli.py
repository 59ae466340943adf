"""The ``alod`` command and the three stage scripts. No logic here: parse, load config, call one function.

    alod demo                 all three stages on the built-in dataset (configs/demo.yaml)
    alod pretrain  ...        = accelerate launch train_part_entropy.py ...
    alod batches --ckpt ...   = python make_batches.py --ckpt ...
    alod cycles    ...        = python main_sample.py ...
    alod evaluate --gt ... --pred ... --out metrics.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alod.utils import AlodError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "demo.yaml"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="YAML config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _load(args):
    from alod.config import load_config

    return load_config(args.config, args.overrides)


def pretrain_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_part_entropy.py",
        description="Stage 1: train the scorer on the fixed pretraining partition (resumes from the last epoch). "
        "Writes runs/<run>/pretrain/ and tensor_logs/<run>/pretrain/.",
    )
    _add_config_args(p)
    return p


def batches_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="make_batches.py",
        description="Stage 2: score every training image with a checkpoint and write runs/<run>/schedule.json "
        "(resumes from the last complete score shard).",
    )
    p.add_argument("--ckpt", default=None,
                   help="scorer checkpoint (default: runs/<run>/pretrain/checkpoint_last.pt)")
    _add_config_args(p)
    return p


def cycles_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main_sample.py",
        description="Stage 3: run the cycles of the schedule (retrain from scratch, evaluate, log); rerun to resume. "
        "Writes runs/<run>/cycles/ and tensor_logs/<run>/.",
    )
    p.add_argument("--schedule", default=None, help="schedule.json (default: runs/<run>/schedule.json)")
    p.add_argument("--max-cycles", type=int, default=None, help="stop after this many cycles in total")
    _add_config_args(p)
    return p


def run_pretrain_cli(argv=None) -> int:
    args = pretrain_parser().parse_args(argv)
    return _guard(lambda: _pretrain(args))


def _pretrain(args):
    from alod.pretrain import run_pretrain

    ckpt = run_pretrain(_load(args), progress=not args.no_progress)
    print(f"checkpoint: {ckpt}\nnext: python make_batches.py --ckpt {ckpt} --config {args.config}")


def run_batches_cli(argv=None) -> int:
    args = batches_parser().parse_args(argv)
    return _guard(lambda: _batches(args))


def _batches(args):
    from alod.scoring import run_scoring

    out = run_scoring(_load(args), ckpt=args.ckpt, progress=not args.no_progress)
    print(f"schedule: {out}\nnext: python main_sample.py --config {args.config}")


def run_cycles_cli(argv=None) -> int:
    args = cycles_parser().parse_args(argv)
    return _guard(lambda: _cycles(args))


def _cycles(args):
    from alod.cycles import run_cycles

    cfg = _load(args)
    state = run_cycles(cfg, schedule_file=args.schedule, progress=not args.no_progress, max_cycles=args.max_cycles)
    _print_summary(state)
    print(f"TensorBoard: tensorboard --logdir {cfg.run.tb_dir}")


def _print_summary(state: dict) -> None:
    print("cycle  labeled  mAP50   mAP")
    for c in state["completed"]:
        print(f"{c['cycle']:>5}  {c['pool_size']:>7}  {c['mAP50']:.3f}  {c['mAP']:.3f}")


def _demo(args):
    import time

    from alod.cycles import run_cycles
    from alod.engine import make_accelerator
    from alod.pretrain import run_pretrain
    from alod.scoring import run_scoring

    cfg = _load(args)
    progress = not args.no_progress
    t0 = time.perf_counter()
    acc = make_accelerator(amp=cfg.train.amp)
    print(f"[1/3] pretraining the scorer on {cfg.pretrain.fraction:.0%} of the training set")
    ckpt = run_pretrain(cfg, accelerator=acc, progress=progress)
    print(f"[2/3] scoring the training pool ({cfg.score.strategy}) and writing the schedule")
    run_scoring(cfg, ckpt=ckpt, accelerator=acc, progress=progress)
    print("[3/3] active-learning cycles")
    state = run_cycles(cfg, accelerator=acc, progress=progress)
    _print_summary(state)
    print(f"done in {time.perf_counter() - t0:.0f}s. Curves: tensorboard --logdir {cfg.run.tb_dir}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = argparse.ArgumentParser(prog="alod", description="Active learning for object detection.")
    sub = top.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run all three stages on the built-in dataset",
                          description="Pretrain, score and run the cycles in one process (default: configs/demo.yaml).")
    _add_config_args(demo)
    sub.add_parser("pretrain", help="stage 1 (= train_part_entropy.py)", add_help=False)
    sub.add_parser("batches", help="stage 2 (= make_batches.py)", add_help=False)
    sub.add_parser("cycles", help="stage 3 (= main_sample.py)", add_help=False)
    ev = sub.add_parser("evaluate", help="mAP of predictions against ground truth (BDD100K or COCO files)")
    from alod.commands import evaluate as evaluate_cmd

    evaluate_cmd.configure_parser(ev)
    if argv and argv[0] in ("pretrain", "batches", "cycles"):
        return {"pretrain": run_pretrain_cli, "batches": run_batches_cli, "cycles": run_cycles_cli}[argv[0]](argv[1:])
    args = top.parse_args(argv)
    if args.command == "demo":
        return _guard(lambda: _demo(args))
    return _guard(lambda: evaluate_cmd.run(args))


def _guard(fn) -> int:
    """User errors (AlodError) print one clear line instead of a traceback."""
    try:
        rc = fn()
    except AlodError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(rc or 0)
