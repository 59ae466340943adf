"""alod.engine: data order, training with checkpoints and resume, checkpoint reading, prediction.

The training tests follow Detectron2's habit: a tiny model trained for a few steps on the CPU,
interrupted and resumed, and compared with an uninterrupted run (GUIDE section 3, "Run state").
"""
from __future__ import annotations

from dataclasses import asdict
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Subset

from alod.config import SyntheticConfig
from alod.data.dataset import DetectionDataset
from alod.data.loading import load_index
from alod.data.synthetic import generate_dataset
from alod.data.transforms import get_transform
from alod.engine import (
    AMP_MODES,
    LOSS_KEYS,
    Plateau,
    autocast_on,
    epoch_batches,
    fit,
    load_checkpoint,
    make_accelerator,
    make_lr_scheduler,
    one_cycle_pct_start,
    predict,
    steps_per_epoch,
)
from alod.layout import CHECKPOINT_BEST, CHECKPOINT_LAST
from alod.models import build_detector
from alod.utils import AlodError
from alod_testing import tiny_model_config




pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ data order
CASES = [  # (n_items, batch_size, world)
    (10, 3, 1),
    (10, 3, 2),
    (12, 2, 3),
    (7, 4, 2),
    (1, 2, 4),  # fewer items than one step needs: wrapped several times
    (64, 8, 1),
]


@pytest.mark.parametrize("n,bs,world", CASES)
def test_epoch_batches_equal_counts_exact_sizes_full_cover(n, bs, world):
    per_rank = [epoch_batches(n, batch_size=bs, seed=5, epoch=2, rank=r, world=world) for r in range(world)]
    n_steps = math.ceil(n / (bs * world))
    for batches in per_rank:
        assert len(batches) == n_steps == steps_per_epoch(n, batch_size=bs, world=world)
        assert all(len(b) == bs for b in batches)
        assert all(b.dtype.kind == "i" and b.min() >= 0 and b.max() < n for b in batches)
    seen = np.concatenate([b for batches in per_rank for b in batches])
    counts = np.bincount(seen, minlength=n)
    assert counts.min() >= 1, "every item is visited each epoch"
    # Padding wraps the permutation, so no item is visited more than once more than another.
    assert counts.max() - counts.min() <= 1
    if n % (bs * world) == 0:
        assert counts.max() == 1


@pytest.mark.parametrize("n,bs,world", CASES)
def test_epoch_order_depends_only_on_seed_and_epoch(n, bs, world):
    def visit_order(world_, bs_, seed=5, epoch=2):
        per_rank = [epoch_batches(n, batch_size=bs_, seed=seed, epoch=epoch, rank=r, world=world_) for r in range(world_)]
        # Step-major, rank-minor: the order in which the items are consumed.
        return np.concatenate([per_rank[r][s] for s in range(len(per_rank[0])) for r in range(world_)])

    order = visit_order(world, bs)
    np.testing.assert_array_equal(order, visit_order(world, bs))  # repeatable
    # The same permutation whatever the batch size and number of processes.
    np.testing.assert_array_equal(order[:n], visit_order(1, 1)[:n])
    np.testing.assert_array_equal(np.sort(order[:n]), np.arange(n))
    np.testing.assert_array_equal(order[:n], np.random.default_rng([5, 2]).permutation(n))


def test_epoch_order_changes_with_seed_and_epoch():
    base = np.concatenate(epoch_batches(50, batch_size=5, seed=0, epoch=0, rank=0, world=1))
    other_epoch = np.concatenate(epoch_batches(50, batch_size=5, seed=0, epoch=1, rank=0, world=1))
    other_seed = np.concatenate(epoch_batches(50, batch_size=5, seed=1, epoch=0, rank=0, world=1))
    assert not np.array_equal(base, other_epoch)
    assert not np.array_equal(base, other_seed)
    assert sorted(base) == sorted(other_epoch) == sorted(other_seed) == list(range(50))


def test_ranks_get_disjoint_batches_when_nothing_is_padded():
    a = np.concatenate(epoch_batches(24, batch_size=3, seed=0, epoch=0, rank=0, world=2))
    b = np.concatenate(epoch_batches(24, batch_size=3, seed=0, epoch=0, rank=1, world=2))
    assert len(a) == len(b) == 12 and not set(a) & set(b)


