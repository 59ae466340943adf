"""Training and inference on one or many processes. Accelerate lives here and nowhere else.

* :func:`make_accelerator` picks the device: GPUs when there are any, else CPU processes. Under
  ``accelerate launch --multi_gpu --num_processes N`` on a machine without a GPU, ``cpu=True``
  gives a real gloo process group (``--cpu`` on the launcher silently runs one process).
* :func:`fit` trains with SGD + one-cycle LR + gradient clipping in steps: :func:`resume` from
  ``checkpoint_last.pt``, then per epoch :func:`train_one_epoch`, the early-stopping evaluation
  (:func:`plateau_step`) and :func:`save_checkpoint` (model, optimizer, scheduler, epoch, config,
  extra; atomically, from the main process only). :func:`alod.models.load_checkpoint` reads one.
* :func:`iter_predictions` / :func:`predict` run batched inference, each process on its share;
  with ``mc=MCSampling(...)`` Monte Carlo dropout inference (:func:`alod.models.predict_mc`).

Data order is computed here, not by a sampler: epoch ``e`` visits ``permutation(seed, e)``, and
rank ``r`` of ``W`` takes every ``W``-th batch-sized slice, padded by wrapping so every rank runs
the same number of steps (DDP needs that). A resumed run therefore sees exactly the batches an
uninterrupted run would have seen.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from alod.data.dataset import collate_detection
from alod.layout import CHECKPOINT_BEST, CHECKPOINT_LAST
from alod.models import MCSampling, load_checkpoint, predict_mc
from alod.utils import AlodError, atomic_torch_save, load_torch_file

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


#: ``train.amp`` / ``score.amp``: ``false`` off; ``true`` or ``"gpu"`` bf16 autocast on GPUs only;
#: ``"all"`` on CPUs too (pays only where the CPU has native bf16: AVX-512 BF16 or AMX; README "Speed").
AMP_MODES = (False, True, "gpu", "all")


def autocast_on(device_type: str, amp: bool | str) -> bool:
    """Whether ``amp`` (one of :data:`AMP_MODES`) turns bf16 autocast on for ``device_type``."""
    if amp not in AMP_MODES:
        raise AlodError(f"amp must be one of false, true, gpu, all; got {amp!r}")
    if device_type == "cuda":
        return bool(amp)
    return amp == "all" and device_type == "cpu"


def make_accelerator(*, amp: bool | str = False):
    """An ``Accelerator`` on the GPUs if any, else on CPU (one or several processes), with bf16
    autocast where ``amp`` (:func:`autocast_on`) asks for it."""
    cpu = not torch.cuda.is_available()
    mixed = "bf16" if autocast_on("cpu" if cpu else "cuda", amp) else "no"
    return Accelerator(cpu=cpu, mixed_precision=mixed)


def epoch_batches(n_items: int, *, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[np.ndarray]:
    """The batches (positions into the dataset) that ``rank`` trains on in ``epoch``.

    All ranks get the same number of batches; the permutation depends only on (seed, epoch).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    per_step = batch_size * world
    n_steps = max(1, math.ceil(n_items / per_step))
    need = n_steps * per_step
    if need > n_items:  # wrap so every rank has full, equal-count batches
        order = np.concatenate([order, np.resize(order, need - n_items)])
    return [order[s * per_step + rank * batch_size : s * per_step + (rank + 1) * batch_size] for s in range(n_steps)]


def steps_per_epoch(n_items: int, *, batch_size: int, world: int) -> int:
    return max(1, math.ceil(n_items / (batch_size * world)))


def one_cycle_pct_start(warmup_fraction: float, total_steps: int) -> float:
    """The ``pct_start`` given to ``OneCycleLR`` for a warm-up share of ``total_steps``.

    torch's ``OneCycleLR`` divides by zero when its warm-up works out to exactly one step
    (``pct_start * total_steps == 1``: e.g. 36 images, batch 8, 2 epochs, warm-up 0.1) and when the
    warm-up takes every step. Small pools and short cycles are normal in active learning, so these
    cases are moved off the singularity: a 0.1% longer warm-up, and at most 99.9% of the steps. Every
    other case gets ``max(1e-3, warmup_fraction)`` unchanged.
    """
    pct = min(max(1e-3, float(warmup_fraction)), 0.999)
    if abs(pct * total_steps - 1.0) < 1e-6:
        pct *= 1.001
    return pct


