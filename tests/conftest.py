"""Shared fixtures. Tests are collected with ``--import-mode=importlib`` (pyproject.toml), so
tests/ needs no ``__init__.py`` and cannot clash with a top-level ``tests`` package that some
third-party packages install into site-packages; shared helpers live in ``alod_testing.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from alod_testing import SHARED_DATA, write_tiny_config


@pytest.fixture
def tiny_config(tmp_path):
    return write_tiny_config(tmp_path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine OpenMP spin-waits
    made the model and engine tests 3-6x slower. Restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (it ships beside the repo as ../shared/data)")
    return SHARED_DATA