@pytest.mark.parametrize(
    "n,bs,world,expected", [(8, 4, 1, 2), (9, 4, 1, 3), (9, 4, 2, 2), (8, 4, 2, 1), (1, 8, 4, 1), (0, 4, 1, 1)]
)
def test_steps_per_epoch(n, bs, world, expected):
    assert steps_per_epoch(n, batch_size=bs, world=world) == expected


# -------------------------------------------------------------------------------------- training
NUM_TRAIN, BATCH = 4, 2
SPE = NUM_TRAIN // BATCH  # steps per epoch
MODEL = tiny_model_config(box_detections_per_img=20)  # boxes from a barely trained model
FIT = dict(batch_size=BATCH, lr=0.01, seed=3, progress=False)


def new_model(num_classes: int):
    torch.manual_seed(0)
    return build_detector(num_classes=num_classes, **asdict(MODEL))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    spec = SyntheticConfig(num_train=NUM_TRAIN, num_val=2, width=160, height=96, max_objects=4)
    generate_dataset(root, **asdict(spec), progress=False)
    quiet = dict(fmt="bdd100k", image_size=(160, 96), log=lambda *_: None)
    train = load_index(labels=root / "labels/det_20/det_train.json", image_root=root / "images/100k/train", **quiet)
    val = load_index(labels=root / "labels/det_20/det_val.json", image_root=root / "images/100k/val", **quiet)
    assert len(train) == NUM_TRAIN and len(val) == 2
    # hflip draws from torch's RNG, so the resume comparison also covers the augmentation stream.
    return DetectionDataset(train, transform=get_transform("hflip")), DetectionDataset(val)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """An uninterrupted 2-epoch run, and the same run killed after epoch 0 and restarted."""
    train, _ = data
    tmp = tmp_path_factory.mktemp("fit")
    epochs_seen = []
    full_model = new_model(train.index.num_classes)
    # min_steps below epochs * steps-per-epoch (4) must change nothing.
    full = fit(full_model, train, epochs=2, min_steps=3, ckpt_dir=tmp / "full", config={"run": "x"}, extra={"k": 1},
               on_epoch_end=lambda e, logs: epochs_seen.append((e, logs)), **FIT)

    def die_after_first_epoch(epoch, logs):
        raise Interrupt(epoch)

    with pytest.raises(Interrupt):
        fit(new_model(train.index.num_classes), train, epochs=2, ckpt_dir=tmp / "resumed",
            on_epoch_end=die_after_first_epoch, **FIT)
    after_kill = load_checkpoint(tmp / "resumed" / CHECKPOINT_LAST)
    shutil.copytree(tmp / "resumed", tmp / "after_kill")
    resumed_model = new_model(train.index.num_classes)
    with torch.no_grad():  # a different start proves the weights really come from the checkpoint
        for p in resumed_model.parameters():
            p.add_(1.0)
    resumed = fit(resumed_model, train, epochs=2, ckpt_dir=tmp / "resumed", **FIT)
    return dict(tmp=tmp, full=full, full_model=full_model, epochs_seen=epochs_seen, after_kill=after_kill,
                resumed=resumed, resumed_model=resumed_model)


def test_fit_reports_epochs_steps_and_history(runs):
    full = runs["full"]
    assert full["epochs"] == 2 and full["steps"] == 2 * SPE and full["resumed_from"] == 0
    assert [h["epoch"] for h in full["history"]] == [0, 1]
    for h in full["history"]:
        for k in (*LOSS_KEYS, "loss", "lr", "seconds"):
            assert math.isfinite(h[k]), k
        assert h["loss"] == pytest.approx(sum(h[k] for k in LOSS_KEYS), rel=1e-5)
    # One-cycle schedule: warm-up from lr / 25 to lr in the first epoch, annealing in the second.
    assert 0 < full["history"][-1]["lr"] < FIT["lr"] / 5
    assert [e for e, _ in runs["epochs_seen"]] == [0, 1]
    assert runs["epochs_seen"][0][1]["loss"] == full["history"][0]["loss"]


