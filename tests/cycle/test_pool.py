import pytest

from alod.cycle.pool import LabeledPool
from alod.utils import AlodError


def test_pool_records_cycle_and_source_and_round_trips():
    pool = LabeledPool()
    pool.add(["a", "b"], cycle=1)
    pool.add(["c"], cycle=2, source="cvat")
    assert pool.added_in(2) == ["c"] and len(pool) == 3 and "b" in pool
    other = LabeledPool()
    other.load_state_dict(pool.state_dict())
    assert other.state_dict() == {"names": ["a", "b", "c"], "cycles": [1, 1, 2], "sources": ["dataset", "dataset", "cvat"]}
    with pytest.raises(AlodError, match="already labeled"):
        pool.add(["a"], cycle=3)
