"""Stage 3: the active-learning cycles, as four explicit steps with a resumable run state.

A cycle ``n`` is ``select -> label -> train -> evaluate``:

1. **select** (:func:`select_step`): the selector (``cycles.selector``, :mod:`alod.cycle.selection`)
   names the images; they are recorded in the state.
2. **label** (:func:`label_step`): the oracle (``cycles.oracle``, :mod:`alod.cycle.oracles`) provides
   their labels and they join the labeled pool with their cycle and label source. An oracle that
   has no labels yet (a human one) stops the loop here; rerunning continues from this step.
3. **train** (:func:`train_step`): with ``cycles.init: scratch`` (the original's protocol) a fresh
   detector (random init, seeded by ``run.seed + n``: retrained from scratch, never fine-tuned);
   with ``warm``, cycle ``n > 1`` starts from cycle ``n - 1``'s final weights. It trains for
   ``cycles.epochs`` epochs on the pool, or with ``cycles.stop: plateau`` until the validation
   mAP50 (every ``cycles.eval_every`` epochs) has not improved ``cycles.patience`` times in a row,
   ending with the best weights (:class:`alod.engine.Plateau`); checkpoints after every epoch in
   ``runs/<run>/cycles/cycle_NN/``. Plateau stopping chooses the epoch on the split it reports, as
   the original chose its stop point from the validation curves: that mAP50 is optimistic by the
   choice (README "Speed").
4. **evaluate** (:func:`evaluate_step`): validation mAP to ``metrics.json``, ``metrics.jsonl``
   and TensorBoard.

State: ``runs/<run>/cycles/state.json`` (:data:`STATE_FORMAT`) is rewritten atomically after every
step and records, per cycle, the step reached (:data:`STEPS`), the images selected and the rule that
chose them, the wall seconds of each step, what labeling cost when the oracle counts it
(``label_work``: ``cycles.oracle: simulated_boxes``), and after evaluation the pool size, epochs and
mAP; the pool records per image the cycle that added it and where its labels came from. Killing the process and rerunning the same command
resumes at the interrupted step (training from its last finished epoch) and ends with the same
pools, state and metrics as an uninterrupted run.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from alod.config import Config
from alod.cycle.oracles import build_oracle
from alod.cycle.pool import LabeledPool
from alod.cycle.selection import build_selector
from alod.data.dataset import DetectionDataset
from alod.engine import Plateau
from alod.models import load_checkpoint
from alod.stages.setup import StageContext, evaluate_detector, open_stage, train_detector
from alod.tb import RunLogger
from alod.utils import AlodError, atomic_write_json

STATE_FORMAT = "alod.cycles/2"
#: The steps of a cycle, in order; a cycle's record holds the last one finished.
STEPS = ("selected", "labeled", "trained", "evaluated")


# ------------------------------------------------------------------------------------ run state
def load_state(path: Path) -> dict | None:
    """The cycles state at ``path`` (``None`` if there is none); an ``alod.cycles/1`` file is upgraded."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AlodError(f"{path} is not valid JSON ({e}); it is written atomically, so something else changed it") from e
    if isinstance(state, dict) and state.get("format") == "alod.cycles/1":
        state = _upgrade_v1(state)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise AlodError(f"{path}: not an {STATE_FORMAT} state file")
    return state


def _upgrade_v1(old: dict) -> dict:
    """``alod.cycles/1`` kept finished cycles in ``completed`` and a pool; each becomes a cycle record."""
    pool = LabeledPool()
    pool.load_state_dict(old["pool"])
    done = {c["cycle"]: c for c in old["completed"]}
    records = []
    for n in sorted(set(pool.cycles)):
        images = pool.added_in(n)
        rec = {"cycle": n, "step": "evaluated" if n in done else "labeled", "rule": None, "selected": images}
        if n in done:
            rec.update({k: done[n][k] for k in ("pool_size", "epochs", "mAP50", "mAP")})
        records.append(rec)
    return {
        "format": STATE_FORMAT,
        "selector": {"name": "precomputed", "schedule": old["schedule"], "schedule_sha256": old["schedule_sha256"]},
        "oracle": "simulated",
        "pool": old["pool"],
        "cycles": records,
    }


def finished_cycles(state: dict) -> list[dict]:
    """The records of the evaluated cycles, in order (each with ``cycle``, ``pool_size``, ``epochs``,
    ``mAP50``, ``mAP``)."""
    return [c for c in state["cycles"] if c["step"] == "evaluated"]