def test_fit_writes_checkpoint_last(runs):
    ckpt_dir = runs["tmp"] / "full"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [CHECKPOINT_LAST]  # no temp files left
    state = load_checkpoint(ckpt_dir / CHECKPOINT_LAST)
    assert {"model", "optimizer", "scheduler", "epoch"} <= set(state)
    assert state["epoch"] == 1 and state["epochs"] == 2 and state["total_steps"] == 2 * SPE
    assert state["config"] == {"run": "x"} and state["extra"] == {"k": 1}
    assert state["scheduler"]["last_epoch"] == 2 * SPE
    model_state = runs["full_model"].state_dict()
    assert state["model"].keys() == model_state.keys()
    for k, v in model_state.items():
        assert torch.equal(state["model"][k], v), k
    # The checkpoint taken after the killed run's first epoch.
    assert runs["after_kill"]["epoch"] == 0 and runs["after_kill"]["scheduler"]["last_epoch"] == SPE


def test_fit_checkpoint_loads_as_model_weights_path(runs, data):
    path = runs["tmp"] / "full" / CHECKPOINT_LAST
    from dataclasses import replace

    loaded = build_detector(num_classes=data[0].index.num_classes, **asdict(replace(MODEL, weights_path=str(path))))
    for k, v in runs["full_model"].state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_resume_runs_only_the_missing_epochs(runs):
    resumed = runs["resumed"]
    assert resumed["resumed_from"] == 1
    assert resumed["epochs"] == 2 and resumed["steps"] == 2 * SPE
    assert [h["epoch"] for h in resumed["history"]] == [1]
    for k in (*LOSS_KEYS, "loss", "lr"):
        assert resumed["history"][0][k] == pytest.approx(runs["full"]["history"][1][k], rel=1e-5, abs=1e-7), k


def test_resume_gives_the_uninterrupted_weights(runs):
    full, resumed = runs["full_model"].state_dict(), runs["resumed_model"].state_dict()
    assert full.keys() == resumed.keys()
    for k in full:
        if full[k].is_floating_point():
            torch.testing.assert_close(resumed[k], full[k], rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(resumed[k], full[k]), k
    assert load_checkpoint(runs["tmp"] / "resumed" / CHECKPOINT_LAST)["epoch"] == 1


def test_resume_with_other_total_steps_is_refused(runs, data):
    train, _ = data
    with pytest.raises(AlodError, match="total steps"):
        fit(new_model(train.index.num_classes), train, epochs=3, ckpt_dir=runs["tmp"] / "after_kill", **FIT)


def test_unreadable_checkpoint_in_ckpt_dir_is_alod_error(tmp_path, data):
    train, _ = data
    (tmp_path / CHECKPOINT_LAST).write_bytes(b"\x00garbage")
    with pytest.raises(AlodError, match="cannot be read"):
        fit(new_model(train.index.num_classes), train, epochs=1, ckpt_dir=tmp_path, **FIT)


def test_min_steps_raises_the_epoch_count(data):
    train, _ = data
    two = Subset(train, [0, 1])  # batch 2 over 2 images: one step per epoch
    out = fit(new_model(train.index.num_classes), two, epochs=1, min_steps=3, **FIT)
    assert out["epochs"] == 3 and out["steps"] == 3
    assert [h["epoch"] for h in out["history"]] == [0, 1, 2]


def test_fit_on_empty_dataset_is_alod_error(data):
    train, _ = data
    with pytest.raises(AlodError, match="empty"):
        fit(new_model(train.index.num_classes), Subset(train, []), epochs=1, **FIT)


def test_load_checkpoint_missing_and_garbage(tmp_path):
    with pytest.raises(AlodError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a torch file")
    with pytest.raises(AlodError, match="cannot be read"):
        load_checkpoint(bad)
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 4}, good)
    state = load_checkpoint(str(good))
    assert state["epoch"] == 4 and torch.equal(state["model"]["w"], torch.ones(2))


