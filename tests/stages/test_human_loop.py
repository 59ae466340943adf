"""Humans in the loop (``cycles.oracle: human``): the cycle loop stops after selection and prints the
``alod export`` / ``alod import`` commands; the "annotator" is a function that answers from the
dataset's own labels with a few edits (a box moved, one deleted, one added, one of an unknown
class), through LabelMe for cycle 1 and COCO for cycle 2; the run stops between export and import
and is rerun; partial answers are refused, then accepted with ``--allow-partial``; the same file
twice changes nothing; a different file after the label step is refused; the pool ends up holding
exactly what the annotator wrote, with the tool and file hash as each image's label source.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from alod.cli import main as alod_main
from alod.config import load_config
from alod.data.index import DetectionIndex
from alod.data.sources import load_split
from alod.cycle.oracles import HumanOracle, store_labels
from alod.cycle.pool import LabeledPool
from alod.stages.annotation import annotation_sha256
from alod.utils import AlodError
from alod_testing import run_layout, write_tiny_config

SETS = ["--set", "cycles.oracle=human", "--set", "cycles.epochs=1", "--set", "cycles.num_cycles=2",
        "--set", "pretrain.epochs=1"]


def _alod(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = alod_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _command(out: str, prefix: str) -> list[str]:
    """The arguments of the printed command line that starts with ``prefix`` (``alod`` dropped)."""
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith(prefix)]
    assert len(lines) == 1, out
    argv = shlex.split(lines[0])[1:]  # without the step number
    assert argv[0] == "alod"
    return argv[1:]


def _state(layout) -> dict:
    return json.loads(layout.cycles_state.read_text())


# ------------------------------------------------------------------------------------ the annotator
def _answer(train, names: list[str]) -> tuple[dict, dict]:
    """What the annotator draws for ``names``: the dataset's boxes (ignored regions left out) with
    one edit per image, in turn: move the first box, delete the first box, add a box, add a box of
    an unknown class. Returns ``(drawn, expected)``: ``name -> [(class name, x1, y1, x2, y2)]``
    (``drawn`` includes the unknown class, ``expected`` is what alod must keep)."""
    pos = train.name_to_index()
    drawn, expected = {}, {}
    for k, name in enumerate(sorted(names)):
        i = pos[name]
        W = int(train.widths[i])
        b, lab, ig = train.annotations(i)
        boxes = [(train.classes[int(c) - 1], *map(float, bb)) for bb, c, g in zip(b, lab, ig) if not g]
        edit = k % 4
        if edit == 0 and boxes:  # move the first box by 2 px (inward)
            c, x1, y1, x2, y2 = boxes[0]
            dx = 2.0 if x2 + 2 <= W else -2.0
            boxes[0] = (c, x1 + dx, y1, x2 + dx, y2)
        elif edit == 1 and boxes:  # delete one
            boxes = boxes[1:]
        elif edit == 2:  # add one the dataset does not have
            boxes.append((train.classes[0], 5.0, 6.0, 25.5, 30.25))
        expected[name] = list(boxes)
        if edit == 3:  # a class the dataset does not know: a problem, and not imported
            boxes = boxes + [("unicorn", 10.0, 10.0, 20.0, 20.0)]
        drawn[name] = boxes
    return drawn, expected


def _labelme_answer(folder: Path, drawn: dict) -> None:
    """Write ``drawn`` into the exported LabelMe files, as an annotator saving in labelme does."""
    for name, boxes in drawn.items():
        f = folder / (name.rsplit(".", 1)[0] + ".json")
        doc = json.loads(f.read_text())
        doc["shapes"] = [{"label": c, "points": [[x1, y1], [x2, y2]], "group_id": None, "description": "",
                          "shape_type": "rectangle", "flags": {}} for c, x1, y1, x2, y2 in boxes]
        f.write_text(json.dumps(doc, indent=2))


def _coco_answer(exported: Path, out: Path, drawn: dict, drop: str) -> dict:
    """A COCO file as a tool would export it: ``drawn`` as ``[x, y, w, h]``, without image ``drop``.
    Returns the boxes alod must read back (``x + w`` may differ from ``x2`` in the last bit)."""
    doc = json.loads(exported.read_text())
    ids = {c["name"]: c["id"] for c in doc["categories"]}
    doc["categories"].append({"id": 99, "name": "unicorn", "supercategory": ""})
    ids["unicorn"] = 99
    doc["images"] = [im for im in doc["images"] if im["file_name"] != drop]
    image_id = {im["file_name"]: im["id"] for im in doc["images"]}
    doc["annotations"], back = [], {}
    for name, boxes in drawn.items():
        if name == drop:
            continue
        back[name] = []
        for c, x1, y1, x2, y2 in boxes:
            w, h = x2 - x1, y2 - y1
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id[name],
                                       "category_id": ids[c], "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
            if c != "unicorn":
                back[name].append((c, x1, y1, x1 + w, y1 + h))
    out.write_text(json.dumps(doc))
    return back


# ------------------------------------------------------------------------------------------ the run
def test_two_human_cycles_through_labelme_and_coco(tmp_path, capsys):
    config = write_tiny_config(tmp_path)
    cfg = load_config(config, [s for s in SETS if s != "--set"])
    layout = run_layout(cfg)
    assert _alod(capsys, "pretrain", "--config", config, *SETS, "--no-progress")[0] == 0
    assert _alod(capsys, "batches", "--config", config, *SETS, "--no-progress")[0] == 0

    # The loop stops after selecting cycle 1 and prints the two commands.
    rc, out, _ = _alod(capsys, "cycles", "--config", config, *SETS, "--no-progress")
    assert rc == 0 and "cycle 1: 4 images selected; waiting for their labels" in out
    export_cmd, import_cmd = _command(out, "1. alod export"), _command(out, "3. alod import")
    resolved = str(layout.stage_config("cycles"))
    assert export_cmd == ["export", "--config", resolved, "--cycle", "1", "--format", "labelme", "--preannotate"]
    folder = layout.cycle_export_dir(1, "labelme")
    assert import_cmd == ["import", "--config", resolved, "--cycle", "1", str(folder)]
    state = _state(layout)
    assert [(c["cycle"], c["step"]) for c in state["cycles"]] == [(1, "selected")] and state["pool"]["names"] == []
    selected1 = state["cycles"][0]["selected"]

    rc, out, _ = _alod(capsys, *export_cmd, "--no-progress")
    assert rc == 0, out
    assert f"after labeling: alod import --config {resolved} --cycle 1 {folder}" in out
    for name in selected1:  # one labelme file beside each (symlinked) image
        doc = json.loads((folder / (name.rsplit(".", 1)[0] + ".json")).read_text())
        assert doc["imagePath"] == name.rsplit("/", 1)[-1] and (folder / name).is_symlink()
        assert all(json.loads(s["description"])["score"] >= 0.5 for s in doc["shapes"])
    record = json.loads(layout.cycle_export_record(1, "labelme").read_text())
    assert sorted(record["images"]) == sorted(selected1) and record["weights"] == str(layout.pretrain_checkpoint)
    rc, _, err = _alod(capsys, *export_cmd)  # annotators may be editing it: not overwritten
    assert rc == 2 and "--overwrite" in err

    # Stopped between export and import: a rerun stops at the same place with the same commands.
    rc, out, _ = _alod(capsys, "cycles", "--config", config, *SETS, "--no-progress")
    assert rc == 0 and _command(out, "3. alod import") == import_cmd
    assert _state(layout) == state

    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)
    drawn1, expected1 = _answer(train, selected1)
    _labelme_answer(folder, drawn1)
    # A partial answer: a copy of the folder without one image's file.
    dropped1 = sorted(selected1)[1]
    partial = tmp_path / "partial_labelme"
    shutil.copytree(folder, partial, symlinks=True, ignore=lambda d, fs: [f for f in fs if not f.endswith(".json")])
    (partial / (dropped1.rsplit(".", 1)[0] + ".json")).unlink()

    rc, _, err = _alod(capsys, "import", "--config", resolved, "--cycle", 1, partial)
    assert rc == 2 and "1 of cycle 1's 4 images have no answer" in err and dropped1 in err and "--allow-partial" in err
    assert not layout.cycle_labels_record(1).exists() and not layout.cycle_labels(1).exists()
    rc, out, _ = _alod(capsys, "import", "--config", resolved, "--cycle", 1, partial, "--allow-partial")
    assert rc == 0 and "1 image(s) returned to the unlabeled pool" in out
    assert json.loads(layout.cycle_labels_record(1).read_text())["images_returned"] == [dropped1]

    # The whole answer replaces it (the label step has not run yet), with exactly one problem.
    rc, out, _ = _alod(capsys, *import_cmd)
    assert rc == 0 and "replaced the previous import" in out
    problems = [json.loads(x) for x in layout.cycle_import_problems(1).read_text().splitlines()]
    unknown = sorted(selected1)[3]
    where = f"shapes[{len(expected1[unknown])}] 'unicorn'"  # the shape the annotator added last
    assert [(p["kind"], p["where"]) for p in problems] == [("unknown_category", where)]
    assert problems[0]["file"].endswith(unknown.rsplit(".", 1)[0] + ".json")
    assert [line for line in out.splitlines() if line.startswith("problem: ")] == [
        f"problem: {problems[0]['file']}: {problems[0]['where']}: unknown_category: {problems[0]['detail']}"]
    labels_json = layout.cycle_labels_record(1).read_bytes()
    npz_stat = layout.cycle_labels(1).stat()
    sha1 = annotation_sha256(folder)
    rec = json.loads(labels_json)
    assert rec["source"] == f"labelme:{sha1[:16]}" and rec["sha256"] == sha1 and rec["images_returned"] == []
    assert rec["problems"] == {"unknown_category": 1} and sorted(rec["images_labeled"]) == sorted(selected1)

    rc, out, _ = _alod(capsys, *import_cmd)  # the same file again: nothing changes
    assert rc == 0 and "already imported" in out
    assert layout.cycle_labels_record(1).read_bytes() == labels_json
    assert layout.cycle_labels(1).stat().st_mtime_ns == npz_stat.st_mtime_ns

    # Rerun: cycle 1 is labeled, trained and evaluated; cycle 2 is selected and waits.
    rc, out, _ = _alod(capsys, "cycles", "--config", config, *SETS, "--no-progress")
    assert rc == 0 and "cycle 2: 4 images selected; waiting for their labels" in out
    export2 = _command(out, "1. alod export")
    assert export2[-1] == "--preannotate" and export2[export2.index("--cycle") + 1] == "2"
    state = _state(layout)
    assert [(c["cycle"], c["step"]) for c in state["cycles"]] == [(1, "evaluated"), (2, "selected")]
    assert state["pool"]["sources"] == [f"labelme:{sha1[:16]}"] * 4

    # After the label step a different file is refused; the same one is still "already imported".
    rc, _, err = _alod(capsys, "import", "--config", resolved, "--cycle", 1, partial, "--allow-partial")
    assert rc == 2 and "cannot replace them" in err and "'evaluated'" in err
    assert _alod(capsys, *import_cmd)[0] == 0 and layout.cycle_labels_record(1).read_bytes() == labels_json

    # Cycle 2 through COCO (copied images, pre-annotated by cycle 1's model), answered partially.
    rc, out, _ = _alod(capsys, *[x if x != "labelme" else "coco" for x in export2], "--copy", "--no-progress")
    assert rc == 0 and "after labeling: alod import" in out and "<the COCO instances JSON" in out
    exported = layout.cycle_export_dir(2, "coco") / "annotations.json"
    selected2 = _state(layout)["cycles"][1]["selected"]
    for name in selected2:
        copy = layout.cycle_export_dir(2, "coco") / "images" / name
        assert copy.is_file() and not copy.is_symlink()
    record = json.loads(layout.cycle_export_record(2, "coco").read_text())
    assert record["weights"] == str(layout.cycle_checkpoint(1))
    drawn2, _ = _answer(train, selected2)
    dropped2 = min(selected2)
    answer = tmp_path / "coco_answer.json"
    expected2 = _coco_answer(exported, answer, drawn2, dropped2)
    rc, _, err = _alod(capsys, "import", "--config", resolved, "--cycle", 2, answer)
    assert rc == 2 and dropped2 in err and not layout.cycle_labels_record(2).exists()
    rc, out, _ = _alod(capsys, "import", "--config", resolved, "--cycle", 2, answer, "--allow-partial")
    assert rc == 0
    kinds = sorted(json.loads(x)["kind"] for x in layout.cycle_import_problems(2).read_text().splitlines())
    assert kinds == ["image_missing", "unknown_category"]

    rc, out, _ = _alod(capsys, "cycles", "--config", config, *SETS, "--no-progress")
    assert rc == 0 and "waiting" not in out
    state = _state(layout)
    assert [(c["cycle"], c["step"]) for c in state["cycles"]] == [(1, "evaluated"), (2, "evaluated")]
    sha2 = hashlib.sha256(answer.read_bytes()).hexdigest()
    labeled2 = [x for x in selected2 if x != dropped2]
    assert state["pool"]["names"] == selected1 + labeled2  # the dropped image went back: not in the pool
    assert state["pool"]["cycles"] == [1] * 4 + [2] * 3
    assert state["pool"]["sources"] == [f"labelme:{sha1[:16]}"] * 4 + [f"coco:{sha2[:16]}"] * 3
    assert state["cycles"][1]["pool_size"] == 7

    # Training saw exactly what the annotator wrote, in the readers' index format.
    pool = LabeledPool()
    pool.load_state_dict(state["pool"])
    index = HumanOracle(ctx=SimpleNamespace(layout=layout), train=train).training_index(pool)
    pos = train.name_to_index()
    assert list(index.names) == sorted(pool.names, key=pos.get)
    assert index.image_root == train.image_root and index.classes == train.classes
    assert index.boxes.dtype == np.float64 and not index.ignore.any()
    for k, name in enumerate(index.names):
        want = {**expected1, **expected2}[str(name)]
        boxes, labels, _ = index.annotations(k)
        assert boxes.tolist() == [list(b[1:]) for b in want], name
        assert [train.classes[int(c) - 1] for c in labels] == [b[0] for b in want]
        assert (index.widths[k], index.heights[k]) == (train.widths[pos[str(name)]], train.heights[pos[str(name)]])


# ------------------------------------------------------------------------------------ fast checks
def test_the_oracle_waits_then_labels_and_keeps_dataset_sourced_images(tmp_path):
    """Without stored labels the human oracle has none; with them it labels the imported images and
    returns the missing ones; images labeled by the dataset keep the dataset's labels."""
    from alod.layout import RunLayout

    layout = RunLayout(root=tmp_path / "run", tb_root=tmp_path / "tb")
    train = DetectionIndex.from_lists(
        image_root=tmp_path, names=["a.jpg", "b.jpg", "c.jpg"], widths=[40] * 3, heights=[30] * 3,
        boxes_per_image=[[[1, 2, 3, 4]], [[5, 6, 7, 8]], []], labels_per_image=[[1], [2], []],
        ignore_per_image=[[True], [False], []], classes=("car", "bus"))
    oracle = HumanOracle(ctx=SimpleNamespace(layout=layout), train=train)
    assert oracle.label(2, ["b.jpg", "c.jpg"]) is None
    answer = DetectionIndex.from_lists(image_root=tmp_path, names=["c.jpg"], widths=[40], heights=[30],
                                       boxes_per_image=[[[0.5, 1.25, 9.0, 9.5]]], labels_per_image=[[2]],
                                       classes=("car", "bus"))
    store_labels(layout, 2, answer, {"tool": "cvat", "path": "x.xml", "sha256": "ab" * 32, "source": "cvat:" + "ab" * 8,
                                     "images_labeled": ["c.jpg"], "images_returned": ["b.jpg"]})
    labels = oracle.label(2, ["b.jpg", "c.jpg"])
    assert labels.names == ["c.jpg"] and labels.source == "cvat:" + "ab" * 8
    pool = LabeledPool()
    pool.add(["a.jpg"], cycle=1, source="dataset")
    pool.add(labels.names, cycle=2, source=labels.source)
    index = oracle.training_index(pool)
    assert list(index.names) == ["a.jpg", "c.jpg"] and index.boxes.tolist() == [[1, 2, 3, 4], [0.5, 1.25, 9.0, 9.5]]
    assert index.labels.tolist() == [1, 2] and index.ignore.tolist() == [True, False]
    # labels.npz replaced behind the record's back (an interrupted import): a clear error, not a mix.
    answer.subset([]).save(layout.cycle_labels(2))
    with pytest.raises(AlodError, match="does not match"):
        oracle.training_index(pool)