def summary_table(state: dict) -> str:
    """One line per evaluated cycle: labeled images, mAP50, mAP."""
    lines = ["cycle  labeled  mAP50   mAP"]
    for c in finished_cycles(state):
        lines.append(f"{c['cycle']:>5}  {c['pool_size']:>7}  {c['mAP50']:.3f}  {c['mAP']:.3f}")
    return "\n".join(lines)


@dataclass
class CycleRun:
    """What the steps share: the stage context, the splits, the selector, the oracle, the pool, the state."""

    ctx: StageContext
    train: object
    val: object
    selector: object
    oracle: object
    pool: LabeledPool
    state: dict
    logger: object = None  # RunLogger for tensor_logs/<run>/ (main process only)

    def step_of(self, cycle: int) -> str | None:
        """The last step cycle ``cycle`` finished (one of :data:`STEPS`), ``None`` if not started."""
        return next((rec["step"] for rec in self.state["cycles"] if rec["cycle"] == cycle), None)

    def record(self, cycle: int) -> dict:
        """Cycle ``cycle``'s record in the state (created when the cycle starts)."""
        for rec in self.state["cycles"]:
            if rec["cycle"] == cycle:
                return rec
        rec = {"cycle": cycle, "step": None}
        self.state["cycles"].append(rec)
        return rec

    def save(self) -> None:
        self.state["pool"] = self.pool.state_dict()
        if self.ctx.is_main:
            atomic_write_json(self.ctx.layout.cycles_state, self.state)


# ---------------------------------------------------------------------------------------- steps
def _add_seconds(rec: dict, step: str, t0: float) -> None:
    """Wall seconds spent in ``step`` (accumulated over resumes): the compute a comparison reports."""
    seconds = rec.setdefault("seconds", {})
    seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - t0, 3)


def select_step(run: CycleRun, n: int) -> None:
    t0 = time.perf_counter()
    sel = run.selector.select(n, run.pool)
    already = [x for x in sel.images if x in set(run.pool.names)]
    if already:
        raise AlodError(f"cycle {n}: the selector chose images that are already labeled: {already[:3]}")
    rec = run.record(n)
    rec.update({"step": "selected", "rule": sel.rule, "selected": list(sel.images)})
    _add_seconds(rec, "select", t0)
    run.save()


def label_step(run: CycleRun, n: int) -> bool:
    """Add the cycle's labels to the pool. ``False``: the oracle has none yet (the loop stops here)."""
    rec = run.record(n)
    labels = run.oracle.label(n, rec["selected"])
    if labels is None:
        return False
    run.pool.add(labels.names, cycle=n, source=labels.source)
    if labels.work is not None:  # the oracle counted what labeling cost (simulated_boxes)
        rec["label_work"] = labels.work
    rec["step"] = "labeled"
    run.save()
    return True


def _train(run: CycleRun, n: int):
    """Train cycle ``n``'s detector (or restore it from its finished checkpoint)."""
    ctx, cfg = run.ctx, run.ctx.cfg
    cycle_logger = None
    if ctx.is_main:
        ctx.layout.cycle_dir(n).mkdir(parents=True, exist_ok=True)
        cycle_logger = RunLogger(ctx.layout.cycle_tb(n))

    def on_epoch_end(epoch: int, logs: dict) -> None:
        cycle_logger.scalars({k: v for k, v in logs.items() if k != "seconds"}, step=epoch + 1, prefix="train/")
        cycle_logger.flush()

    try:
        return train_detector(
            ctx, run.oracle.training_index(run.pool), num_classes=run.train.num_classes,
            model_seed=cfg.run.seed + n + 1000 * ctx.accelerator.process_index, epochs=cfg.cycles.epochs,
            seed=cfg.run.seed + n, ckpt_dir=ctx.layout.cycle_dir(n), desc=f"cycle {n}", on_epoch_end=on_epoch_end,
            extra={"stage": "cycle", "cycle": n, "pool_size": len(run.pool)},
            init_weights=_init_weights(run, n), plateau=_plateau(run, n),
        )
    finally:
        if cycle_logger is not None:
            cycle_logger.close()


def _init_weights(run: CycleRun, n: int) -> dict | None:
    """``cycles.init: warm``: cycle ``n - 1``'s final weights (the best ones under plateau stopping)."""
    if run.ctx.cfg.cycles.init != "warm" or n == 1:
        return None
    return load_checkpoint(run.ctx.layout.cycle_checkpoint(n - 1))["model"]


