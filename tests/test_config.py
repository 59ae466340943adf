import pytest

from alod.config import load_config, parse_overrides
from alod.utils import AlodError


def test_base_include_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.5\n  batch_size: 3\nrun:\n  name: base\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain:\n  batch_size: 4\n")
    cfg = load_config(tmp_path / "child.yaml", ["run.name=x", "model.anchor_sizes=[8,16,32,64]"])
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 4 and cfg.run.name == "x"
    assert cfg.model.anchor_sizes == (8, 16, 32, 64)


def test_unknown_key_and_bad_type(tmp_path):
    with pytest.raises(AlodError, match=r"unknown key\(s\) \['epoch'\].*valid keys"):
        load_config(None, ["cycles.epoch=3"])
    with pytest.raises(AlodError, match="expected an integer"):
        load_config(None, ["cycles.epochs=many"])
    with pytest.raises(AlodError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(AlodError, match="query_size"):
        load_config(None, ["schedule.batch_size=10", "schedule.query_size=20"])


def test_shipped_configs_load():
    from alod.cli import REPO_CONFIGS

    demo = load_config(REPO_CONFIGS / "demo.yaml")
    bdd = load_config(REPO_CONFIGS / "bdd100k.yaml")
    assert demo.data.kind == "synthetic"
    assert (bdd.pretrain.fraction, bdd.schedule.batch_size, bdd.schedule.query_size, bdd.schedule.num_batches,
            bdd.cycles.epochs, bdd.data.image_size, bdd.model.name) == (
        0.7, 5000, 1000, 14, 50, (1280, 720), "fasterrcnn_resnet50_fpn")


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(AlodError):
        parse_overrides(["novalue"])
