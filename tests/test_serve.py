"""``alod serve`` without Label Studio: its endpoints over HTTP on a free local port, a fake Label
Studio client, a hand-made cycles state (cycle 1 selected, 3 images) and a random-init model as the
pre-annotating checkpoint. Covered: one project only (403 for others), the labeling config check,
predictions in percent with scores in [0, 1], images confined to the image folder, a bad annotation
refused whole with its problem list and nothing stored, the cycle continuing once every image is
labeled (the real ``alod import``; the cycles replaced by a stub), ``--allow-partial``, and the
REST client's authentication (legacy token, personal access token refresh, no redirects).
The real Label Studio is in ``test_serve_labelstudio.py``."""
from __future__ import annotations

import http.client
import json
import shutil
import threading
import urllib.parse
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alod.annotate.labelstudio import label_config
from alod.config import load_config
from alod.serve import Backend, Steps, label_interface, make_server, project_id
from alod.utils import AlodError, atomic_write_json
from alod_testing import run_layout, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROJECT = "7.1712345678"


# ------------------------------------------------------------------------------------- the run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run whose cycle 1 (3 images) waits for labels, with a random-init 'scorer' checkpoint."""
    import torch

    from alod.data.sources import ensure_dataset, load_split
    from alod.models import build_detector
    from alod.utils import atomic_torch_save

    tmp = tmp_path_factory.mktemp("serve")
    config = write_tiny_config(tmp, model={"box_score_thresh": 0.0}, cycles={"oracle": "human"})
    cfg = load_config(config, [])
    layout = run_layout(cfg)
    ensure_dataset(cfg.data, progress=False)
    train = load_split(cfg.data, "train", cache_dir=layout.cache_dir, log=lambda *_: None)
    torch.manual_seed(0)
    model = build_detector(num_classes=train.num_classes, **asdict(cfg.model))
    atomic_torch_save({"model": model.state_dict()}, layout.pretrain_checkpoint)
    names = sorted(str(x) for x in train.names)
    return {"cfg": cfg, "layout": layout, "train": train, "cycle1": names[:3], "cycle2": names[3:6],
            "classes": tuple(train.classes), "tmp": tmp}


def _reset(run) -> None:
    """Cycle 1 selected, nothing labeled, no serve record."""
    layout = run["layout"]
    atomic_write_json(layout.cycles_state, {
        "format": "alod.cycles/2", "selector": {"name": "random"}, "oracle": "human",
        "pool": {"names": [], "cycles": [], "sources": []},
        "cycles": [{"cycle": 1, "step": "selected", "rule": "random", "selected": run["cycle1"]}]})
    for f in [layout.serve_record, *layout.cycle_dir(1).glob("*"), *layout.cycle_dir(2).glob("*")]:
        if f.is_file():
            f.unlink()


class FakeLabelStudio:
    """What the backend asks Label Studio: the project's config, and to create tasks."""

    def __init__(self, classes):
        self.classes, self.imported, self.urls = classes, [], []

    def __call__(self, url):  # the client factory
        self.urls.append(url)
        return self

    def request(self, method, path, body=None):
        return {"label_config": label_config(self.classes)}

    def import_tasks(self, project, tasks):
        self.imported.append((project, tasks))
        return {"task_count": len(tasks), "task_ids": list(range(1, len(tasks) + 1))}


@pytest.fixture
def served(run):
    """``(base URL, backend, fake Label Studio, calls of the stubbed cycles)`` on a free port."""
    _reset(run)
    fake, calls = FakeLabelStudio(run["classes"]), []

    def run_cycles(cfg, *, progress, log):  # the cycle trains and selects cycle 2 (no training here)
        layout = run["layout"]
        state = json.loads(layout.cycles_state.read_text())
        calls.append(json.loads(layout.cycle_labels_record(1).read_text()))
        state["cycles"][0]["step"] = "evaluated"
        state["cycles"].append({"cycle": 2, "step": "selected", "rule": "random", "selected": run["cycle2"]})
        atomic_write_json(layout.cycles_state, state)
        shutil.copyfile(layout.pretrain_checkpoint, layout.cycle_checkpoint(1))  # cycle 2's pre-annotator
        return state

    server = make_server("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.backend = Backend(run["cfg"], public_url=url, label_studio_url="http://ls.invalid", threshold=0.0,
                             client_factory=fake, steps=Steps(run_cycles=run_cycles), log=lambda *_: None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url, server.backend, fake, calls
    server.shutdown()
    server.server_close()
    # The next test resets the run: this backend's job must be over (generous: shared CPUs crawl).
    server.backend.worker.join(600)
    assert not server.backend.worker.running(), "a background job outlived its test"


def _http(url: str, method: str, path: str, body=None) -> tuple[int, object]:
    """One request with ``path`` sent exactly as given (no client-side normalisation)."""
    host = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=60)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    if resp.getheader("Content-Type") == "application/json":
        return resp.status, json.loads(raw)
    return resp.status, raw