def _plateau(run: CycleRun, n: int):
    """``cycles.stop: plateau``: early stopping on the validation mAP50, each evaluation kept in
    ``cycle_NN/metrics_epoch_EEE.json``."""
    cfg = run.ctx.cfg.cycles
    if cfg.stop != "plateau":
        return None

    def val_map50(model, epoch: int) -> float:
        metrics, _ = evaluate_detector(run.ctx, model, run.val, metrics_path=run.ctx.layout.cycle_epoch_metrics(n, epoch),
                                       desc=f"cycle {n} epoch {epoch} evaluate")
        return metrics["mAP50"]

    return Plateau(val_map50, every=cfg.eval_every, patience=cfg.patience)


def train_step(run: CycleRun, n: int):
    """Train; returns ``(model, fit result)`` for the evaluate step."""
    t0 = time.perf_counter()
    model, result = _train(run, n)
    rec = run.record(n)
    rec.update({"step": "trained", "epochs": result["epochs"], **_train_record(run, n, result)})
    _add_seconds(rec, "train", t0)
    run.save()
    return model, result


def _train_record(run: CycleRun, n: int, result: dict) -> dict:
    """What the state records of a training beyond its epochs: how it started and, with plateau
    stopping, the epoch whose weights it kept and every evaluation."""
    cfg = run.ctx.cfg.cycles
    rec = {"init": "warm" if cfg.init == "warm" and n > 1 else "scratch"}
    if "plateau" in result:
        p = result["plateau"]
        rec["stop"] = {"rule": "plateau", "best_epoch": None if p["best_epoch"] is None else p["best_epoch"] + 1,
                       "evals": [[e + 1, s] for e, s in p["evals"]]}
    return rec


def evaluate_step(run: CycleRun, n: int, model, result: dict) -> None:
    t0 = time.perf_counter()
    ctx = run.ctx
    metrics, dets = evaluate_detector(ctx, model, run.val, metrics_path=ctx.layout.cycle_metrics(n),
                                      desc=f"cycle {n} evaluate")
    if ctx.is_main:
        _log_cycle(run, n, metrics, dets, result)
    rec = run.record(n)
    rec.update({"step": "evaluated", "pool_size": len(run.pool), "epochs": result["epochs"],
                "mAP50": metrics.get("mAP50"), "mAP": metrics.get("mAP")})
    _add_seconds(rec, "evaluate", t0)
    run.save()
    ctx.wait()


def _log_cycle(run: CycleRun, n: int, metrics: dict, dets: list[dict], result: dict) -> None:
    logger, size = run.logger, len(run.pool)
    # mAP50 against the cycle number and against the labeled-pool size.
    logger.scalars({"mAP50": metrics["mAP50"], "mAP": metrics["mAP"]}, step=n, record={"cycle": n, "pool_size": size})
    logger.scalars({"mAP50": metrics["mAP50"]}, step=size, prefix="by_pool_size/")
    logger.scalars({k: v for k, v in metrics.items() if k.startswith("AP50/")}, step=n, prefix="per_class/")
    last = result["history"][-1] if result["history"] else {}
    logger.scalars({k: last[k] for k in last if k not in ("epoch", "seconds")}, step=n, prefix="train_final/")
    readable = [i for i, d in enumerate(dets) if "unreadable" not in d]
    vis_idx = readable[: run.ctx.cfg.cycles.num_vis_images]
    vis = DetectionDataset(run.val)
    # Ground truth next to the predictions, so that misses show (a thin box with no thick one on it).
    targets = [dict(zip(("boxes", "labels", "ignore"), run.val.annotations(i))) for i in vis_idx]
    logger.images_with_boxes("val_predictions", [vis.load_image(i) for i in vis_idx], [dets[i] for i in vis_idx],
                             run.val.classes, step=n, targets=targets)
    logger.flush()
    run.ctx.log(f"cycle {n}: val mAP50 {metrics['mAP50']:.3f}, mAP {metrics['mAP']:.3f} ({size} labeled)")


def run_cycle(run: CycleRun, n: int, n_cycles: int) -> bool:
    """Run cycle ``n`` from the step after the one recorded. ``False``: it stopped waiting for labels."""
    step = run.step_of(n)
    if step is None:
        select_step(run, n)
        step = "selected"
    if step == "selected":
        if not label_step(run, n):
            run.ctx.log(f"cycle {n}: {len(run.record(n)['selected'])} images selected; waiting for their labels")
            if run.ctx.cfg.cycles.oracle == "human":
                run.ctx.log(_label_commands(run, n))
            return False
    rec = run.record(n)
    if rec["step"] != "evaluated":
        run.ctx.log(f"cycle {n}/{n_cycles}: {len(run.pool)} labeled images "
                    f"({len(rec['selected'])} new, rule {rec['rule']})")
        # After "trained" this restores the finished model from its checkpoint without training.
        model, result = train_step(run, n) if rec["step"] == "labeled" else _train(run, n)
        evaluate_step(run, n, model, result)
    return True


