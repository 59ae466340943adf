"""``cycles.oracle: simulated_boxes``: the dataset's labels, plus the simulated annotator's work.

Hand-made indexes and injected predictors check the counting (cycle 1 draws every box; the counts
are :func:`alod.cycle.actions.annotator_actions` on the predictor's boxes, image by image; the
labels are the ``simulated`` oracle's) and the file's reuse. One real two-cycle run on the tiny
dataset checks that each cycle's work lands in ``state.json`` and ``cycle_NN/label_work.json``, that
cycle 2's counts are those of cycle 1's checkpoint, and that resuming before the label step was
recorded reuses the file instead of counting again.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest

from alod.config import load_config
from alod.cycle.actions import ACCEPT, ACTION_KEYS, add_actions, annotator_actions
from alod.cycle.oracles import DATASET_ORACLES, ORACLES, SimulatedBoxesOracle, SimulatedOracle, build_oracle
from alod.cycle.pool import LabeledPool
from alod.data.index import DetectionIndex
from alod.layout import RunLayout
from alod.utils import AlodError
from alod_testing import run_layout, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUIET = lambda *_: None  # noqa: E731

# Four images with 2, 3, 0 and 1 boxes: "c" has nothing, "d" one labeled box and one ignored region.
GT = {
    "a": ([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2], [False, False]),
    "b": ([[5, 5, 15, 15], [40, 40, 60, 60], [70, 10, 90, 30]], [1, 1, 3], [False, False, False]),
    "c": ([], [], []),
    "d": ([[0, 0, 20, 20], [50, 0, 90, 40]], [2, 1], [False, True]),
}


def _index() -> DetectionIndex:
    names = list(GT)
    return DetectionIndex.from_lists(
        image_root="/nowhere", names=names, widths=[100] * 4, heights=[64] * 4,
        boxes_per_image=[np.asarray(GT[n][0], dtype=float).reshape(-1, 4) for n in names],
        labels_per_image=[np.asarray(GT[n][1], dtype=np.int64) for n in names],
        ignore_per_image=[np.asarray(GT[n][2], dtype=bool) for n in names], classes=("x", "y", "z"))


def _dets(boxes, labels, scores) -> dict:
    return {"boxes": np.asarray(boxes, dtype=float).reshape(-1, 4), "labels": np.asarray(labels, dtype=np.int64),
            "scores": np.asarray(scores, dtype=float)}


# Per image, what the fake previous model predicts: a kept box and a spurious one, a relabeled box and
# a low-score one, a spurious box on an empty image, a box on the ignored region.
FAKE = {
    "a": _dets([[0, 0, 10, 10], [80, 50, 95, 60]], [1, 2], [0.9, 0.8]),
    "b": _dets([[40, 40, 60, 60], [5, 5, 15, 15]], [2, 1], [0.95, 0.4]),
    "c": _dets([[1, 1, 9, 9]], [3], [0.6]),
    "d": _dets([[50, 0, 90, 40]], [1], [0.99]),
}


def _fake_predictor(calls: list):
    names = list(GT)

    def predict(cycle, positions):
        calls.append((cycle, list(positions)))
        return [FAKE[names[i]] for i in positions]

    return predict


def test_cycle1_draws_every_box():
    oracle = SimulatedBoxesOracle(train=_index())
    labels = oracle.label(1, ["b", "a", "c", "d"])
    assert labels.work == {"boxes": 6, "accepted": 0, "kept": 0, "fix": 0, "delete": 0, "draw": 6, "actions": 6}
    per_image = oracle.label_work(1, ["b", "a", "c", "d"])["per_image"]
    assert [c["draw"] for c in per_image] == [3, 2, 0, 1]  # d's ignored region is not a box to draw


def test_counts_are_annotator_actions_on_the_predicted_boxes():
    calls, train = [], _index()
    oracle = SimulatedBoxesOracle(train=train, predict=_fake_predictor(calls))
    images = ["d", "a", "b", "c"]
    work = oracle.label_work(2, images)
    assert calls == [(2, [3, 0, 1, 2])]  # the selected images' dataset positions, in selection order
    expected = [annotator_actions(*GT[n], FAKE[n]["boxes"], FAKE[n]["labels"], FAKE[n]["scores"]) for n in images]
    assert work["per_image"] == expected and work["totals"] == add_actions(expected)
    # By hand: a kept 1, delete 1, draw 1; b fix 1, draw 2 (the 0.4 box is not accepted); c delete 1;
    # d: the box on the ignored region is free, the labeled box is drawn.
    assert work["totals"] == {"boxes": 6, "accepted": 4, "kept": 1, "fix": 1, "delete": 2, "draw": 4, "actions": 7}
    assert work["accept"] == ACCEPT and work["model"] is None

    strict = SimulatedBoxesOracle(train=train, predict=_fake_predictor([]), accept=0.85).label_work(2, images)
    assert strict["totals"] == add_actions(
        annotator_actions(*GT[n], FAKE[n]["boxes"], FAKE[n]["labels"], FAKE[n]["scores"], accept=0.85) for n in images)
    assert strict["totals"]["accepted"] == 2 and strict["totals"] != work["totals"]


def test_labels_and_training_set_are_the_simulated_oracles():
    train = _index()
    boxes = SimulatedBoxesOracle(train=train, predict=_fake_predictor([]))
    plain = SimulatedOracle(train=train)
    got, want = boxes.label(2, ["c", "a"]), plain.label(2, ["c", "a"])
    assert (got.names, got.source) == (want.names, want.source) == (["c", "a"], "dataset")
    assert want.work is None and got.work["boxes"] == 2
    pool = LabeledPool()
    pool.add(["d", "b"], cycle=1, source="dataset")
    pool.add(got.names, cycle=2, source=got.source)
    a, b = boxes.training_index(pool), plain.training_index(pool)
    assert list(a.names) == list(b.names) == ["a", "b", "c", "d"]
    for key in ("boxes", "labels", "ignore"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


def test_the_work_file_is_reused_for_the_same_images_and_redone_for_others(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path))
    ctx = SimpleNamespace(cfg=cfg, layout=RunLayout(root=tmp_path / "run", tb_root=tmp_path / "tb"), is_main=True)
    calls = []
    first = SimulatedBoxesOracle(ctx=ctx, train=_index(), predict=_fake_predictor(calls)).label_work(2, ["a", "b"])
    path = ctx.layout.cycle_label_work(2)
    assert json.loads(path.read_text()) == first and len(calls) == 1

    def refuse(cycle, positions):
        raise AssertionError("counted again")

    again = SimulatedBoxesOracle(ctx=ctx, train=_index(), predict=refuse).label_work(2, ["a", "b"])
    assert again == first  # a rerun after a crash reads the file back
    other = SimulatedBoxesOracle(ctx=ctx, train=_index(), predict=_fake_predictor(calls)).label_work(2, ["a", "c"])
    assert len(calls) == 2 and other["images"] == ["a", "c"] and json.loads(path.read_text()) == other
    path.write_text("{torn")  # not written by alod (it writes atomically): counted again, not trusted
    recounted = SimulatedBoxesOracle(ctx=ctx, train=_index(), predict=_fake_predictor(calls)).label_work(2, ["a", "c"])
    assert recounted == other and len(calls) == 3


def test_config_accepts_the_oracle_and_checks_the_score(tmp_path):
    path = write_tiny_config(tmp_path)
    cfg = load_config(path, ["cycles.oracle=simulated_boxes"])
    assert cfg.cycles.oracle == "simulated_boxes" and cfg.cycles.accept_score == ACCEPT
    assert "simulated_boxes" in ORACLES and "simulated_boxes" in DATASET_ORACLES
    assert load_config(path, ["cycles.accept_score=0.3"]).cycles.accept_score == 0.3
    with pytest.raises(AlodError, match=r"cycles.accept_score must be in \[0, 1\]"):
        load_config(path, ["cycles.accept_score=1.5"])
    with pytest.raises(AlodError, match="unknown oracle"):
        build_oracle("simulated_box", train=_index())


# ------------------------------------------------------------------------------- a real run
def _recount(cfg, train, images: list[str], cycle: int) -> dict:
    """Cycle ``cycle``'s work recounted outside the oracle: the previous checkpoint, iter_predictions."""
    from alod.data.dataset import DetectionDataset
    from alod.engine import iter_predictions
    from alod.models import load_detector

    model = load_detector(run_layout(cfg).cycle_checkpoint(cycle - 1), num_classes=train.num_classes,
                          **asdict(cfg.model))
    pos = train.name_to_index()
    out = []
    for i, d in iter_predictions(model, DetectionDataset(train), [pos[x] for x in images], batch_size=4):
        out.append(annotator_actions(*train.annotations(i), d["boxes"], d["labels"], d["scores"],
                                     accept=cfg.cycles.accept_score))
    return add_actions(out)