def _setup(url, classes, project=PROJECT, schema=None):
    return _http(url, "POST", "/setup", {"project": project, "schema": schema or label_config(classes),
                                         "hostname": "http://localhost:8080", "access_token": "x"})


def _region(label, x, y, w, h, W=160, H=96, rid="r1"):
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": W,
            "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]}}


def _event(name, result, *, ann_id=1, task_id=1, project=7, action="ANNOTATION_CREATED", **ann):
    return {"action": action, "project": {"id": project, "label_config": "..."},
            "task": {"id": task_id, "data": {"image": f"/x/{name}", "alod_name": name}, "meta": {"alod_name": name}},
            "annotation": {"id": ann_id, "result": result, "was_cancelled": False, "ground_truth": False,
                           "completed_by": 1, "task": task_id, **ann}}


# --------------------------------------------------------------------------------- the endpoints
def test_project_id_and_labeling_config():
    assert project_id("12.1712345678") == "12" and project_id(12) == "12" and project_id("x.1") is None
    assert project_id(True) is None and project_id(None) is None
    classes = ("car", "person")
    assert label_interface(label_config(classes), classes) == {"from_name": "label", "to_name": "image",
                                                                "image_key": "image"}
    other = ('<View><Image name="img" value="$photo"/><RectangleLabels name="bbox" toName="img">'
             '<Label value="person"/><Label value="car"/><Label value="dog"/></RectangleLabels></View>')
    assert label_interface(other, classes) == {"from_name": "bbox", "to_name": "img", "image_key": "photo"}
    with pytest.raises(AlodError, match=r"lacks the classes \['person'\]"):
        label_interface(other.replace('<Label value="person"/>', ""), classes)
    with pytest.raises(AlodError, match="no <RectangleLabels>"):
        label_interface('<View><Image name="i" value="$image"/></View>', classes)
    with pytest.raises(AlodError, match="not valid XML"):
        label_interface("<View", classes)
    with pytest.raises(AlodError, match="not valid XML"):  # no entity expansion
        label_interface('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><View>&e;</View>', classes)


def test_one_project_only_and_its_tasks_are_created(served, run):
    url, backend, fake, _ = served
    status, health = _http(url, "GET", "/health")
    assert status == 200 and health["status"] == "UP" and health["model_class"] == "alod"
    assert health["alod"]["cycle"] == 1 and health["alod"]["images"] == 3 and health["alod"]["project"] is None
    # Before /setup nothing is served to anyone.
    assert _http(url, "POST", "/predict", {"project": PROJECT, "tasks": []})[0] == 403

    status, answer = _setup(url, run["classes"])
    assert (status, answer) == (200, {"model_version": "alod-cycle-1"})
    assert json.loads(run["layout"].serve_record.read_text())["project"] == "7"
    backend.worker.join(600)
    assert backend.worker.status()["state"] == "done", backend.worker.status()
    [(project, tasks)] = fake.imported
    assert project == "7" and sorted(t["data"]["alod_name"] for t in tasks) == sorted(run["cycle1"])
    assert all(t["data"]["image"] == f"{url}/data/{t['data']['alod_name']}" for t in tasks)
    assert all(t["predictions"][0]["model_version"] == "alod-cycle-1" for t in tasks)
    assert fake.urls == ["http://ls.invalid"]
    assert _setup(url, run["classes"])[0] == 200 and backend.worker.join(600) is None
    assert len(fake.imported) == 1  # created once

    other = "8.1712345678"
    status, answer = _setup(url, run["classes"], project=other)
    assert status == 403 and "project 7, not 8" in answer["error"]
    assert _http(url, "POST", "/predict", {"project": other, "tasks": []})[0] == 403
    assert _http(url, "POST", "/webhook", _event(run["cycle1"][0], [], project=8))[0] == 403
    assert _http(url, "POST", "/webhook", {"action": "ANNOTATION_CREATED"})[0] == 403  # no project: refused
    assert _http(url, "POST", "/webhook", {"action": "PROJECT_UPDATED", "project": {"id": 7}}) == (
        200, {"status": "ignored", "action": "PROJECT_UPDATED"})
    assert _http(url, "POST", "/nope", {})[0] == 404
    assert not run["layout"].cycle_serve_answers(1).exists()