def make_lr_scheduler(optimizer, *, lr: float, total_steps: int, warmup_fraction: float):
    """One-cycle learning rate (cosine warm-up from ``lr / 25`` to ``lr``, cosine decay to ``lr / 25e3``) over
    ``total_steps`` optimizer steps; works for every ``total_steps >= 1``."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=total_steps,
        pct_start=one_cycle_pct_start(warmup_fraction, total_steps),
        anneal_strategy="cos",
        div_factor=25.0,
        final_div_factor=1e3,
    )


def fit(model: torch.nn.Module, dataset: Dataset, *, epochs: int, batch_size: int, lr: float, momentum: float = 0.9,
        weight_decay: float = 1e-4, warmup_fraction: float = 0.1, grad_clip_norm: float | None = 5.0,
        min_steps: int = 0, num_workers: int = 0, seed: int = 0, accelerator=None, ckpt_dir: str | Path | None = None,
        config: dict | None = None, extra: dict | None = None,
        on_epoch_end: Callable[[int, dict], None] | None = None, plateau: Plateau | None = None,
        desc: str = "train", progress: bool = True) -> dict:
    """Train ``model`` on ``dataset`` for ``epochs`` epochs; resume from ``ckpt_dir`` if possible.

    The steps, each a function: plan the steps (:func:`plan_steps`), resume (:func:`resume`), then per
    epoch :func:`train_one_epoch`, the plateau evaluation (:func:`plateau_step`) and
    :func:`save_checkpoint`.

    Args:
        dataset: yields ``(image float[3, H, W], target)``, see :class:`DetectionDataset`.
        min_steps: if ``epochs`` passes over a small dataset are fewer optimizer steps than this,
            the number of epochs is raised so that a cycle with 40 labeled images still trains.
        ckpt_dir: where ``checkpoint_last.pt`` is written after each epoch (main process only).
        on_epoch_end: called on the main process with ``(epoch, logs)``; ``logs`` holds the mean
            of each loss over the epoch, ``loss``, ``lr`` and ``seconds`` (and ``val_score`` on
            the epochs ``plateau`` evaluates).
        plateau: stop early (:class:`Plateau`): evaluate every ``every`` epochs, stop after
            ``patience`` evaluations without gain, and end with the best evaluated weights (also in
            ``checkpoint_best.pt``). Needs ``ckpt_dir``: the stopping state lives in the checkpoint,
            so a resumed run stops where an uninterrupted one would.

    Returns:
        ``{"epochs": int, "steps": int, "history": [logs per epoch run now], "resumed_from": int,
        "unreadable": {image_id: reason}}`` (images skipped because they failed to decode, seen by
        this process; only with a dataset that skips them). ``epochs`` is the number of epochs
        trained: with ``plateau``, the epoch it stopped after; ``plateau`` then holds its state
        (``best``, ``best_epoch``, ``evals`` as ``[epoch, score]`` pairs, ``stopped``).
    """
    accelerator = accelerator or make_accelerator()
    n = len(dataset)
    if n == 0:
        raise AlodError(f"{desc}: the training set is empty")
    epochs, total_steps = plan_steps(n, epochs=epochs, batch_size=batch_size, world=accelerator.num_processes,
                                     min_steps=min_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = make_lr_scheduler(optimizer, lr=lr, total_steps=total_steps, warmup_fraction=warmup_fraction)
    ckpt_path = Path(ckpt_dir) / CHECKPOINT_LAST if ckpt_dir else None
    if plateau is not None and ckpt_path is None:
        raise AlodError(f"{desc}: plateau stopping needs a checkpoint folder (it keeps the best weights there)")
    start_epoch, stop = resume(ckpt_path, model, optimizer, scheduler, total_steps=total_steps, epochs=epochs,
                               plateau=plateau)
    model, optimizer = accelerator.prepare(model, optimizer)
    history: list[dict] = []
    unreadable: dict[int, str] = {}  # image_id -> reason, for images skipped (data.strict: false)
    for epoch in range(start_epoch, epochs):
        logs = train_one_epoch(model, optimizer, scheduler, dataset, accelerator=accelerator, epoch=epoch,
                               epochs=epochs, batch_size=batch_size, seed=seed, num_workers=num_workers,
                               grad_clip_norm=grad_clip_norm, unreadable=unreadable, desc=desc, progress=progress)
        if stop is not None and plateau.due(epoch, epochs):
            stop = plateau_step(plateau, stop, model, accelerator=accelerator, epoch=epoch, epochs=epochs,
                                logs=logs, best_path=ckpt_path.parent / CHECKPOINT_BEST)
        history.append({"epoch": epoch, **logs})
        if ckpt_path is not None and accelerator.is_main_process:
            save_checkpoint(ckpt_path, accelerator.unwrap_model(model), optimizer, scheduler, epoch=epoch,
                            epochs=epochs, total_steps=total_steps, config=config, extra=extra, plateau=stop)
        accelerator.wait_for_everyone()
        if on_epoch_end is not None and accelerator.is_main_process:
            on_epoch_end(epoch, logs)
        if stop is not None and stop["stopped"]:
            break
    result = {"epochs": epochs, "steps": total_steps, "history": history, "resumed_from": start_epoch,
              "unreadable": unreadable}
    if stop is not None:
        result["plateau"] = stop
        result["epochs"] = int(stop["trained_epochs"])
    return result


def plan_steps(n_items: int, *, epochs: int, batch_size: int, world: int, min_steps: int = 0) -> tuple[int, int]:
    """``(epochs, total optimizer steps)``: ``epochs`` raised until the run has ``min_steps`` steps."""
    spe = steps_per_epoch(n_items, batch_size=batch_size, world=world)
    if min_steps and epochs * spe < min_steps:
        epochs = math.ceil(min_steps / spe)
    return epochs, epochs * spe


def resume(ckpt_path: Path | None, model, optimizer, scheduler, *, total_steps: int, epochs: int,
           plateau: Plateau | None) -> tuple[int, dict | None]:
    """Load ``ckpt_path`` (when it exists) into the model, optimizer and scheduler.

    Returns:
        ``(start_epoch, plateau state)``: ``0`` and a fresh state without a checkpoint; ``epochs``
        when the checkpoint says the run stopped early (it holds the best weights); the plateau state
        is ``None`` without ``plateau``.

    Raises:
        AlodError: the checkpoint was written for another number of total steps.
    """
    stop = plateau.initial_state() if plateau is not None else None
    if ckpt_path is None or not ckpt_path.is_file():
        return 0, stop
    state = load_checkpoint(ckpt_path)
    if state.get("total_steps") != total_steps:
        raise AlodError(
            f"{ckpt_path} was written for {state.get('total_steps')} total steps, this run has {total_steps} "
            "(different epochs, batch size, dataset or number of processes); delete it to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    start_epoch = int(state["epoch"]) + 1
    if stop is not None:
        stop = dict(state.get("plateau") or stop)
        if stop.get("stopped"):
            start_epoch = epochs  # it stopped early: the checkpoint holds the best weights
    return start_epoch, stop


def train_one_epoch(model, optimizer, scheduler, dataset: Dataset, *, accelerator, epoch: int, epochs: int,
                    batch_size: int, seed: int, num_workers: int, grad_clip_norm: float | None,
                    unreadable: dict[int, str], desc: str, progress: bool) -> dict:
    """One pass over this process's share of ``dataset`` (:func:`epoch_batches`), stepping the
    optimizer and the scheduler once per batch; records images that failed to decode in ``unreadable``.

    Returns:
        The epoch's logs: the mean of each of :data:`LOSS_KEYS` and ``loss`` over the batches
        (averaged over processes), ``lr`` (the last) and ``seconds``.

    Raises:
        AlodError: the loss became NaN or infinite.
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    # Same RNG stream for augmentation whether or not the run was resumed.
    torch.manual_seed(seed * 1000 + epoch * 17 + rank)
    model.train()
    batches = epoch_batches(len(dataset), batch_size=batch_size, seed=seed, epoch=epoch, rank=rank, world=world)
    loader = DataLoader(dataset, batch_sampler=[b.tolist() for b in batches], collate_fn=collate_detection,
                        num_workers=num_workers)
    sums = {k: 0.0 for k in LOSS_KEYS}
    total, seen, t0 = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{epochs}",
               disable=not (progress and accelerator.is_main_process), unit="batch", leave=False)
    for images, targets in bar:
        images, targets = _readable(images, targets, unreadable)
        if not images:  # every image of this batch failed to decode: nothing to learn from
            scheduler.step()  # keep the step count (and so a resumed run) exactly as planned
            continue
        losses, loss = _train_step(model, optimizer, scheduler, images, targets, accelerator=accelerator,
                                   grad_clip_norm=grad_clip_norm, where=f"{desc}: loss", epoch=epoch)
        for k in LOSS_KEYS:
            sums[k] += float(losses[k].detach())
        total += float(loss.detach())
        seen += 1
        bar.set_postfix(loss=f"{total / seen:.3f}", lr=f"{scheduler.get_last_lr()[0]:.4f}")
    logs = {k: sums[k] / max(1, seen) for k in LOSS_KEYS}
    logs["loss"] = total / max(1, seen)
    logs["lr"] = float(scheduler.get_last_lr()[0])
    logs["seconds"] = time.perf_counter() - t0
    # Average the epoch's losses over processes so the logged number is the whole batch's.
    mean = accelerator.reduce(torch.tensor([logs[k] for k in (*LOSS_KEYS, "loss")], device=accelerator.device), "mean")
    for k, v in zip((*LOSS_KEYS, "loss"), mean.tolist()):
        logs[k] = float(v)
    return logs


