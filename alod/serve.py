"""``alod serve``: alod as the ML backend of a Label Studio (1.x) project, over the run's current cycle.

With ``cycles.oracle: human`` the cycle loop stops after selecting a cycle's images; ``alod export``
/ ``alod import`` carry them through files. ``alod serve`` does the same through Label Studio:

1. **Connect.** Project > Settings > Model > Connect Model, URL ``http://127.0.0.1:9090`` (or
   ``POST /api/ml {"url", "project"}``). Label Studio calls ``/health`` and ``/setup``; the first
   ``/setup`` binds alod serve to that project (``--project`` binds it from the start), recorded in
   ``runs/<run>/cycles/labelstudio_serve.json``. Label Studio itself adds the webhook
   ``<url>/webhook`` (all events) to the project.
2. **Tasks.** In the background after ``/setup``, one task per image of the cycle waiting for labels
   is created in the project (``POST /api/projects/<id>/import``), with the pre-annotations of
   ``alod export --preannotate`` (the same code: :func:`alod.stages.annotation.cycle_task`, cycle
   ``N - 1``'s model, cycle 1: the scorer) and the images' URLs ``<public url>/data/<name>``.
   ``cycle_NN/labelstudio_tasks.json`` keeps what was sent, and ``cycle_NN/export_labelstudio.json``
   the pre-annotations' boxes (as ``alod export --preannotate`` does), so that the import of step 4
   records in ``labels.json`` ``edits`` what annotators added, deleted, changed and kept against
   them. ``--no-publish``: none are created.
3. **Label.** Each ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` webhook is read by the Label
   Studio reader of ``alod import`` (:func:`alod.annotate.labelstudio.read_tasks`). An annotation
   with any problem is refused whole (HTTP 422 with the problem list, also in ``/health`` and the
   log; nothing stored: the annotator fixes it and submits again); an accepted one is stored in
   ``cycle_NN/labelstudio_answers.json``, a Label Studio JSON export (one task per image, all its
   accepted annotations: ground truth, else the first, as ``alod import`` chooses).
   ``ANNOTATIONS_DELETED`` removes them again.
4. **Continue.** Once every image of the cycle has an accepted annotation, a background worker runs
   :func:`~alod.stages.annotation.run_import` on that file (``alod import --format labelstudio``:
   the same checks again, ``labels.npz``), then :func:`~alod.stages.cycles.run_cycles` (label,
   train, evaluate, select the next cycle), then creates the next cycle's tasks. ``alod serve
   --continue [--allow-partial]`` does it at once, with ``alod import --allow-partial``'s meaning:
   images without an annotation go back to the unlabeled pool. While the worker runs, annotations
   of the finished cycle are refused (409): its labels are already imported.

Endpoints (JSON; in brackets the timeout Label Studio 1.23 gives the call, ``ML_TIMEOUT_*`` and
``WEBHOOK_TIMEOUT`` in its environment):

* ``GET /health`` [1 s] -> ``{"status": "UP", "model_class": "alod", "model_version", "alod": {"run",
  "cycle", "images", "answered", "project", "worker": {"state", "job", "detail", "error", ...},
  "refused": [last refusals]}}``.
* ``POST /setup`` [3 s] ``{"project": "<id>.<created timestamp>", "schema": <labeling config XML>,
  "hostname", "access_token", "extra_params"}`` -> ``{"model_version": "alod-cycle-N"}``. The
  config must have a ``<RectangleLabels>`` on an ``<Image>`` with every class of the dataset (400
  otherwise); its names are used in the predictions. ``access_token`` is not used or kept.
* ``POST /predict`` [100 s] ``{"tasks": [task, ...], "project", "label_config", "params"}`` ->
  ``{"results": [one per task]}``: for an image of the current cycle ``{"model_version", "score",
  "result": [rectanglelabels regions]}`` (``x, y, width, height`` in percent, region ``score`` in
  ``[0, 1]``), for any other task ``[]`` (no prediction). The task's ``score``, which Label Studio
  sorts by ("Prediction score"), is the selection strategy's score of the image in the precomputed
  schedule rescaled over the cycle to ``[0, 1]`` (as ``alod export``; raw in ``data.alod_priority``),
  and where the run has none (the ``adaptive`` and ``random`` selectors keep no scores) the mean
  score of the image's boxes (no ``score`` without boxes).
* ``POST /webhook`` [1 s] ``{"action", "project": {"id", ...}, "task": {"id", "data", ...},
  "annotation": {"id", "result", "was_cancelled", "ground_truth", ...}}`` -> 201 ``{"status":
  "stored", "cycle", "image", "answered", "images", "continuing"}``, 422 ``{"error", "problems":
  [{"where", "kind", "detail"}]}``, 409 (no cycle waits, or it is being trained), 200 ``{"status":
  "ignored"}`` for other events.
* ``GET /data/<URL-quoted dataset name>``: the image, for the annotators' browsers. Only names of
  the training index, resolved inside its image folder (symbolic links out of it refused); any
  ``..``, absolute, empty or backslash segment is 403.

Requests that name another project than the bound one get 403. Errors are ``{"error": ...}``,
which Label Studio shows. Label Studio must be allowed to call a local address
(``ML_BLOCK_LOCAL_IP=false``, ``SSRF_PROTECTION_ENABLED=false``) when both run on one machine.

Creating tasks needs Label Studio's URL (``--label-studio-url``, else ``$LABEL_STUDIO_URL``, else
the ``hostname`` of ``/setup``) and an API key in ``$LABEL_STUDIO_API_KEY``
(:mod:`alod.annotate.labelstudio_client`). alod serve binds 127.0.0.1 by default and has no
authentication of its own: whoever reaches its port can read the dataset's images.

Nothing holds the run folder's lock between requests: each step that reads or writes the run takes
it (``alod import`` or ``main_sample.py`` meanwhile make a request answer 409 or 503), and one
in-process lock keeps this server's own steps in turn.
"""
from __future__ import annotations

