"""Stage 3: the active-learning cycles, the labeled pool and the resumable run state.

For cycle ``n``: add ``schedule.cycles[n].images`` to the labeled pool, build a fresh detector
(random init, seeded by ``run.seed + n``: retrained from scratch, never fine-tuned), train it for
``cycles.epochs`` epochs, evaluate on the validation split, log to TensorBoard.

State: ``runs/<run>/cycles/state.json`` is rewritten atomically at every step (selection added,
cycle finished), and each cycle's training checkpoints after every epoch in
``runs/<run>/cycles/cycle_NN/``. Killing the process and rerunning the same command resumes at the
interrupted cycle (from its last finished epoch) and ends with the same pools and state as an
uninterrupted run.

The pool records, per image, the cycle that added it and where its labels come from
(``"dataset"`` today; a human annotation round would record its tool), so an adaptive mode or a
human oracle can extend the loop without changing the state format.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alod.config import Config
from alod.utils import AlodError, atomic_write_json, seed_everything, sha256_file

STATE_FORMAT = "alod.cycles/1"


@dataclass
class LabeledPool:
    """Labeled images in the order they were added, with the cycle and label source of each."""

    names: list[str] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in set(self.names)

    def add(self, names: list[str], *, cycle: int, source: str = "dataset") -> None:
        present = set(self.names)
        dup = [n for n in names if n in present]
        if dup or len(set(names)) != len(names):
            raise AlodError(f"cycle {cycle}: images already labeled or repeated: {dup[:3]}")
        self.names += list(names)
        self.cycles += [int(cycle)] * len(names)
        self.sources += [source] * len(names)

    def added_in(self, cycle: int) -> list[str]:
        return [n for n, c in zip(self.names, self.cycles) if c == cycle]

    def state_dict(self) -> dict:
        return {"names": list(self.names), "cycles": list(self.cycles), "sources": list(self.sources)}

    def load_state_dict(self, state: dict) -> None:
        self.names = list(state["names"])
        self.cycles = [int(c) for c in state["cycles"]]
        self.sources = list(state["sources"])


def cycles_dir(cfg: Config) -> Path:
    return cfg.run_dir / "cycles"


def state_path(cfg: Config) -> Path:
    return cycles_dir(cfg) / "state.json"


def load_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AlodError(f"{path} is not valid JSON ({e}); it is written atomically, so something else changed it") from e
    if state.get("format") != STATE_FORMAT:
        raise AlodError(f"{path}: not an {STATE_FORMAT} state file")
    return state


def run_cycles(
    cfg: Config,
    *,
    schedule_file: str | Path | None = None,
    accelerator=None,
    progress: bool = True,
    max_cycles: int | None = None,
    log=print,
) -> dict:
    """Run (or resume) the cycles of the schedule. Returns the final state dict.

    ``max_cycles`` stops after that many cycles in total (the state says where to continue).
    """
    from alod.data.dataset import DetectionDataset
    from alod.data.sources import ensure_synthetic, load_split
    from alod.data.transforms import get_transform
    from alod.engine import fit, make_accelerator, predict
    from alod.evaluation import evaluate_detections, json_safe
    from alod.models import build_detector
    from alod.pretrain import fit_settings, write_resolved_config
    from alod.schedule import check_schedule_matches, load_schedule
    from alod.scoring import schedule_path
    from alod.tb import RunLogger

    schedule_file = Path(schedule_file) if schedule_file else schedule_path(cfg)
    schedule = load_schedule(schedule_file)
    accelerator = accelerator or make_accelerator(amp=cfg.train.amp)
    main = accelerator.is_main_process
    if main:
        ensure_synthetic(cfg.data, progress=progress)
        write_resolved_config(cfg)
    accelerator.wait_for_everyone()
    quiet = (lambda *_: None) if not main else log
    train = load_split(cfg.data, "train", run_dir=cfg.run_dir, log=quiet)
    val = load_split(cfg.data, "val", run_dir=cfg.run_dir, log=quiet)
    check_schedule_matches(schedule, train.fingerprint(), path=schedule_file)
    name_to_pos = train.name_to_index()

    n_cycles = len(schedule["cycles"])
    if cfg.cycles.num_cycles is not None:
        n_cycles = min(n_cycles, cfg.cycles.num_cycles)
    sched_sha = sha256_file(schedule_file)
    spath = state_path(cfg)
    state = load_state(spath)
    if state is not None and state["schedule_sha256"] != sched_sha:
        raise AlodError(
            f"{spath} belongs to another schedule ({state['schedule']}); use another run.name "
            f"or delete {cycles_dir(cfg)} to start the cycles over"
        )
    if state is None:
        state = {
            "format": STATE_FORMAT,
            "schedule": str(schedule_file),
            "schedule_sha256": sched_sha,
            "pool": LabeledPool().state_dict(),
            "completed": [],
        }
    pool = LabeledPool()
    pool.load_state_dict(state["pool"])

    def save_state() -> None:
        state["pool"] = pool.state_dict()
        if main:
            atomic_write_json(spath, state)

    logger = RunLogger(cfg.tb_run_dir, jsonl=cycles_dir(cfg) / "metrics.jsonl") if main else None
    vis_idx = list(range(min(cfg.cycles.num_vis_images, len(val))))
    done = {c["cycle"] for c in state["completed"]}
    ran = 0
    for entry in schedule["cycles"][:n_cycles]:
        n = int(entry["cycle"])
        if n in done:
            continue
        if max_cycles is not None and len(done) + ran >= max_cycles:
            break
        if not pool.added_in(n):
            missing = [x for x in entry["images"] if x not in name_to_pos]
            if missing:
                raise AlodError(f"schedule cycle {n} names images not in the training set: {missing[:3]}")
            pool.add(entry["images"], cycle=n, source="dataset")
            save_state()
        positions = np.array(sorted(name_to_pos[x] for x in pool.names), dtype=np.int64)
        cdir = cycles_dir(cfg) / f"cycle_{n:02d}"
        if main:
            cdir.mkdir(parents=True, exist_ok=True)
        log(f"cycle {n}/{n_cycles}: {len(pool)} labeled images ({len(entry['images'])} new, rule {entry['rule']})")
        seed_everything(cfg.run.seed + n + 1000 * accelerator.process_index)
        model = build_detector(cfg.model, num_classes=train.num_classes)
        cycle_logger = RunLogger(cfg.tb_run_dir / f"cycle_{n:02d}") if main else None

        def on_epoch_end(epoch: int, logs: dict, _n=n, _cl=cycle_logger) -> None:
            _cl.scalars({k: v for k, v in logs.items() if k != "seconds"}, step=epoch + 1, prefix="train/")
            _cl.flush()

        result = fit(
            model,
            DetectionDataset(train.subset(positions), transform=get_transform(cfg.train.transforms)),
            epochs=cfg.cycles.epochs,
            **fit_settings(cfg.train),
            seed=cfg.run.seed + n,
            accelerator=accelerator,
            ckpt_dir=cdir,
            config=cfg.to_dict(),
            extra={"stage": "cycle", "cycle": n, "pool_size": len(pool)},
            on_epoch_end=on_epoch_end if main else None,
            desc=f"cycle {n}",
            progress=progress,
        )
        dets = predict(model, DetectionDataset(val), batch_size=cfg.train.eval_batch_size, accelerator=accelerator,
                       amp=cfg.train.amp, desc=f"cycle {n} evaluate", progress=progress)
        if main:
            metrics = evaluate_detections(val, dets)
            atomic_write_json(cdir / "metrics.json", json_safe(metrics))
            # mAP50 against the cycle number and against the labeled-pool size.
            logger.scalars({"mAP50": metrics["mAP50"], "mAP": metrics["mAP"]}, step=n,
                           record={"cycle": n, "pool_size": len(pool)})
            logger.scalars({"mAP50": metrics["mAP50"]}, step=len(pool), prefix="by_pool_size/")
            logger.scalars({k: v for k, v in metrics.items() if k.startswith("AP50/")}, step=n, prefix="per_class/")
            last = result["history"][-1] if result["history"] else {}
            logger.scalars({k: last[k] for k in last if k not in ("epoch", "seconds")}, step=n, prefix="train_final/")
            vis = DetectionDataset(val)
            logger.images_with_boxes("val_predictions", [vis.load_image(i) for i in vis_idx],
                                     [dets[i] for i in vis_idx], val.classes, step=n)
            logger.flush()
            cycle_logger.close()
            log(f"cycle {n}: val mAP50 {metrics['mAP50']:.3f}, mAP {metrics['mAP']:.3f} ({len(pool)} labeled)")
        else:
            metrics = {}
        metrics = _broadcast(accelerator, metrics)
        state["completed"].append({
            "cycle": n,
            "pool_size": len(pool),
            "epochs": result["epochs"],
            "mAP50": metrics.get("mAP50"),
            "mAP": metrics.get("mAP"),
        })
        done.add(n)
        ran += 1
        save_state()
        accelerator.wait_for_everyone()
    if logger is not None:
        logger.close()
    return state


def _broadcast(accelerator, obj):
    if accelerator.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]