def _label_commands(run: CycleRun, n: int) -> str:
    """The exact commands that hand cycle ``n``'s images to annotators and bring their labels back.

    ``--config`` is the resolved config this run wrote (``cycles/config.yaml``), so the commands work
    whatever ``--set`` overrides the run was started with; ``--preannotate`` only when there is a
    model to pre-annotate with (cycle ``n - 1``'s, for cycle 1 the scorer, or ``model.weights_path``).
    """
    layout, cfg = run.ctx.layout, run.ctx.cfg
    config = shlex.quote(str(layout.stage_config("cycles")))
    model = layout.cycle_checkpoint(n - 1) if n > 1 else layout.pretrain_checkpoint
    pre = " --preannotate" if model.is_file() or cfg.model.weights_path else ""
    folder = shlex.quote(str(layout.cycle_export_dir(n, "labelme")))
    return "\n".join([
        f"cycle {n}: to label them (other tools: --format cvat, coco or labelstudio):",
        f"  1. alod export --config {config} --cycle {n} --format labelme{pre}",
        f"  2. label the images in the tool: labelme {folder}",
        f"  3. alod import --config {config} --cycle {n} {folder}",
        "  4. rerun this command: it continues from the label step",
    ])


# --------------------------------------------------------------------------------------- driver
def run_cycles(
    cfg: Config,
    *,
    schedule_file: str | Path | None = None,
    accelerator=None,
    progress: bool = True,
    max_cycles: int | None = None,
    log=print,
) -> dict:
    """Run (or resume) the cycles. Returns the final state dict.

    ``schedule_file``: the schedule of the ``precomputed`` selector (default: the run's).
    ``max_cycles`` stops after that many evaluated cycles in total (the state says where to continue).
    """
    with open_stage(cfg, "cycles", accelerator=accelerator, amp=cfg.train.amp, progress=progress, log=log) as ctx:
        ctx.ensure_dataset()
        return _run_cycles(ctx, schedule_file=schedule_file, max_cycles=max_cycles)


def _run_cycles(ctx: StageContext, *, schedule_file, max_cycles: int | None) -> dict:
    cfg = ctx.cfg
    train, val = ctx.load_split("train"), ctx.load_split("val")
    selector = build_selector(cfg.cycles.selector, ctx=ctx, train=train, schedule_file=schedule_file)
    oracle = build_oracle(cfg.cycles.oracle, ctx=ctx, train=train)

    spath = ctx.layout.cycles_state
    state = load_state(spath)
    identity = selector.identity()
    if state is not None and not _same_selection(state["selector"], identity):
        raise AlodError(
            f"{spath} belongs to another selection ({state['selector']}); use another run.name "
            f"or delete {ctx.layout.cycles_dir} to start the cycles over"
        )
    if state is None:
        state = {"format": STATE_FORMAT, "selector": identity, "oracle": cfg.cycles.oracle,
                 "pool": LabeledPool().state_dict(), "cycles": []}
    pool = LabeledPool()
    pool.load_state_dict(state["pool"])

    n_cycles = selector.num_cycles()
    if cfg.cycles.num_cycles is not None:
        n_cycles = min(n_cycles, cfg.cycles.num_cycles)
    logger = None
    if ctx.is_main:
        logger = RunLogger(ctx.layout.cycles_tb, jsonl=ctx.layout.cycles_log)
    run = CycleRun(ctx=ctx, train=train, val=val, selector=selector, oracle=oracle, pool=pool, state=state,
                   logger=logger)
    try:
        for n in range(1, n_cycles + 1):
            if run.step_of(n) == "evaluated":
                continue
            if max_cycles is not None and len(finished_cycles(state)) >= max_cycles:
                break
            if not run_cycle(run, n, n_cycles):
                break
    finally:
        if logger is not None:
            logger.close()
    return state


def _same_selection(old: dict, new: dict) -> bool:
    """The selector identity decides; for a schedule, its bytes (sha256) and not its path."""
    if old.get("name") != new.get("name"):
        return False
    keys = (set(old) | set(new)) - {"schedule"}
    return all(old.get(k) == new.get(k) for k in keys)
