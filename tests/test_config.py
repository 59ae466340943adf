import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alod.config import parse_overrides
from alod.stages.setup import load_checked_config
from alod.utils import AlodError


def test_base_include_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.5\n  batch_size: 3\nrun:\n  name: base\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain:\n  batch_size: 4\n")
    cfg = load_checked_config(tmp_path / "child.yaml", ["run.name=x", "model.anchor_sizes=[8,16,32,64]"])
    assert cfg.train.lr == 0.5 and cfg.train.batch_size == 4 and cfg.run.name == "x"
    assert cfg.model.anchor_sizes == (8, 16, 32, 64)


def test_unknown_key_and_bad_type(tmp_path):
    with pytest.raises(AlodError, match=r"unknown key\(s\) \['epoch'\].*valid keys"):
        load_checked_config(None, ["cycles.epoch=3"])
    with pytest.raises(AlodError, match="expected an integer"):
        load_checked_config(None, ["cycles.epochs=many"])
    with pytest.raises(AlodError, match="does not exist"):
        load_checked_config(tmp_path / "nope.yaml")
    with pytest.raises(AlodError, match="query_size"):
        load_checked_config(None, ["schedule.batch_size=10", "schedule.query_size=20"])


def test_shipped_configs_load():
    from alod.commands.common import REPO_CONFIGS

    demo = load_checked_config(REPO_CONFIGS / "demo.yaml")
    bdd = load_checked_config(REPO_CONFIGS / "bdd100k.yaml")
    assert demo.data.kind == "synthetic"
    assert (bdd.pretrain.fraction, bdd.schedule.batch_size, bdd.schedule.query_size, bdd.schedule.num_batches,
            bdd.cycles.epochs, bdd.data.image_size, bdd.model.name) == (
        0.7, 5000, 1000, 14, 50, (1280, 720), "fasterrcnn_resnet50_fpn")


def test_parse_overrides():
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(AlodError):
        parse_overrides(["novalue"])


def test_strategy_params_are_per_strategy_and_checked_at_load():
    cfg = load_checked_config(None, ["score.strategy=box_count"])
    assert cfg.score.strategy_params() == {}  # box_count runs with its own defaults
    cfg = load_checked_config(None, ["score.params.entropy.aggregate=max", "score.params.box_count.score_threshold=0.3"])
    assert cfg.score.strategy_params() == {"aggregate": "max"}
    # Switching the strategy from the command line picks that strategy's own table.
    assert load_checked_config(None, ["score.params.entropy.aggregate=max", "score.strategy=random"]).score.strategy_params() == {}
    with pytest.raises(AlodError, match=r"score.params.entropy.agregate: strategy 'entropy' has no parameter "
                                        r"'agregate'; its parameters: aggregate, min_score"):
        load_checked_config(None, ["score.params.entropy.agregate=max"])
    with pytest.raises(AlodError, match=r"score.params.entropy.aggregate: 'median' is not one of"):
        load_checked_config(None, ["score.params.entropy.aggregate=median"])
    with pytest.raises(AlodError, match=r"score.strategy: unknown strategy 'entrpy'; choose one of .*entropy"):
        load_checked_config(None, ["score.strategy=entrpy"])
    # The flat form of earlier versions is refused with the new spelling.
    with pytest.raises(AlodError, match=r"score.params.aggregate: not a strategy.*params: \{entropy: \{aggregate"):
        load_checked_config(None, ["score.params.aggregate=sum"])


def test_base_and_override_params_merge_per_strategy(tmp_path):
    (tmp_path / "base.yaml").write_text("score:\n  params:\n    entropy: {aggregate: max, min_score: 0.2}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nscore:\n  params:\n    entropy: {min_score: 0.1}\n")
    cfg = load_checked_config(tmp_path / "child.yaml")
    assert cfg.score.params == {"entropy": {"aggregate": "max", "min_score": 0.1}}


def test_selector_and_oracle_are_checked_at_load():
    cfg = load_checked_config(None)
    assert (cfg.cycles.selector, cfg.cycles.oracle) == ("precomputed", "simulated")
    with pytest.raises(AlodError, match=r"cycles.selector: unknown selector 'adaptiv'; choose one of adaptive, precomputed"):
        load_checked_config(None, ["cycles.selector=adaptiv"])
    with pytest.raises(AlodError, match=r"cycles.oracle: unknown oracle 'humans'; choose one of human, simulated"):
        load_checked_config(None, ["cycles.oracle=humans"])