def _train_step(model, optimizer, scheduler, images: list, targets: list, *, accelerator,
                grad_clip_norm: float | None, where: str, epoch: int) -> tuple[dict, torch.Tensor]:
    """One optimizer step on ``images`` (``[3, H, W]`` tensors) and ``targets``; returns the loss dict
    and their sum (the loss that was back-propagated)."""
    images = [im.to(accelerator.device) for im in images]
    targets = [{k: (v.to(accelerator.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
    with accelerator.autocast():
        losses = model(images, targets)
    loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise AlodError(f"{where} became {loss.item()} at epoch {epoch + 1}; lower train.lr or keep "
                        "train.grad_clip_norm set")
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    if grad_clip_norm:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    scheduler.step()
    return losses, loss


def plateau_step(plateau: Plateau, stop: dict, model, *, accelerator, epoch: int, epochs: int, logs: dict,
                 best_path: Path) -> dict:
    """Evaluate after ``epoch`` (every process: prediction is split over them), record ``val_score`` in
    ``logs``, keep the best weights in ``best_path``; at the end load the best weights into ``model``.

    Returns:
        The plateau state after this evaluation (``stopped`` set when training ends).
    """
    net = accelerator.unwrap_model(model)
    logs["val_score"] = score = float(plateau.evaluate(net, epoch + 1))
    stop = plateau.update(stop, epoch=epoch, score=score)
    if stop["best_epoch"] == epoch and accelerator.is_main_process:
        # Written before checkpoint_last records it: a kill between the two repeats this
        # epoch, which finds the same score and writes the same file.
        atomic_torch_save({"model": net.state_dict(), "epoch": epoch, "score": score}, best_path)
    if stop["stopped"] or epoch == epochs - 1:
        stop["stopped"] = True
        accelerator.wait_for_everyone()  # the main process may have just written the best weights
        if stop["best_epoch"] is not None:  # None: no evaluation gave a number (NaN): keep the last
            net.load_state_dict(load_torch_file(best_path, what="checkpoint")["model"])
    return stop


def save_checkpoint(path: Path, model, optimizer, scheduler, *, epoch: int, epochs: int, total_steps: int,
                    config: dict | None, extra: dict | None, plateau: dict | None) -> None:
    """Write the training state after ``epoch`` to ``path`` atomically (call on the main process):
    ``model``, ``optimizer``, ``scheduler`` state dicts, ``epoch``, ``epochs``, ``total_steps``,
    ``config``, ``extra`` and, with early stopping, ``plateau``."""
    atomic_torch_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "epochs": epochs,
            "total_steps": total_steps,
            "config": config or {},
            "extra": extra or {},
            **({"plateau": plateau} if plateau is not None else {}),
        },
        path,
    )


class Plateau:
    """Early stopping on a validation score (higher is better), for :func:`fit`.

    ``evaluate(model, epoch) -> float`` (``epoch`` 1-based) runs after epochs ``every, 2 * every,
    ...`` and after the last epoch; training stops after ``patience`` evaluations in a row without a
    score above the best (a tie or NaN is no gain), and the model ends with the best evaluated weights. The learning-rate schedule stays the one
    planned for all ``epochs`` (a stopped run ends with its learning rate where it was). The state
    is a plain dict saved in the checkpoint.
    """

    def __init__(self, evaluate: Callable[[torch.nn.Module, int], float], *, every: int = 1, patience: int = 2):
        if every < 1 or patience < 1:
            raise AlodError(f"plateau: every ({every}) and patience ({patience}) must be >= 1")
        self.evaluate, self.every, self.patience = evaluate, every, patience

    @staticmethod
    def initial_state() -> dict:
        return {"best": None, "best_epoch": None, "since_best": 0, "evals": [], "stopped": False,
                "trained_epochs": 0}

    def due(self, epoch: int, epochs: int) -> bool:
        return (epoch + 1) % self.every == 0 or epoch == epochs - 1

    def update(self, state: dict, *, epoch: int, score: float) -> dict:
        """The state after evaluating ``score`` at ``epoch`` (a new dict; ``stopped`` set on a plateau)."""
        state = {**state, "evals": [*state["evals"], [epoch, score]], "trained_epochs": epoch + 1}
        if not math.isnan(score) and (state["best"] is None or score > state["best"]):
            state.update(best=score, best_epoch=epoch, since_best=0)
        else:
            state["since_best"] += 1
            state["stopped"] = state["since_best"] >= self.patience
        return state


def _readable(images: list, targets: list, unreadable: dict) -> tuple[list, list]:
    """Drop the items whose image failed to decode, recording ``image_id -> reason`` in ``unreadable``."""
    if all(im is not None for im in images):
        return images, targets
    keep = []
    for im, t in zip(images, targets):
        if im is None:
            unreadable[int(t["image_id"])] = t["unreadable"]
        else:
            keep.append((im, t))
    return [im for im, _ in keep], [t for _, t in keep]


def _to_numpy(det: dict) -> dict:
    return {k: v.detach().float().cpu().numpy() if k != "labels" else v.cpu().numpy().astype(np.int64) for k, v in det.items()}


def _unreadable_detections(reason: str, mc: MCSampling | None = None) -> dict:
    det = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64), "scores": np.zeros(0, np.float32),
           "probs": np.zeros((0, 0), np.float32), "unreadable": reason}
    if mc is not None:
        det["mc_probs"] = np.zeros((0, mc.passes, 0), np.float32)
    return det