def test_a_two_cycle_run_records_the_work_and_resumes_without_recounting(tmp_path):
    from alod.cycle.selection import box_counts
    from alod.data.sources import load_split
    from alod.stages.cycles import run_cycles

    # Adaptive selection with the random strategy: no scorer, no schedule. A score threshold of 0
    # and accept_score 0.1 make the barely trained model's boxes count, so cycle 2 is not all "draw".
    sets = ["cycles.oracle=simulated_boxes", "cycles.epochs=1", "cycles.num_cycles=2", "cycles.selector=adaptive",
            "score.strategy=random", "model.box_score_thresh=0.0", "cycles.accept_score=0.1"]
    cfg = load_config(write_tiny_config(tmp_path), sets)
    layout = run_layout(cfg)
    state = run_cycles(cfg, progress=False, log=QUIET)
    assert [c["step"] for c in state["cycles"]] == ["evaluated", "evaluated"]
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=QUIET)
    counts, pos = box_counts(train), train.name_to_index()

    c1, c2 = state["cycles"]
    boxes1 = int(sum(counts[pos[x]] for x in c1["selected"]))
    assert c1["label_work"] == {**dict.fromkeys(ACTION_KEYS, 0), "boxes": boxes1, "draw": boxes1, "actions": boxes1}
    assert set(c2["label_work"]) == set(ACTION_KEYS) and c2["label_work"]["accepted"] > 0
    assert c2["label_work"] == _recount(cfg, train, c2["selected"], 2)
    for c in (c1, c2):
        file = json.loads(layout.cycle_label_work(c["cycle"]).read_text())
        assert file["totals"] == c["label_work"] and file["images"] == c["selected"]
        assert file["accept"] == 0.1 and len(file["per_image"]) == len(c["selected"])
    file2 = json.loads(layout.cycle_label_work(2).read_text())
    assert file2["model"] == str(layout.cycle_checkpoint(1)) and len(file2["model_sha256"]) == 64
    assert state["pool"]["sources"] == ["dataset"] * 8  # the labels are the dataset's, as with `simulated`

    # As if killed after label_work.json was written but before the label step was recorded.
    crashed = json.loads(layout.cycles_state.read_text())
    crashed["cycles"][1] = {k: crashed["cycles"][1][k] for k in ("cycle", "rule", "selected", "seconds")}
    crashed["cycles"][1]["step"] = "selected"
    keep = [k for k, n in enumerate(crashed["pool"]["cycles"]) if n == 1]
    crashed["pool"] = {key: [v[k] for k in keep] for key, v in crashed["pool"].items()}
    layout.cycles_state.write_text(json.dumps(crashed))
    mtime = layout.cycle_label_work(2).stat().st_mtime_ns
    resumed = run_cycles(cfg, progress=False, log=QUIET)
    assert layout.cycle_label_work(2).stat().st_mtime_ns == mtime  # read back, not counted again
    assert [c["label_work"] for c in resumed["cycles"]] == [c1["label_work"], c2["label_work"]]
    assert resumed["pool"] == state["pool"]