def test_loading_a_config_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    from alod.commands.common import REPO_CONFIGS
    from alod_testing import subprocess_env

    code = ("import sys; from alod.stages.setup import load_checked_config; "
            f"load_checked_config({str(REPO_CONFIGS / 'demo.yaml')!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("override, message", [
    ("schedule.query_size=6000", r"schedule.batch_size \(5000\) must be >= schedule.query_size \(6000\)"),
    ("pretrain.fraction=1.5", r"pretrain.fraction must be in \(0, 1\], got 1.5"),
    ("pretrain.fraction=0", r"pretrain.fraction must be in \(0, 1\], got 0.0"),
    ("cycles.epochs=0", r"cycles.epochs must be >= 1, got 0"),
    ("pretrain.epochs=-1", r"pretrain.epochs must be >= 1, got -1"),
    ("data.image_size=[-1280,720]", r"data.image_size must be two positive integers \(width, height\), got \(-1280, 720\)"),
    ("data.synthetic.width=0", r"data.synthetic.width must be >= 32 pixels, got 0"),
    ("train.warmup_fraction=1.5", r"train.warmup_fraction must be in \[0, 1\], got 1.5"),
    ("train.momentum=1", r"train.momentum must be in \[0, 1\), got 1.0"),
    ("train.grad_clip_norm=0", r"train.grad_clip_norm must be null \(no clipping\) or > 0, got 0.0"),
    ("model.max_size=100", r"model.max_size \(100\) must be >= model.min_size \(192\)"),
    ("model.anchor_sizes=[]", r"model.anchor_sizes must be a non-empty list of positive sizes, got \(\)"),
    ("cycles.num_cycles=0", r"cycles.num_cycles must be null \(every cycle\) or > 0, got 0"),
    ("run.name=../elsewhere", r"run.name must be a plain folder name"),
    ("score.params.box_count.threshold=0.3", r"strategy 'box_count' has no parameter 'threshold'"),
    ("score.subset=0", r"score.subset must be in \(0, 1\], got 0.0"),
    ("score.subset=1.5", r"score.subset must be in \(0, 1\], got 1.5"),
    ("score.subset=-0.5", r"score.subset must be in \(0, 1\], got -0.5"),
    ("score.subset=0.1", (r"score.subset \(0.1\) scores ceil\(0.1 x 5000\) = 500 images of each arrival batch "
                          r"\(schedule.batch_size\), fewer than one cycle's schedule.query_size \(1000\)")),
])
def test_settings_that_cannot_work_are_refused_at_load(override, message):
    with pytest.raises(AlodError, match=message):
        load_checked_config(None, [override])


def test_score_subset_must_leave_a_cycle_in_every_batch():
    assert load_checked_config(None).score.subset == 1.0
    assert load_checked_config(None, ["score.subset=0.2"]).score.subset == 0.2  # ceil(0.2 x 5000) = 1000 = query_size
    # 0.3 x 10 is 3 (not 4 from float noise), enough for cycles of 3
    assert load_checked_config(None, ["score.subset=0.3", "schedule.batch_size=10", "schedule.query_size=3"]).score.subset == 0.3
    with pytest.raises(AlodError, match=r"ceil\(0.25 x 10\) = 3 .* schedule.query_size \(4\)"):
        load_checked_config(None, ["score.subset=0.25", "schedule.batch_size=10", "schedule.query_size=4"])


def test_every_range_key_exists():
    from alod.config import _RANGES, Config, _get

    cfg = Config()
    for key, ok, _ in _RANGES:
        assert ok(_get(cfg, key)), f"the default of {key} must pass its own check"


def _dotted_keys(cls=None, prefix=""):
    import dataclasses
    import typing

    from alod.config import Config

    cls = cls or Config
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _dotted_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(_dotted_keys())) | st.text(min_size=1, max_size=12), value=_JUNK)
def test_any_override_loads_or_is_one_named_error(key, value):
    """Whatever value lands on whatever key, loading gives a Config or an AlodError, never a traceback."""
    import yaml

    try:
        load_checked_config(None, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"])
    except AlodError as e:
        assert str(e).strip() and "\n" not in str(e).strip()