import json
import mimetypes
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import defusedxml.ElementTree as ET
import numpy as np

from alod.annotate.formats import get_format
from alod.annotate.labelstudio import FROM_NAME, TO_NAME, label_config, read_tasks, tasks
from alod.annotate.labelstudio_client import client_from_env
from alod.config import Config
from alod.layout import RunLayout
from alod.stages import annotation, cycles
from alod.stages.annotation import waiting_cycle
from alod.stages.cycles import load_state
from alod.stages.setup import open_stage
from alod.utils import AlodError, RunLock, atomic_write_json

MODEL_CLASS = "alod"
RECORD_FORMAT = "alod.serve/1"
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENT = "ANNOTATIONS_DELETED"
#: Largest request body read (a /predict of many tasks is the largest Label Studio sends).
MAX_BODY = 64 << 20
#: How long a /predict waits for another step of this server (Label Studio waits 100 s).
PREDICT_WAIT_S = 60.0
#: How many refused annotations /health lists.
KEEP_REFUSED = 20


class Refused(Exception):
    """A request answered with an HTTP error: ``status``, a message, and more JSON fields."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.extra = status, extra


@dataclass
class Steps:
    """The stage functions the backend calls (tests inject fakes; ``None``: the real ones).

    ``cycle_task(cfg, *, cycle, preannotate, threshold, progress, log) -> (ExportTask, info)``,
    ``run_import(cfg, *, cycle, path, fmt, allow_partial, progress, log)``,
    ``run_cycles(cfg, *, progress, log) -> state``.
    """

    cycle_task: Callable | None = None
    run_import: Callable | None = None
    run_cycles: Callable | None = None

    def resolved(self) -> Steps:

        return Steps(cycle_task=self.cycle_task or annotation.cycle_task,
                     run_import=self.run_import or annotation.run_import,
                     run_cycles=self.run_cycles or cycles.run_cycles)


# ------------------------------------------------------------------------------------- helpers
def project_id(value) -> str | None:
    """Label Studio's project id from ``"<id>.<timestamp>"`` (``/setup``, ``/predict``) or an int."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.split(".", 1)[0].isdigit():
        return str(int(value.split(".", 1)[0]))
    return None


def label_interface(schema, classes) -> dict:
    """``{"from_name", "to_name", "image_key"}`` of a labeling config: its ``<RectangleLabels>`` on an
    ``<Image value="$key">`` that has a ``<Label>`` for every class.

    Raises:
        AlodError: not XML, or no such tag (the message holds a config that works).
    """


    fix = f"; use this labeling config:\n{label_config(classes)}"
    try:
        root = ET.fromstring(schema) if isinstance(schema, str) and schema.strip() else None
    except Exception as e:  # ParseError and defusedxml's refusals (entities, DTDs)
        raise AlodError(f"the project's labeling config is not valid XML ({e}){fix}") from None
    if root is None:
        raise AlodError(f"the project has no labeling config{fix}")
    images = {e.get("name"): e for e in root.iter("Image")}
    for rect in root.iter("RectangleLabels"):
        image = images.get(rect.get("toName"))
        key = (image.get("value") or "") if image is not None else ""
        if not key.startswith("$"):
            continue
        have = {x.get("value") for x in rect.iter("Label")}
        missing = [c for c in classes if c not in have]
        if missing:
            raise AlodError(f"the project's <RectangleLabels name={rect.get('name')!r}> lacks the classes "
                            f"{missing} (names must match exactly){fix}")
        return {"from_name": rect.get("name"), "to_name": image.get("name"), "image_key": key[1:]}
    raise AlodError(f"the project's labeling config has no <RectangleLabels> on an <Image value=\"$...\">{fix}")


