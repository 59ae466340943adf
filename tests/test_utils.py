"""alod.utils: the run folder lock (one command at a time on a run folder; a lock left by a killed
command is taken over) and the Registry every registry is."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from alod.config import load_config
from alod.utils import AlodError, RunLock
from alod_testing import REPO, run_layout, subprocess_env

HOLD = """
import sys, time
from alod.utils import RunLock
lock = RunLock(sys.argv[1] + "/.lock", owner_path=sys.argv[1] + "/.lock.owner.json", log=print).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(root):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], env=subprocess_env(), stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _lock(root, log=print):
    return RunLock(root / ".lock", owner_path=root / ".lock.owner.json", log=log)


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    first = _lock(tmp_path).acquire()
    with pytest.raises(AlodError, match=rf"in use by pid {os.getpid()} on .*use another run.name"):
        _lock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / ".lock.owner.json").exists()
    with _lock(tmp_path):  # free again
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(AlodError, match=rf"in use by pid {proc.pid}"):
            _lock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    said = []
    lock = _lock(tmp_path, log=said.append).acquire()
    assert any(f"left by pid {proc.pid}" in s for s in said)
    lock.release()


def test_a_stage_refuses_a_run_in_use(tiny_config, tmp_path):
    layout = run_layout(load_config(tiny_config))
    proc = _holder(layout.root)
    try:
        t0 = time.time()
        r = subprocess.run([sys.executable, str(REPO / "make_batches.py"), "--config", str(tiny_config),
                            "--set", "score.strategy=random", "--no-progress"],
                           cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert f"is in use by pid {proc.pid}" in r.stderr and time.time() - t0 < 60
        assert not layout.schedule.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    r = subprocess.run([sys.executable, str(REPO / "make_batches.py"), "--config", str(tiny_config),
                        "--set", "score.strategy=random", "--no-progress"],
                       cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert layout.schedule.is_file() and not layout.lock_owner.exists()


# ---------------------------------------------------------------------------------------- Registry
def test_registry_registers_gets_and_lists_in_order():
    from alod.utils import Registry

    reg = Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    reg.register("a", "entry a")
    assert reg.get("b") is b and reg["a"] == "entry a" and "a" in reg and len(reg) == 2
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"]  # registration order
    assert reg.get("zz", None) is None  # dict-like default (monkeypatch.setitem relies on it)
    with pytest.raises(AlodError, match=r"^unknown widget 'c'; choose one of a, b$"):
        reg.get("c")
    with pytest.raises(AlodError, match=r"^config: x.kind: unknown widget 'c'; choose one of a, b$"):
        reg.get("c", where="config: x.kind")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", "again")
    copy = reg.copy()
    copy.register("c", "entry c")
    assert "c" in copy and "c" not in reg