def test_setup_refuses_a_labeling_config_without_the_classes(served, run):
    url, *_ = served
    schema = label_config(("car",))
    status, answer = _setup(url, run["classes"], schema=schema)
    assert status == 400 and "lacks the classes" in answer["error"] and "<RectangleLabels" in answer["error"]
    status, answer = _http(url, "POST", "/setup", {"schema": label_config(run["classes"])})
    assert status == 400 and "no project id" in answer["error"]


def test_predict_gives_percent_boxes_and_scores_in_the_unit_interval(served, run):
    url, backend, _, _ = served
    assert _setup(url, run["classes"])[0] == 200
    backend.worker.join(600)
    a, b = run["cycle1"][:2]
    tasks = [{"id": 1, "data": {"image": f"{url}/data/{urllib.parse.quote(a)}"}},
             {"id": 2, "data": {"alod_name": b, "image": "whatever"}},
             {"id": 3, "data": {"image": "http://elsewhere/x.jpg"}}, {"id": 4, "data": {"alod_name": "not/in/it.jpg"}}]
    status, answer = _http(url, "POST", "/predict", {"project": PROJECT, "tasks": tasks,
                                                     "label_config": label_config(run["classes"]), "params": {}})
    assert status == 200 and len(answer["results"]) == 4
    assert answer["results"][2:] == [[], []]  # not images of this cycle: no prediction
    for pred in answer["results"][:2]:
        assert pred["model_version"] == "alod-cycle-1" and 0.0 <= pred["score"] <= 1.0
        assert pred["result"], "a random-init model at threshold 0 still gives boxes"
        for r in pred["result"]:
            v = r["value"]
            assert r["type"] == "rectanglelabels" and (r["from_name"], r["to_name"]) == ("label", "image")
            assert 0.0 <= v["x"] and 0.0 <= v["y"] and v["width"] > 0 and v["height"] > 0
            assert v["x"] + v["width"] <= 100.0 + 1e-9 and v["y"] + v["height"] <= 100.0 + 1e-9
            assert 0.0 <= r["score"] <= 1.0 and v["rectanglelabels"][0] in run["classes"]
    # No schedule (random selector): the task's score is the mean of its boxes' scores.
    first = answer["results"][0]
    assert first["score"] == pytest.approx(sum(r["score"] for r in first["result"]) / len(first["result"]))

    # Another project's tag names are used as its config names them, and images found by URL.
    schema = ('<View><Image name="img" value="$photo"/><RectangleLabels name="bbox" toName="img">'
              + "".join(f'<Label value="{c}"/>' for c in run["classes"]) + "</RectangleLabels></View>")
    status, answer = _http(url, "POST", "/predict", {"project": PROJECT, "label_config": schema, "tasks": [
        {"id": 1, "data": {"photo": f"{url}/data/{a}"}}]})
    assert status == 200 and {(r["from_name"], r["to_name"]) for r in answer["results"][0]["result"]} == {
        ("bbox", "img")}


def test_images_are_served_only_from_the_image_folder(served, run, tmp_path):
    url, backend, _, _ = served
    name = run["cycle1"][0]
    status, data = _http(url, "GET", f"/data/{urllib.parse.quote(name)}")
    assert status == 200 and data == (Path(run["train"].image_root) / name).read_bytes()
    secret = run["tmp"] / "tiny.yaml"
    root = Path(run["train"].image_root)
    rel = Path("/".join([".."] * len(root.relative_to(run["tmp"]).parts))) / "tiny.yaml"
    assert (root / rel).resolve() == secret.resolve()
    for path in [f"/data/{rel}", f"/data/{urllib.parse.quote(str(rel), safe='')}", "/data/%2e%2e/%2e%2e/tiny.yaml",
                 f"/data/{secret}", f"/data//{secret}", f"/data/{urllib.parse.quote(str(secret), safe='')}",
                 "/data/..%5c..%5ctiny.yaml", f"/data/./{name}", "/data/", "/data/a%00.jpg"]:
        status, answer = _http(url, "GET", path)
        assert status == 403, (path, status, answer)
    assert _http(url, "GET", "/data/no_such_image.jpg")[0] == 404
    # A link inside the folder that points out of it is refused too (its name is even a dataset name).
    (root / "evil.jpg").symlink_to(secret)
    backend._names.add("evil.jpg")
    try:
        assert _http(url, "GET", "/data/evil.jpg")[0] == 403
    finally:
        (root / "evil.jpg").unlink()