@torch.no_grad()
def iter_predictions(
    model: torch.nn.Module,
    dataset: Dataset,
    indices,
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    amp: bool | str = False,
    mc: MCSampling | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(i, detections)`` for each ``i`` in ``indices``, in order.

    ``detections`` holds numpy ``boxes float32[N, 4]``, ``labels int64[N]``, ``scores float32[N]``
    and ``probs float32[N, C + 1]`` (background first), see :class:`alod.models.ProbRoIHeads`. An
    image the dataset could not decode (and was told to skip) yields no boxes and the key
    ``unreadable`` (the reason).

    With ``mc`` (:class:`alod.models.MCSampling`), inference is Monte Carlo dropout
    (:func:`alod.models.predict_mc`, image ``i``'s masks seeded by ``(mc.seed, i)``): detections come
    from the mean of ``mc.passes`` box-head passes and also hold ``mc_probs float32[N, T, C + 1]``.
    """
    model.eval()
    indices = [int(i) for i in indices]
    loader = DataLoader(
        Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_detection
    )
    device = torch.device(device)
    use_amp = autocast_on(device.type, amp)
    pos = 0
    for images, targets in loader:
        ok = [k for k, im in enumerate(images) if im is not None]
        outputs = []
        if ok:
            batch = [images[k].to(device, non_blocking=True) for k in ok]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                if mc is None:
                    outputs = model(batch)
                else:
                    outputs = predict_mc(model, batch, passes=mc.passes, dropout=mc.dropout, seed=mc.seed,
                                         keys=[indices[pos + k] for k in ok])
        by_slot = dict(zip(ok, outputs))
        for k in range(len(images)):
            if k in by_slot:
                yield indices[pos], _to_numpy(by_slot[k])
            else:  # failed to decode (data.strict: false): no detections, flagged
                yield indices[pos], _unreadable_detections(targets[k]["unreadable"], mc)
            pos += 1


def predict(model, dataset: Dataset, *, indices=None, batch_size: int = 8, accelerator=None, amp: bool | str = False,
            desc: str = "predict", progress: bool = True, mc: MCSampling | None = None) -> list[dict]:
    """Detections for ``indices`` (default: all), split over processes, gathered on every process.

    ``mc``: Monte Carlo dropout inference instead of one pass, see :func:`iter_predictions`.
    """
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    device = accelerator.device if accelerator is not None else torch.device("cpu")
    mine = indices[rank::world]
    net = accelerator.unwrap_model(model) if accelerator is not None else model
    results: dict[int, dict] = {}
    bar = tqdm(total=len(mine), desc=desc, unit="img", leave=False, disable=not (progress and rank == 0))
    for i, det in iter_predictions(net, dataset, mine, batch_size=batch_size, device=device, amp=amp, mc=mc):
        results[i] = det
        bar.update(1)
    bar.close()
    if world > 1:
        merged: dict[int, dict] = {}
        for part in gather_object([results]):
            merged.update(part)
        results = merged
    return [results[i] for i in indices]
