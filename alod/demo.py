"""``alod demo``: the three stages in one process on the built-in dataset (an orchestrator).

Orchestrators chain stages; stages never call each other. A rerun resumes every stage where it
stopped (pretraining at its last epoch, scoring at its last shard, the cycles at their last step).
"""
from __future__ import annotations

import time

from alod.config import Config
from alod.stages.cycles import run_cycles, summary_table
from alod.stages.pretrain import run_pretrain
from alod.stages.scoring import run_scoring


def run_demo(cfg: Config, *, progress: bool = True, log=print) -> dict:
    """Pretrain, score, run the cycles; print the per-cycle table. Returns the cycles state."""
    from alod.engine import make_accelerator

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