# ------------------------------------------------------------------------------------ prediction
def test_predict_returns_numpy_dicts_per_image(runs, data):
    _, val = data
    model = runs["full_model"]
    dets = predict(model, val, batch_size=2, progress=False)
    assert len(dets) == len(val)
    c1 = val.index.num_classes + 1
    for det in dets:
        assert set(det) == {"boxes", "labels", "scores", "probs"}
        assert all(isinstance(v, np.ndarray) for v in det.values())
        n = len(det["scores"])
        assert n > 0
        assert det["boxes"].shape == (n, 4) and det["boxes"].dtype == np.float32
        assert det["labels"].shape == (n,) and det["labels"].dtype == np.int64
        assert det["scores"].dtype == np.float32 and det["probs"].shape == (n, c1)
        np.testing.assert_allclose(det["probs"].sum(1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(det["scores"], det["probs"][np.arange(n), det["labels"]])
    # Same as calling the model directly, image by image, and the order follows ``indices``.
    model.eval()
    with torch.no_grad():
        direct = model([val[1][0]])[0]
    np.testing.assert_allclose(dets[1]["boxes"], direct["boxes"].numpy(), rtol=1e-5, atol=1e-4)
    swapped = predict(model, val, indices=[1, 0], batch_size=1, progress=False)
    for a, b in zip(swapped, dets[::-1]):
        np.testing.assert_array_equal(a["labels"], b["labels"])
        np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)


class _TouchOnLoad:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_load_checkpoint_does_not_execute_pickled_code(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "epoch": 0, "extra": _TouchOnLoad(str(marker))}, path)
    assert not marker.exists()
    try:
        load_checkpoint(path)
    except AlodError:
        pass  # refusing the file is fine; running its code is not
    assert not marker.exists(), "load_checkpoint executed code stored in the checkpoint"


def test_load_checkpoint_refuses_objects_with_a_clear_message(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"model": {}, "extra": _TouchOnLoad(str(tmp_path / "ran"))}, path)
    with pytest.raises(AlodError, match="holds Python objects besides tensors.*torch.save\\(model.state_dict"):
        load_checkpoint(path)
    assert not (tmp_path / "ran").exists()
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(AlodError, match="not an alod checkpoint"):
        load_checkpoint(path)


@settings(max_examples=150, deadline=None)
@given(n_items=st.integers(1, 60), batch_size=st.integers(1, 16), epochs=st.integers(1, 6),
       warmup=st.sampled_from([0.0, 0.01, 0.1, 0.125, 0.2, 0.25, 1 / 3, 0.5, 0.999, 1.0])
       | st.floats(0.0, 1.0))