def ls_tasks(task, *, image_url_prefix: str, interface: dict) -> list[dict]:
    """Label Studio tasks with predictions for an :class:`~alod.annotate.core.ExportTask` (the
    export's :func:`~alod.annotate.labelstudio.tasks`); a prediction without a priority gets the
    mean score of its boxes as its ``score`` (both lie in ``[0, 1]``)."""

    out = tasks(task, image_url_prefix=image_url_prefix, **interface)
    for t in out:
        pred = t["predictions"][0]
        scores = [r["score"] for r in pred["result"] if "score" in r]
        if "score" not in pred and scores:
            pred["score"] = float(np.mean(scores))
    return out


def _problem_rows(problems) -> list[dict]:
    return [{"where": p.where, "kind": p.kind, "detail": p.detail} for p in problems]


def _safe_name(raw: str) -> str | None:
    """A dataset image name from a URL path, or ``None`` when it could leave the image folder."""
    name = urllib.parse.unquote(raw)
    if not name or "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    if any(seg in ("", ".", "..") for seg in name.split("/")):
        return None
    return name


# -------------------------------------------------------------------------------------- worker
class Worker:
    """One background job at a time: training a cycle takes minutes, never in a request thread.

    ``status()``: ``{"state": "idle" | "running" | "done" | "failed", "job", "detail", "error",
    "started", "finished"}`` (times as Unix seconds), for ``/health``.
    """

    def __init__(self, log: Callable[[str], object] = print):
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status: dict = {"state": "idle", "job": None, "detail": None, "error": None,
                              "started": None, "finished": None}
        self.log = log

    def start(self, job: str, fn: Callable, *args) -> bool:
        """Run ``fn(*args)`` in the background; ``False`` when a job is running already."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return False
            self._status = {"state": "running", "job": job, "detail": None, "error": None,
                            "started": time.time(), "finished": None}
            self._thread = threading.Thread(target=self._run, args=(fn, args), name=f"alod-{job}", daemon=True)
            self._thread.start()
            return True

    def _run(self, fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
            state, error = "done", None
        except Exception as e:  # kept for /health: a failed job must not kill the server
            state, error = "failed", f"{type(e).__name__}: {e}" if not isinstance(e, AlodError) else str(e)
            self.log(f"alod serve: {self._status['job']} failed: {error}")
        with self._lock:
            self._status.update(state=state, error=error, finished=time.time())

    def detail(self, text: str) -> None:
        with self._lock:
            self._status["detail"] = text

    def status(self) -> dict:
        with self._lock:
            return dict(self._status)

    def running(self, job: str | None = None) -> bool:
        s = self.status()
        return s["state"] == "running" and (job is None or s["job"] == job)

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)


# ------------------------------------------------------------------------------------- backend
class Backend:
    """The answers of the ML backend, without HTTP (:func:`make_server` puts them behind it).

    Args:
        cfg: the run's config (the resolved ``runs/<run>/cycles/config.yaml`` the cycles print).
        public_url: where Label Studio and the annotators' browsers reach this server; images are
            ``<public_url>/data/<name>``.
        project: bind to this Label Studio project now (else the first ``/setup`` binds).
        label_studio_url: Label Studio's URL for creating tasks (else ``$LABEL_STUDIO_URL``, else the
            ``hostname`` ``/setup`` sent).
        threshold: the lowest detection score shown as a pre-annotation, in ``[0, 1]``.
        publish: create each cycle's tasks in the project.
        client_factory: ``(url or None) -> client`` with ``import_tasks(project, tasks)`` and
            ``request(method, path)`` (default: :func:`~alod.annotate.labelstudio_client.client_from_env`).
        steps: the stage functions (tests inject fakes).
    """

    def __init__(self, cfg: Config, *, public_url: str, project: int | str | None = None,
                 label_studio_url: str | None = None, threshold: float = 0.5, publish: bool = True,
                 client_factory: Callable | None = None, steps: Steps | None = None,
                 log: Callable[[str], object] = print):

        if not 0.0 <= threshold <= 1.0:
            raise AlodError(f"--threshold {threshold}: a detection score threshold lies in [0, 1]")
        self.cfg, self.layout, self.log = cfg, RunLayout.from_config(cfg.run), log
        self.image_prefix = public_url.rstrip("/") + "/data/"
        self.threshold, self.publish_tasks, self.label_studio_url = threshold, publish, label_studio_url
        self.client_factory = client_factory or client_from_env
        self.steps = (steps or Steps()).resolved()
        self.worker = Worker(log)
        self._lock = threading.Lock()  # caches, the record, the refusals: held for moments only
        self._run = threading.Lock()  # this server's steps on the run folder, one at a time
        self._plain: dict[int, Any] = {}  # cycle -> ExportTask (names, sizes, classes)
        self._pre: dict[int, Any] = {}  # cycle -> ExportTask with pre-annotations
        self._interface: dict | None = None
        self._refused: list[dict] = []
        self.classes, self.image_root, self._names = _dataset_images(cfg, log)
        record = self._record()
        if project is not None and str(project) != record.get("project"):
            record["project"] = project_id(int(project))
            self._save_record(record)
        self.project: str | None = record.get("project")

    # ---------------------------------------------------------------------------- run files
    def _record(self) -> dict:
        path = self.layout.serve_record
        if not path.is_file():
            return {"format": RECORD_FORMAT, "project": None, "label_studio_url": None, "public_url": None,
                    "published": {}}
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise AlodError(f"{path} cannot be read ({e}); delete it and connect the model again") from None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
            raise AlodError(f"{path}: not an {RECORD_FORMAT} file; delete it and connect the model again")
        return record

    def _save_record(self, record: dict) -> None:
        atomic_write_json(self.layout.serve_record, record)

    def remember(self, **fields) -> None:
        """Record ``fields`` (``public_url``, ``label_studio_url``) in ``labelstudio_serve.json``."""
        with self._lock:
            record = self._record()
            if any(record.get(k) != v for k, v in fields.items()):
                record.update(fields)
                self._save_record(record)

    def _state(self) -> dict | None:

        return load_state(self.layout.cycles_state)

    def waiting(self, state: dict | None = None) -> int | None:
        """The cycle waiting for its labels (``None``: none)."""

        state = self._state() if state is None else state
        return waiting_cycle(state) if state else None

    def _model_version(self, state: dict | None) -> str:
        cycles = [c["cycle"] for c in (state or {}).get("cycles", [])]
        n = self.waiting(state) if state else None
        return f"alod-cycle-{n if n is not None else max(cycles, default=0)}"

    def _answers(self, cycle: int) -> list:
        path = self.layout.cycle_serve_answers(cycle)
        if not path.is_file():
            return []
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, list):
            raise AlodError(f"{path}: not a JSON list of tasks; it is written only by alod serve")
        return doc

    def _run_step(self, timeout: float | None, *, run_lock: bool = True):
        """A context manager: this server's turn (503 after ``timeout`` seconds; ``None``: wait) and,
        with ``run_lock``, the run folder's lock (409 while another command holds it). Stage
        functions take the run folder's lock themselves: call them with ``run_lock=False``."""
        return _RunStep(self, timeout, run_lock)

    # ------------------------------------------------------------------------------- projects
    def _check_project(self, pid: str | None) -> None:
        if self.project is None:
            raise Refused(403, "alod serve is not set up for a project yet: connect it as the project's model "
                          "(Label Studio then calls /setup), or start it with --project")
        if pid != self.project:
            raise Refused(403, f"alod serve is set up for Label Studio project {self.project}, not {pid}; to serve "
                          f"another project start it with --project {pid}")

    def _bind(self, pid: str) -> None:
        with self._lock:
            if self.project is None:
                record = self._record()
                record["project"] = pid
                self._save_record(record)
                self.project = pid
                self.log(f"alod serve: set up for Label Studio project {pid}")
        self._check_project(pid)

    def _interface_for(self, label_config) -> dict:
        """The project's tag names, from ``label_config`` (if given), else those ``/setup`` saw."""

        if isinstance(label_config, str) and label_config.strip():
            try:
                return label_interface(label_config, self.classes)
            except AlodError as e:
                raise Refused(400, str(e)) from None
        with self._lock:
            return dict(self._interface or {"from_name": FROM_NAME, "to_name": TO_NAME, "image_key": "image"})

    # ------------------------------------------------------------------------------ endpoints
    def health(self) -> dict:
        """``GET /health``: never waits for a lock (Label Studio gives it 1 s)."""
        state, error = None, None
        try:
            state = self._state()
        except AlodError as e:
            error = str(e)
        cycle = self.waiting(state) if state else None
        rec = next((c for c in (state or {}).get("cycles", []) if c["cycle"] == cycle), None)
        answered = None
        if cycle is not None:
            try:
                answered = len(self._answers(cycle))
            except (AlodError, OSError, ValueError) as e:
                error = str(e)
        with self._lock:
            refused = list(self._refused)
        return {"status": "UP", "model_class": MODEL_CLASS, "model_version": self._model_version(state),
                "alod": {"run": self.cfg.run.name, "cycle": cycle, "images": len(rec["selected"]) if rec else None,
                         "answered": answered, "project": self.project, "worker": self.worker.status(),
                         "refused": refused, "error": error}}

    def setup(self, body: dict) -> dict:
        """``POST /setup``: bind the project, check its labeling config, start creating the tasks."""
        pid = project_id(body.get("project"))
        if pid is None:
            raise Refused(400, f"no project id in /setup's 'project' ({body.get('project')!r})")
        self._bind(pid)
        interface = self._interface_for(body.get("schema"))
        with self._lock:
            self._interface = interface
        hostname = body.get("hostname")
        if isinstance(hostname, str) and hostname.startswith(("http://", "https://")):
            self.remember(label_studio_url=hostname.rstrip("/"))
        state = self._state()
        cycle = self.waiting(state)
        if cycle is not None and self.publish_tasks and not self._published(cycle):
            self.worker.start("publish", self.publish, cycle)
        elif cycle is not None and self.worker.status()["state"] in ("idle", "done"):
            # The last annotation may have come while another job ran: Label Studio calls /setup
            # often, so a complete cycle continues here at the latest (not again after a failure:
            # /health shows it; alod serve --continue retries).
            rec = next(c for c in state["cycles"] if c["cycle"] == cycle)
            if len(self._answers(cycle)) >= len(rec["selected"]):
                self.worker.start("continue", self.continue_and_publish, cycle, False)
        return {"model_version": self._model_version(state)}

    def predict(self, body: dict) -> dict:
        """``POST /predict``: one answer per task, ``[]`` for tasks outside the current cycle."""
        self._check_project(project_id(body.get("project")))
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise Refused(400, "/predict needs 'tasks', a list of Label Studio tasks")
        interface = self._interface_for(body.get("label_config"))
        cycle = self.waiting()
        by_name = {}
        if cycle is not None and tasks:
            preds = ls_tasks(self._preannotated(cycle, wait=PREDICT_WAIT_S), image_url_prefix=self.image_prefix,
                             interface=interface)
            by_name = {t["data"]["alod_name"]: t["predictions"][0] for t in preds}
        return {"results": [by_name.get(self._task_name(t, interface), []) for t in tasks]}

    def _task_name(self, task, interface: dict) -> str | None:
        """The dataset image a Label Studio task shows: ``data.alod_name``, else its URL under
        ``/data/`` of this server."""
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("alod_name"), str):
            return data["alod_name"]
        url = data.get(interface["image_key"])
        if isinstance(url, str) and url.startswith(self.image_prefix):
            return _safe_name(url[len(self.image_prefix):].split("?", 1)[0])
        return None

    def webhook(self, body: dict) -> tuple[int, dict]:
        """``POST /webhook``: ``(status, answer)``; see the module docstring."""
        action, project = body.get("action"), body.get("project")
        pid = project_id(project.get("id")) if isinstance(project, dict) else None
        if pid is not None or action in (*ANNOTATION_EVENTS, DELETE_EVENT):
            self._check_project(pid)
        if action in ANNOTATION_EVENTS:
            return 201, self._take_annotation(pid, body)
        if action == DELETE_EVENT:
            return 200, self._drop_annotations(body)
        return 200, {"status": "ignored", "action": action}

    def image(self, raw: str) -> Path:
        """``GET /data/<raw>``: the file of a training image, never a path outside the image folder."""
        name = _safe_name(raw)
        if name is None:
            raise Refused(403, "the image name leaves the image folder")
        if name not in self._names:
            raise Refused(404, "not an image of the training set")
        path = (self.image_root / name).resolve()
        if not path.is_relative_to(self.image_root):
            raise Refused(403, "the image name leaves the image folder")
        if not path.is_file():
            raise Refused(404, "the image file is missing")
        return path

    # ---------------------------------------------------------------------------- annotations
    def _cycle_for_answers(self) -> int:
        if self.worker.running("continue"):
            raise Refused(409, f"{self.worker.status()['detail']}: the cycle's labels are already imported; this "
                          "annotation is not taken (correct the image in a later cycle)")
        cycle = self.waiting()
        if cycle is None:
            raise Refused(409, "no cycle waits for labels (the cycles are training, finished, or not started); "
                          "the annotation is not taken")
        return cycle

    def _plain_task(self, cycle: int):
        """Cycle ``cycle``'s images, sizes and classes (what annotations are checked against)."""
        with self._lock:
            task = self._plain.get(cycle) or self._pre.get(cycle)
        if task is None:
            with self._run_step(30.0, run_lock=False):
                task, _ = self.steps.cycle_task(self.cfg, cycle=cycle, preannotate=False, progress=False,
                                                log=self.log)
            with self._lock:
                self._plain[cycle] = task
        return task

    def _take_annotation(self, pid: str, body: dict) -> dict:

        task, ann = body.get("task"), body.get("annotation")
        if not (isinstance(task, dict) and isinstance(task.get("data"), dict) and isinstance(ann, dict)):
            raise Refused(400, "an annotation event needs 'task' (with 'data') and 'annotation' objects: the "
                          "webhook must send its payload")
        cycle = self._cycle_for_answers()
        ex = self._plain_task(cycle)
        source = f"Label Studio project {pid} annotation {ann.get('id')}"
        one = {"id": task.get("id"), "data": task["data"], "meta": task.get("meta") or {}, "annotations": [ann]}
        result = read_tasks([one], ex, file=source, missing=False)
        if result.problems or len(result.boxes) != 1:
            rows = _problem_rows(result.problems) or [{"where": source, "kind": "image_not_asked_for",
                                                       "detail": f"answers no image of cycle {cycle}"}]
            with self._lock:
                self._refused = (self._refused + [{"source": source, "task": task.get("id"), "problems": rows}])[
                    -KEEP_REFUSED:]
            for r in rows:
                self.log(f"refused: {source}: {r['where']}: {r['kind']}: {r['detail']}")
            raise Refused(422, f"{source}: not stored ({len(rows)} problem(s)); correct it in Label Studio and "
                          "submit again", problems=rows, stored=False)
        name = next(iter(result.boxes))
        one["meta"] = {**(one["meta"] if isinstance(one["meta"], dict) else {}), "alod_name": name}
        return self._store(cycle, ex, name, one)

    def _store(self, cycle: int, ex, name: str, one: dict) -> dict:
        """Add ``one``'s annotation to the cycle's answers (the same annotation id: replaced)."""

        path = self.layout.cycle_serve_answers(cycle)
        order = {im.name: i for i, im in enumerate(ex.images)}
        ann = one["annotations"][0]
        with self._run_step(30.0):
            doc = self._answers(cycle)
            entry = next((t for t in doc if (t.get("meta") or {}).get("alod_name") == name), None)
            if entry is None:
                entry = {"annotations": []}
                doc.append(entry)
            anns = entry["annotations"]
            same = [k for k, a in enumerate(anns) if ann.get("id") is not None and a.get("id") == ann.get("id")]
            if same:
                anns[same[0]] = ann  # an update keeps its place: the first submitted stays first
            else:
                anns.append(ann)
            entry.update(id=one["id"], data=one["data"], meta=one["meta"])
            doc.sort(key=lambda t: order.get(t["meta"]["alod_name"], len(order)))
            atomic_write_json(path, doc)
            answered = set(read_tasks(doc, ex, file=str(path)).boxes)
        complete = answered >= set(order)
        self.log(f"cycle {cycle}: stored the annotation of {name} ({len(answered)} of {len(order)} images)")
        started = complete and self.worker.start("continue", self.continue_and_publish, cycle, False)
        return {"status": "stored", "cycle": cycle, "image": name, "answered": len(answered), "images": len(order),
                "continuing": bool(started)}

    def _drop_annotations(self, body: dict) -> dict:
        gone = {a.get("id") for a in body.get("annotations") or [] if isinstance(a, dict)} - {None}
        cycle = self._cycle_for_answers()
        with self._run_step(30.0):
            doc = self._answers(cycle)
            before = sum(len(t["annotations"]) for t in doc)
            for t in doc:
                t["annotations"] = [a for a in t["annotations"] if a.get("id") not in gone]
            doc = [t for t in doc if t["annotations"]]
            removed = before - sum(len(t["annotations"]) for t in doc)
            if removed:
                atomic_write_json(self.layout.cycle_serve_answers(cycle), doc)
        return {"status": "deleted", "cycle": cycle, "removed": removed}

    # -------------------------------------------------------------------------- model and tasks
    def _preannotated(self, cycle: int, *, wait: float | None):
        """Cycle ``cycle``'s :class:`~alod.annotate.core.ExportTask` with pre-annotations, computed
        once (one inference pass over the cycle's images, as ``alod export --preannotate``)."""
        with self._lock:
            task = self._pre.get(cycle)
        if task is not None:
            return task
        if wait is not None and self.worker.running("continue"):  # a request: do not wait for a training
            raise Refused(503, f"{self.worker.status()['detail']}; retry later")
        with self._run_step(wait, run_lock=False):
            with self._lock:
                task = self._pre.get(cycle)
            if task is None:
                task, info = self.steps.cycle_task(self.cfg, cycle=cycle, preannotate=True, threshold=self.threshold,
                                                   progress=False, log=self.log)
                self.log(f"cycle {cycle}: pre-annotated {len(task.images)} images with {info.get('weights')}")
                # Kept as alod export --preannotate keeps them, so that the import counts what annotators
                # added, deleted and changed against what Label Studio showed them (labels.json "edits").
                atomic_write_json(self.layout.cycle_export_record(cycle, "labelstudio"), annotation.export_record(
                    task, cycle=cycle, fmt=get_format("labelstudio"), preannotate=True, threshold=self.threshold,
                    weights=info.get("weights"), served_by="alod serve"))
                with self._lock:
                    self._pre[cycle] = task
        return task

    def _published(self, cycle: int, record: dict | None = None) -> bool:
        entry = (record or self._record()).get("published", {}).get(str(cycle))
        return bool(entry) and entry.get("project") == self.project

    def publish(self, cycle: int) -> dict | None:
        """Create cycle ``cycle``'s tasks, with their predictions, in the project (once)."""
        if self.project is None:
            self.log(f"cycle {cycle}: no Label Studio project yet; its tasks are created after /setup")
            return None
        if self._published(cycle):
            return None
        record = self._record()
        client = self.client_factory(self.label_studio_url or record.get("label_studio_url"))
        self.worker.detail(f"cycle {cycle}: pre-annotating")
        task = self._preannotated(cycle, wait=None)
        with self._lock:
            interface = self._interface
        if interface is None:  # bound by --project: ask Label Studio for the project's config
            project = client.request("GET", f"/api/projects/{int(self.project)}")
            interface = self._interface_for((project or {}).get("label_config"))
        tasks = ls_tasks(task, image_url_prefix=self.image_prefix, interface=interface)
        self.worker.detail(f"cycle {cycle}: creating {len(tasks)} tasks in project {self.project}")
        atomic_write_json(self.layout.cycle_serve_tasks(cycle), tasks)
        answer = client.import_tasks(self.project, tasks) or {}
        entry = {"project": self.project, "tasks": len(tasks), "task_ids": answer.get("task_ids"),
                 "model_version": f"alod-cycle-{cycle}", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with self._lock:
            record = self._record()
            record.setdefault("published", {})[str(cycle)] = entry
            self._save_record(record)
        self.log(f"cycle {cycle}: created {len(tasks)} tasks in Label Studio project {self.project}")
        return entry

    def continue_cycle(self, cycle: int, allow_partial: bool = False) -> dict:
        """Import the cycle's accepted annotations (``alod import --format labelstudio``) and run the
        cycles on (train, evaluate, select the next cycle). Returns the cycles state."""
        path = self.layout.cycle_serve_answers(cycle)
        if not path.is_file():
            raise AlodError(f"no annotation of cycle {cycle} has been accepted yet ({path} does not exist)")
        with self._run_step(None, run_lock=False):
            self.worker.detail(f"cycle {cycle}: importing {path.name}")
            self.steps.run_import(self.cfg, cycle=cycle, path=path, fmt="labelstudio", allow_partial=allow_partial,
                                  progress=False, log=self.log)
            self.worker.detail(f"cycle {cycle}: training, evaluating and selecting the next cycle")
            return self.steps.run_cycles(self.cfg, progress=False, log=self.log)

    def continue_and_publish(self, cycle: int, allow_partial: bool = False) -> int | None:
        """:meth:`continue_cycle`, then create the next cycle's tasks. Returns the next cycle."""
        state = self.continue_cycle(cycle, allow_partial)
        nxt = self.waiting(state)
        if nxt is None:
            self.log(f"cycle {cycle} is done and no cycle waits for labels: the run's cycles are finished")
        elif self.publish_tasks:
            self.publish(nxt)
        return nxt


class _RunStep:
    """``with backend._run_step(t):`` the in-process lock (503 after ``t`` seconds) and then the run
    folder's lock (409 while another command holds it)."""

    def __init__(self, backend: Backend, timeout: float | None, run_lock: bool):
        self.backend, self.timeout, self.run_lock, self.lock = backend, timeout, run_lock, None

    def __enter__(self):

        b = self.backend
        if not b._run.acquire(timeout=-1 if self.timeout is None else self.timeout):
            raise Refused(503, f"alod serve is busy ({b.worker.status()['detail'] or 'another request'}); retry later")
        if not self.run_lock:
            return self
        try:
            layout = b.layout
            self.lock = RunLock(layout.lock, owner_path=layout.lock_owner, log=b.log).acquire()
        except AlodError as e:
            b._run.release()
            raise Refused(409, str(e)) from None
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.lock is not None:
                self.lock.release()
        finally:
            self.backend._run.release()


def _dataset_images(cfg: Config, log) -> tuple[tuple[str, ...], Path, set[str]]:
    """The dataset's classes, its image folder (resolved) and the training images' names."""

    with open_stage(cfg, "annotate", progress=False, log=log) as ctx:
        train = ctx.load_split("train")
    return tuple(train.classes), Path(train.image_root).resolve(), {str(x) for x in train.names}


# ----------------------------------------------------------------------------------------- HTTP
class _Handler(BaseHTTPRequestHandler):
    """Routes requests to ``self.server.backend`` (a :class:`Backend`); every answer is JSON but
    the images."""

    server_version = "alod-serve"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/health"):
            self._answer(lambda: (200, self.server.backend.health()))
        elif path.startswith("/data/"):
            self._image(path[len("/data/"):])
        else:
            self._json(404, {"error": f"no such endpoint: GET {path}"})

    def do_POST(self) -> None:
        backend = self.server.backend
        routes = {"/setup": lambda b: (200, backend.setup(b)), "/predict": lambda b: (200, backend.predict(b)),
                  "/webhook": backend.webhook}
        path = self.path.split("?", 1)[0]
        if path not in routes:
            self.close_connection = True  # its body is left unread
            self._json(404, {"error": f"no such endpoint: POST {path}"})
            return
        body = self._body()
        if body is not None:
            self._answer(lambda: routes[path](body))

    def _body(self) -> dict | None:
        """The request's JSON object, or ``None`` (an error answered)."""
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            self._json(413 if n > MAX_BODY else 400, {"error": f"Content-Length must be 0..{MAX_BODY}"})
            return None
        try:
            body = json.loads(self.rfile.read(n) or b"{}")
        except ValueError as e:
            self._json(400, {"error": f"the request body is not JSON ({e})"})
            return None
        if not isinstance(body, dict):
            self._json(400, {"error": "the request body must be a JSON object"})
            return None
        return body

    def _answer(self, call: Callable[[], tuple[int, Any]]) -> None:
        try:
            status, obj = call()
        except Refused as e:
            status, obj = e.status, {"error": str(e), **e.extra}
        except AlodError as e:  # the run cannot do it now (busy, missing files): the message says what to do
            status, obj = 503, {"error": str(e)}
        except Exception as e:  # a bug: answer, log, keep serving

            self.server.backend.log(traceback.format_exc())
            status, obj = 500, {"error": f"{type(e).__name__}: {e}"}
        self._json(status, obj)

    def _image(self, raw: str) -> None:
        try:
            path = self.server.backend.image(raw)
            data = path.read_bytes()
        except Refused as e:
            self._json(e.status, {"error": str(e)})
            return
        except OSError as e:
            self._json(404, {"error": f"the image cannot be read ({e.strerror})"})
            return
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        # The labeling page (Label Studio's origin) may read the pixels: images are public to whoever
        # reaches this port anyway.
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "max-age=600")
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, obj) -> None:
        data = json.dumps(obj, allow_nan=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-") -> None:  # Label Studio polls /health: log errors only
        if str(code).isdigit() and int(code) >= 400:
            self.server.backend.log(f"alod serve: {self.command} {self.path.split('?', 1)[0]} -> {code}")

    def log_error(self, format, *args) -> None:
        self.server.backend.log("alod serve: " + format % args)


def make_server(host: str, port: int, backend: Backend | None = None) -> ThreadingHTTPServer:
    """A threading HTTP server on ``host:port`` (``port`` 0: a free one) for ``backend`` (set
    ``server.backend`` later when ``None``)."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    server.backend = backend
    return server


def _public_url(host: str, port: int, public_url: str | None) -> str:
    if public_url:
        if not public_url.startswith(("http://", "https://")):
            raise AlodError(f"--public-url {public_url!r}: give an http(s) URL, e.g. http://127.0.0.1:9090")
        return public_url.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        raise AlodError(f"--host {host!r} listens on every address; give --public-url, the URL Label Studio and "
                        "the annotators' browsers use to reach this machine")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_serve(cfg: Config, *, host: str = "127.0.0.1", port: int = 9090, public_url: str | None = None,
              project: int | None = None, label_studio_url: str | None = None, threshold: float = 0.5,
              publish: bool = True, log: Callable[[str], object] = print, ready: Callable | None = None) -> None:
    """Serve until interrupted (Ctrl-C). ``ready(server, backend)`` is called once it listens."""
    try:
        server = make_server(host, port)
    except OSError as e:
        raise AlodError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    try:
        url = _public_url(host, server.server_address[1], public_url)
        backend = Backend(cfg, public_url=url, project=project, label_studio_url=label_studio_url,
                          threshold=threshold, publish=publish, log=log)
        backend.remember(public_url=url)
        server.backend = backend
        cycle = backend.waiting()
        log(f"alod serve: run {cfg.run.name!r}, cycle waiting for labels: {cycle}; listening on {url}\n"
            f"Label Studio: project > Settings > Model > Connect Model, URL {url}")
        if cycle is not None and publish and backend.project is not None:
            backend.worker.start("publish", backend.publish, cycle)
        if ready is not None:
            ready(server, backend)
        server.serve_forever()
    except KeyboardInterrupt:
        log("alod serve: stopped")
    finally:
        server.server_close()


def run_continue(cfg: Config, *, allow_partial: bool = False, label_studio_url: str | None = None,
                 public_url: str | None = None, threshold: float = 0.5, publish: bool = True,
                 log: Callable[[str], object] = print) -> int | None:
    """``alod serve --continue``: import the waiting cycle's accepted annotations now (with
    ``allow_partial``, the images without one go back to the unlabeled pool), run the cycles on and
    create the next cycle's tasks. Returns the cycle that waits next (``None``: none).

    Raises:
        AlodError: no cycle waits, nothing accepted yet, or images without an annotation and no
            ``allow_partial`` (``alod import``'s message).
    """
    layout = RunLayout.from_config(cfg.run)
    if not layout.serve_record.is_file():
        raise AlodError(f"{layout.serve_record} does not exist: alod serve never ran for this run")
    url = public_url or json.loads(layout.serve_record.read_text(encoding="utf-8")).get("public_url")
    backend = Backend(cfg, public_url=url or "http://127.0.0.1:9090", label_studio_url=label_studio_url,
                      threshold=threshold, publish=publish, log=log)
    cycle = backend.waiting()
    if cycle is None:
        raise AlodError(f"no cycle waits for labels in {layout.cycles_state}")
    state = backend.continue_cycle(cycle, allow_partial)
    nxt = backend.waiting(state)
    if nxt is not None and publish:
        try:
            backend.publish(nxt)
        except AlodError as e:
            log(f"cycle {nxt}: its tasks were not created ({e}); alod serve creates them when Label Studio next "
                "calls /setup")
    return nxt