def test_a_folder_is_known_by_its_annotation_files_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.json").write_text("{}")
    (tmp_path / "a.jpg").write_bytes(b"image")
    first = annotation_sha256(tmp_path)
    (tmp_path / "a.jpg").write_bytes(b"another image")
    assert annotation_sha256(tmp_path) == first
    (tmp_path / "sub" / "a.json").write_text('{"shapes": []}')
    assert annotation_sha256(tmp_path) != first


def test_an_interrupted_import_is_done_again_not_reported_as_done(tmp_path):
    """A kill between ``labels.npz`` and ``labels.json`` leaves a record that no longer matches: the
    same file imported again is stored again (not "already imported")."""
    from alod.data.sources import ensure_dataset
    from alod.cycle.oracles import load_stored_labels
    from alod.stages.annotation import run_import

    cfg = load_config(write_tiny_config(tmp_path), ["cycles.oracle=human"])
    layout = run_layout(cfg)
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)
    names = [str(n) for n in train.names[:2]]
    layout.cycles_state.parent.mkdir(parents=True)
    layout.cycles_state.write_text(json.dumps({
        "format": "alod.cycles/2", "selector": {"name": "adaptive"}, "oracle": "human",
        "pool": {"names": [], "cycles": [], "sources": []},
        "cycles": [{"cycle": 1, "step": "selected", "rule": "random", "selected": names}]}))
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps({
        "images": [{"id": k, "file_name": n, "width": 160, "height": 96} for k, n in enumerate(names, 1)],
        "categories": [{"id": 1, "name": train.classes[0]}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1.5, 2, 10, 20], "iscrowd": 0}]}))
    quiet = lambda *_: None  # noqa: E731
    assert run_import(cfg, cycle=1, path=answer, progress=False, log=quiet)["status"] == "imported"
    assert run_import(cfg, cycle=1, path=answer, progress=False, log=quiet)["status"] == "already imported"
    load_stored_labels(layout, 1).index.subset([0]).save(layout.cycle_labels(1))  # the new .npz, the old record
    assert run_import(cfg, cycle=1, path=answer, progress=False, log=quiet)["status"] == "imported"
    stored = load_stored_labels(layout, 1)
    assert list(stored.index.names) == names and stored.index.boxes.tolist() == [[1.5, 2.0, 11.5, 22.0]]