def test_a_bad_annotation_is_refused_whole_and_nothing_is_stored(served, run):
    url, backend, _, _ = served
    assert _setup(url, run["classes"])[0] == 200
    name = run["cycle1"][0]
    good = _region("car", 10, 20, 15, 30)
    for result, kind in [([good, _region("unicorn", 50, 20, 10, 10, rid="r2")], "unknown_category"),
                         ([good, _region("car", 90, 20, 40, 10, rid="r2")], "box_outside_image"),
                         ([{"id": "p", "type": "polygonlabels", "value": {"points": []}}], "not_a_box")]:
        status, answer = _http(url, "POST", "/webhook", _event(name, result))
        assert status == 422, answer
        assert answer["stored"] is False and [p["kind"] for p in answer["problems"]] == [kind]
        assert answer["problems"][0]["where"].startswith(f"task 1 ({name}) annotation 1")
        assert not backend.layout.cycle_serve_answers(1).exists()
    status, answer = _http(url, "POST", "/webhook", _event(name, [good], was_cancelled=True))
    assert status == 422 and [p["kind"] for p in answer["problems"]] == ["image_missing"]
    assert "cancelled" in answer["problems"][0]["detail"]
    status, answer = _http(url, "POST", "/webhook", _event(run["cycle2"][0], [good]))
    assert status == 422 and [p["kind"] for p in answer["problems"]] == ["image_not_asked_for"]
    status, answer = _http(url, "POST", "/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 7}})
    assert status == 400
    assert not backend.layout.cycle_serve_answers(1).exists()
    health = _http(url, "GET", "/health")[1]["alod"]
    assert health["answered"] == 0 and len(health["refused"]) == 5
    assert health["refused"][0]["problems"][0]["kind"] == "unknown_category"


def test_the_cycle_continues_once_every_image_is_labeled(served, run):
    url, backend, fake, calls = served
    assert _setup(url, run["classes"])[0] == 200
    backend.worker.join(600)
    a, b, c = run["cycle1"]
    status, answer = _http(url, "POST", "/webhook", _event(a, [_region("car", 10, 20, 15, 30)], ann_id=11))
    assert (status, answer["status"], answer["answered"], answer["continuing"]) == (201, "stored", 1, False)
    # The annotator corrects it (same annotation id): replaced, not added.
    event = _event(a, [_region("bus", 10, 20, 15, 30)], ann_id=11, action="ANNOTATION_UPDATED")
    assert _http(url, "POST", "/webhook", event)[1]["answered"] == 1
    stored = json.loads(backend.layout.cycle_serve_answers(1).read_text())
    assert [(t["meta"]["alod_name"], [x["id"] for x in t["annotations"]]) for t in stored] == [(a, [11])]
    assert stored[0]["annotations"][0]["result"][0]["value"]["rectanglelabels"] == ["bus"]
    # Deleted in Label Studio: gone here too.
    status, answer = _http(url, "POST", "/webhook", {"action": "ANNOTATIONS_DELETED", "project": {"id": 7},
                                                     "annotations": [{"id": 11}]})
    assert (status, answer["removed"]) == (200, 1) and json.loads(backend.layout.cycle_serve_answers(1).read_text()) == []
    for k, (name, label) in enumerate([(a, "bus"), (b, "car"), (c, "truck")]):
        status, answer = _http(url, "POST", "/webhook", _event(name, [_region(label, 10, 20, 15, 30)],
                                                               ann_id=20 + k, task_id=k + 1))
        assert status == 201 and answer["answered"] == k + 1 and answer["continuing"] == (k == 2)
    backend.worker.join(600)
    assert backend.worker.status()["state"] == "done", backend.worker.status()
    [record] = calls  # the real alod import ran before the cycles
    assert sorted(record["images_labeled"]) == sorted(run["cycle1"]) and record["images_returned"] == []
    assert record["tool"] == "labelstudio" and record["boxes"] == 3
    # What the annotators changed against the pre-annotations Label Studio showed (threshold 0: every
    # detection of the pretrained model), counted as alod import counts it after alod export.
    exported = json.loads(backend.layout.cycle_export_record(1, "labelstudio").read_text())
    assert exported["served_by"] == "alod serve" and exported["preannotate"] is True
    pre = sum(len(exported["preannotation_boxes"][x]["boxes"]) for x in run["cycle1"])
    edits = record["edits"]
    assert edits["preannotated"] is True and sorted(edits["per_image"]) == sorted(run["cycle1"])
    t = edits["totals"]
    assert t["added"] + t["changed"] + t["kept"] == 3  # every imported box is new, a fix, or kept
    assert t["deleted"] + t["changed"] + t["kept"] == pre  # every pre-annotation is deleted, fixed or kept
    # ... and the next cycle's tasks were created, pre-annotated by cycle 1's model.
    assert [sorted(t["data"]["alod_name"] for t in tasks) for _, tasks in fake.imported] == [
        sorted(run["cycle1"]), sorted(run["cycle2"])]
    assert _http(url, "GET", "/health")[1]["model_version"] == "alod-cycle-2"
    status, answer = _http(url, "POST", "/webhook", _event(a, [_region("car", 10, 20, 15, 30)], ann_id=99))
    assert status == 422 and answer["problems"][0]["kind"] == "image_not_asked_for"


def test_continue_follows_import_allow_partial(served, run):
    url, backend, fake, calls = served
    assert _setup(url, run["classes"])[0] == 200
    backend.worker.join(600)
    with pytest.raises(AlodError, match="no annotation of cycle 1"):
        backend.continue_cycle(1)
    a = run["cycle1"][0]
    assert _http(url, "POST", "/webhook", _event(a, [_region("car", 10, 20, 15, 30)]))[0] == 201
    with pytest.raises(AlodError, match="2 of cycle 1's 3 images have no answer.*--allow-partial"):
        backend.continue_cycle(1)
    assert not backend.layout.cycle_labels(1).exists() and calls == []
    assert backend.continue_and_publish(1, allow_partial=True) == 2
    [record] = calls
    assert record["images_labeled"] == [a] and sorted(record["images_returned"]) == sorted(run["cycle1"][1:])
    assert len(fake.imported) == 2


def test_cli_refuses_allow_partial_without_continue(capsys, run):
    from alod.cli import main

    assert main(["serve", "--config", str(run["tmp"] / "tiny.yaml"), "--allow-partial"]) == 2
    assert "--allow-partial goes with --continue" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the REST client
class _FakeLabelStudioServer(BaseHTTPRequestHandler):
    """Accepts ``Token legacy`` and ``Bearer access2``; ``/api/token/refresh`` hands out access1,
    then access2 (access1 'expires'); ``/api/moved`` redirects."""

    seen: list = []
    issued = 0

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/api/token/refresh":
            type(self).issued += 1
            ok = json.loads(body) == {"refresh": "a.b.c"}
            self._send(200 if ok else 401, {"access": f"access{type(self).issued}"})
        elif self.path == "/api/moved":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.2:1/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.headers.get("Authorization") in ("Token legacy", "Bearer access2"):
            self._send(201, {"task_count": 2, "task_ids": [5, 6], "path": self.path})
        else:
            self._send(401, {"detail": "no"})

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_client_authenticates_with_either_kind_of_key():
    from alod.annotate.labelstudio_client import LabelStudioClient

    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLabelStudioServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = LabelStudioClient(url, "legacy").import_tasks(3, [{"data": {}}, {"data": {}}])
        assert got["task_ids"] == [5, 6] and got["path"] == "/api/projects/3/import?return_task_ids=true"
        _FakeLabelStudioServer.seen.clear()
        assert LabelStudioClient(url, "a.b.c").import_tasks("3", [])["task_count"] == 2
        # access1 is refused once, so the client refreshes and retries with access2.
        assert [a for _, a in _FakeLabelStudioServer.seen] == [None, "Bearer access1", None, "Bearer access2"]
        with pytest.raises(AlodError, match="refused the API key"):
            LabelStudioClient(url, "wrong").import_tasks(3, [])
        with pytest.raises(AlodError, match="HTTP 302"):  # the key never follows a redirect
            LabelStudioClient(url, "legacy").request("GET", "/api/moved")
        with pytest.raises(AlodError, match="no Label Studio API key"):
            LabelStudioClient(url, "")
    finally:
        server.shutdown()
        server.server_close()


def test_a_cycle_completed_while_the_worker_was_busy_continues_at_the_next_setup(served, run):
    url, backend, fake, calls = served
    assert _setup(url, run["classes"])[0] == 200
    backend.worker.join(600)
    release = threading.Event()
    assert backend.worker.start("publish", release.wait, 30)  # e.g. a slow job of another kind
    for k, name in enumerate(run["cycle1"]):
        status, answer = _http(url, "POST", "/webhook", _event(name, [_region("car", 10, 20, 15, 30)],
                                                               ann_id=30 + k, task_id=k + 1))
        assert status == 201 and answer["continuing"] is False
    release.set()
    backend.worker.join(600)
    assert calls == []
    assert _setup(url, run["classes"])[0] == 200  # Label Studio calls /setup often
    backend.worker.join(600)
    assert backend.worker.status()["job"] == "continue" and len(calls) == 1