def test_lr_schedule_works_for_every_step_count(n_items, batch_size, epochs, warmup):
    total = epochs * steps_per_epoch(n_items, batch_size=batch_size, world=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = make_lr_scheduler(opt, lr=0.1, total_steps=total, warmup_fraction=warmup)
    lrs = []
    for _ in range(total):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert all(math.isfinite(v) and 0 < v <= 0.1 + 1e-12 for v in lrs)


def test_warmup_of_exactly_one_step_trains(data):
    # The reported crash: warm-up 0.1 of 10 steps (36 images, batch 8, 2 epochs in the report).
    train, _ = data
    assert one_cycle_pct_start(0.1, 10) != 0.1 and one_cycle_pct_start(0.1, 20) == 0.1
    out = fit(new_model(train.index.num_classes), train, epochs=5, batch_size=2, lr=0.01, warmup_fraction=0.1,
              seed=0, progress=False)
    assert out["steps"] == 10 and len(out["history"]) == 5


# ------------------------------------------------------------------------------ plateau stopping
SCRIPTED = [0.10, 0.30, 0.20, 0.25, 0.40, 0.50]  # evaluation scores after epochs 1..6


class ScriptedScore:
    """Scores from a script, with a copy of the weights each was given (to check which ones are kept)."""

    def __init__(self, die_at: int | None = None):
        self.weights, self.epochs, self.die_at = {}, [], die_at

    def __call__(self, model, epoch):
        if epoch == self.die_at:
            raise Interrupt(epoch)
        self.epochs.append(epoch)
        self.weights[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return SCRIPTED[epoch - 1]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_plateau_state_machine():
    p = Plateau(lambda m, e: 0.0, every=1, patience=2)
    s = p.initial_state()
    for epoch, score in enumerate([0.1, 0.3, 0.3, 0.2]):  # a tie is no gain
        s = p.update(s, epoch=epoch, score=score)
    assert s["best"] == 0.3 and s["best_epoch"] == 1 and s["since_best"] == 2 and s["stopped"]
    assert s["evals"] == [[0, 0.1], [1, 0.3], [2, 0.3], [3, 0.2]] and s["trained_epochs"] == 4
    s = p.update(p.initial_state(), epoch=0, score=float("nan"))
    assert s["best"] is None and s["since_best"] == 1 and not s["stopped"]
    assert [p.due(e, 6) for e in range(6)] == [True] * 6
    assert [Plateau(p.evaluate, every=4).due(e, 6) for e in range(6)] == [False, False, False, True, False, True]
    with pytest.raises(AlodError, match="patience"):
        Plateau(p.evaluate, patience=0)


def test_plateau_stops_keeps_the_best_weights_and_resumes_identically(data, tmp_path):
    """Scores 0.10, 0.30, 0.20, 0.25 with patience 2: stop after epoch 4 with epoch 2's weights;
    killed during epoch 3's evaluation and rerun, it ends the same."""
    train, _ = data
    n = train.index.num_classes
    score = ScriptedScore()
    model = new_model(n)
    result = fit(model, train, epochs=6, ckpt_dir=tmp_path / "straight", plateau=Plateau(score, patience=2), **FIT)
    assert score.epochs == [1, 2, 3, 4]  # epochs 5 and 6 never ran
    assert result["epochs"] == 4 and [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]
    assert [h["val_score"] for h in result["history"]] == SCRIPTED[:4]
    assert result["plateau"]["best_epoch"] == 1 and result["plateau"]["stopped"]
    assert _same_weights(model.state_dict(), score.weights[2])
    assert not _same_weights(score.weights[4], score.weights[2])
    last = load_checkpoint(tmp_path / "straight" / CHECKPOINT_LAST)
    assert _same_weights(last["model"], score.weights[2]) and last["plateau"]["stopped"]
    best = load_checkpoint(tmp_path / "straight" / CHECKPOINT_BEST)
    assert best["epoch"] == 1 and best["score"] == 0.30

    # Rerun of the finished run: nothing trains, the kept weights come back.
    again_model = new_model(n)
    again = fit(again_model, train, epochs=6, ckpt_dir=tmp_path / "straight", plateau=Plateau(ScriptedScore()), **FIT)
    assert again["history"] == [] and again["epochs"] == 4
    assert _same_weights(again_model.state_dict(), score.weights[2])

    # Killed while evaluating epoch 3, then rerun.
    with pytest.raises(Interrupt):
        fit(new_model(n), train, epochs=6, ckpt_dir=tmp_path / "killed", plateau=Plateau(ScriptedScore(die_at=3)), **FIT)
    rerun = ScriptedScore()
    resumed_model = new_model(n)
    resumed = fit(resumed_model, train, epochs=6, ckpt_dir=tmp_path / "killed", plateau=Plateau(rerun), **FIT)
    assert rerun.epochs == [3, 4] and resumed["epochs"] == 4
    assert resumed["plateau"] == result["plateau"]
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(resumed_model.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_plateau_evaluates_every_k_epochs_and_after_the_last(data, tmp_path):
    train, _ = data
    score = ScriptedScore()
    model = new_model(train.index.num_classes)
    result = fit(model, train, epochs=3, ckpt_dir=tmp_path, plateau=Plateau(score, every=2, patience=1), **FIT)
    assert score.epochs == [2, 3] and result["epochs"] == 3  # every 2 epochs, and after the last
    # 0.30 after epoch 2, 0.20 after epoch 3 (the last): the run ends with epoch 2's weights.
    assert result["plateau"]["best_epoch"] == 1 and _same_weights(model.state_dict(), score.weights[2])
    with pytest.raises(AlodError, match="checkpoint folder"):
        fit(model, train, epochs=1, plateau=Plateau(score), **FIT)


# ------------------------------------------------------------------------------------ amp modes
def test_autocast_on():
    assert [autocast_on("cuda", a) for a in AMP_MODES] == [False, True, True, True]
    assert [autocast_on("cpu", a) for a in AMP_MODES] == [False, False, False, True]
    with pytest.raises(AlodError, match="amp"):
        autocast_on("cpu", "yes")


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state and refuses a second precision in the same process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_on_cpu_trains_and_predicts(data, fresh_accelerate_state):
    """``amp: all`` runs the CPU step under bf16 autocast: finite losses, float32 outputs."""
    train, val = data
    acc = make_accelerator(amp="all")
    assert acc.mixed_precision == "bf16"
    model = new_model(train.index.num_classes)
    result = fit(model, train, epochs=1, accelerator=acc, **FIT)
    assert math.isfinite(result["history"][0]["loss"])
    det = predict(model, val, amp="all", progress=False)[0]
    assert det["boxes"].dtype == np.float32 and det["probs"].dtype == np.float32
