"""A new project's first day: ``data.kind: folder`` (images without a label file, a labeled val
split, ``data.classes``) runs the whole loop with people as the oracle and no pretraining:
``cycles.selector=adaptive`` picks cycle 1 at random, the loop stops for labels, ``alod export``
(LabelMe) / ``alod import`` carry them, and the rerun trains and evaluates cycle 1. Pretraining and
the simulated oracle refuse, saying what to do instead."""
from __future__ import annotations

from dataclasses import asdict
import json
import shutil

from alod_testing import run_layout, write_tiny_config

from alod.cli import main as alod_main
from alod.config import SyntheticConfig, load_config
from alod.data.bdd100k import BDD100K_CLASSES
from alod.data.loading import load_index
from alod.data.synthetic import generate_dataset

quiet = lambda *_: None


def _alod(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = alod_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_new_project_first_cycle_with_people(tmp_path, capsys):
    from alod.stages.annotation import run_export, run_import

    gen = tmp_path / "generated"
    generate_dataset(gen, **asdict(SyntheticConfig(num_train=20, num_val=6, width=160, height=96, max_objects=4)),
                     progress=False)
    gen_train = gen / "images" / "100k" / "train"
    truth = load_index(labels=gen / "labels" / "det_20" / "det_train.json", image_root=gen_train, log=quiet)
    # The project: a folder of images, no label file; a labeled val split beside it.
    images = tmp_path / "project" / "images" / "train"
    for name in truth.names:
        (images / str(name)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(gen_train / str(name), images / str(name))
    assert not list(images.rglob("*.json"))

    config = write_tiny_config(tmp_path, data={
        "kind": "folder", "root": str(tmp_path / "project"), "classes": list(BDD100K_CLASSES),
        "val_labels": str(gen / "labels" / "det_20" / "det_val.json"),
        "val_images": str(gen / "images" / "100k" / "val"), "image_size": [160, 96]})
    sets = ["cycles.selector=adaptive", "cycles.oracle=human", "cycles.epochs=1", "cycles.num_cycles=2",
            "schedule.batch_size=8", "schedule.query_size=4"]
    argv = [x for s in sets for x in ("--set", s)]
    cfg = load_config(config, sets)
    layout = run_layout(cfg)

    # Pretraining and the simulated oracle have no labels to work with, and say what to do.
    rc, _, err = _alod(capsys, "pretrain", "--config", config, *argv, "--no-progress")
    assert rc != 0 and "cycles.selector=adaptive" in err and "score.strategy=random" in err and "--ckpt" in err
    rc, _, err = _alod(capsys, "cycles", "--config", config, *argv, "--set", "cycles.oracle=simulated",
                       "--no-progress")
    assert rc != 0 and "use cycles.oracle=human" in err

    # Cycle 1 is selected (random, no scorer) and the loop waits for labels.
    rc, out, err = _alod(capsys, "cycles", "--config", config, *argv, "--no-progress")
    assert rc == 0, out + err
    assert "cycle 1: 4 images selected; waiting for their labels" in out
    state = json.loads(layout.cycles_state.read_text())
    selected = state["cycles"][0]["selected"]
    assert len(selected) == 4 and state["pool"]["names"] == []

    # The annotator labels the exported images in LabelMe (here: the generator's own boxes).
    resolved = load_config(layout.stage_config("cycles"))
    run_export(resolved, cycle=1, fmt="labelme", progress=False, log=quiet)
    folder = layout.cycle_export_dir(1, "labelme")
    pos = truth.name_to_index()
    for name in selected:
        f = folder / (name.rsplit(".", 1)[0] + ".json")
        doc = json.loads(f.read_text())
        b, lab, ig = truth.annotations(pos[name])
        doc["shapes"] = [{"label": truth.classes[int(c) - 1], "points": [[x1, y1], [x2, y2]], "group_id": None,
                          "description": "", "shape_type": "rectangle", "flags": {}}
                         for (x1, y1, x2, y2), c, g in zip(b.tolist(), lab, ig) if not g]
        f.write_text(json.dumps(doc))
    record = run_import(resolved, cycle=1, path=folder, progress=False, log=quiet)
    assert record["status"] == "imported" and sorted(record["images_labeled"]) == sorted(selected)

    # The rerun trains on the imported labels and evaluates cycle 1.
    rc, out, err = _alod(capsys, "cycles", "--config", config, *argv, "--no-progress")
    assert rc == 0, out + err
    state = json.loads(layout.cycles_state.read_text())
    first = state["cycles"][0]
    assert first["cycle"] == 1 and first["step"] == "evaluated" and first["pool_size"] == 4, first
    assert "cycle 2: 4 images selected; waiting for their labels" in out  # and cycle 2 waits for people
    assert sorted(state["pool"]["names"]) == sorted(selected)
    assert set(state["pool"]["sources"]) == {record["source"]} and record["source"].startswith("labelme:")