def _selected_cycle(tmp_path, n: int = 4):
    """A tiny human-oracle run whose cycle 1 has selected the first ``n`` training images (the cycles
    state written by hand: nothing trained). Returns ``(cfg, layout, train, names)``."""
    from alod.data.sources import ensure_dataset

    cfg = load_config(write_tiny_config(tmp_path), ["cycles.oracle=human"])
    layout = run_layout(cfg)
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)
    names = sorted(str(x) for x in train.names[:n])
    layout.cycles_state.parent.mkdir(parents=True)
    layout.cycles_state.write_text(json.dumps({
        "format": "alod.cycles/2", "selector": {"name": "adaptive"}, "oracle": "human",
        "pool": {"names": [], "cycles": [], "sources": []},
        "cycles": [{"cycle": 1, "step": "selected", "rule": "random", "selected": names}]}))
    return cfg, layout, train, names


#: Pre-annotations (x1, y1, x2, y2, label, score) the fake model gives each of the four images; the
#: third gets none.
PRE = [(10, 10, 40, 40, 1, 0.9), (60, 20, 100, 60, 2, 0.8), (110, 30, 150, 90, 3, 0.7)]


def test_an_import_records_what_annotators_changed_against_the_exported_preannotations(tmp_path, monkeypatch):
    """LabelMe round trip: export with pre-annotations, edit the files as an annotator would, import;
    ``labels.json`` holds each image's added, deleted, changed and kept boxes and the totals."""
    from alod.stages import annotation
    from alod.stages.annotation import run_export, run_import

    cfg, layout, train, names = _selected_cycle(tmp_path)
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not read: the detections are injected")

    def detections(ctx, train, names_, cycle, threshold, ckpt):
        rows = {n: ([] if k == 2 else PRE) for k, n in enumerate(names)}
        return ({n: (np.array([r[:4] for r in rows[n]], float).reshape(-1, 4), np.array([r[4] for r in rows[n]], int),
                     np.array([r[5] for r in rows[n]], float)) for n in names_}, str(weights))

    monkeypatch.setattr(annotation, "_model_checkpoint", lambda ctx, cycle: None)
    monkeypatch.setattr(annotation, "_detections", detections)
    quiet = lambda *_: None  # noqa: E731
    out = run_export(cfg, cycle=1, fmt="labelme", preannotate=True, progress=False, log=quiet)
    assert out["preannotations"] == 9
    folder = layout.cycle_export_dir(1, "labelme")

    c = train.classes
    box = {k: (c[r[4] - 1], *map(float, r[:4])) for k, r in enumerate(PRE)}
    _labelme_answer(folder, {
        # keep the first, relabel the second, delete the third, draw a new one
        names[0]: [box[0], (c[0], *box[1][1:]), (c[1], 5.0, 60.0, 30.0, 90.0)],
        # names[1] is left as exported: all three kept
        names[2]: [(c[0], 5.0, 5.0, 25.0, 25.0), (c[2], 60.0, 40.0, 80.0, 60.0)],  # no pre-annotations: 2 added
        names[3]: [(c[1], 60.0, 20.0, 100.0, 44.0)] + [box[0]],  # the second moved to IoU 0.6, the third deleted
    })
    record = run_import(cfg, cycle=1, path=folder, progress=False, log=quiet)
    edits = json.loads(layout.cycle_labels_record(1).read_text())["edits"]
    assert edits == record["edits"]
    assert edits["preannotated"] is True and edits["export"] == str(layout.cycle_export_record(1, "labelme"))
    assert edits["weights"] == str(weights) and edits["threshold"] == 0.5
    assert edits["per_image"] == {
        names[0]: {"added": 1, "deleted": 1, "changed": 1, "kept": 1},
        names[1]: {"added": 0, "deleted": 0, "changed": 0, "kept": 3},
        names[2]: {"added": 2, "deleted": 0, "changed": 0, "kept": 0},
        names[3]: {"added": 0, "deleted": 1, "changed": 1, "kept": 1},
    }
    assert edits["totals"] == {"added": 3, "deleted": 2, "changed": 2, "kept": 5}


def test_an_import_without_preannotations_says_so_instead_of_counting(tmp_path):
    from alod.stages.annotation import run_export, run_import

    cfg, layout, _, names = _selected_cycle(tmp_path, n=2)
    quiet = lambda *_: None  # noqa: E731
    run_export(cfg, cycle=1, fmt="labelme", progress=False, log=quiet)
    lines = []
    record = run_import(cfg, cycle=1, path=layout.cycle_export_dir(1, "labelme"), progress=False, log=lines.append)
    assert record["images_labeled"] == names and record["edits"] == {
        "preannotated": False, "export": str(layout.cycle_export_record(1, "labelme")),
        "reason": "exported without --preannotate: there were no pre-annotations to change"}
    assert "cycle 1: edits not counted: exported without --preannotate" in "\n".join(lines)
