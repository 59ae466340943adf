"""Every path of a run: ``runs/<run>/`` (state, checkpoints, schedule) and ``tensor_logs/<run>/``.

This module is the only place that spells a path inside a run. Stages import it (and the shared
layers), never each other: the cycles find the schedule here, not in the scoring stage; scoring finds
the scorer checkpoint here, not in the pretraining stage. It imports neither torch nor YAML.

::

    runs/<run>/
      .lock .lock.owner.json      one command at a time (alod.utils.RunLock)
      cache/                      parsed label indexes (keyed by the label file's sha256)
      problems_<split>.jsonl      bad label records skipped in non-strict mode
      unreadable_images.jsonl     images that failed to decode during a run (non-strict mode)
      pretrain/   config.yaml partition.json checkpoint_last.pt metrics.json metrics.jsonl
      scores/     config.yaml <key>/{manifest.json, shard_NNNNN.npz}
      schedule.json
      cycles/     config.yaml state.json metrics.jsonl cycle_NN/{checkpoint_last.pt, metrics.json}
                  cycle_NN/selection.json     predicted and labeled boxes, class weights (selection options)
                  cycle_NN/label_work.json    the annotator's work per image (cycles.oracle: simulated_boxes)
                  annotate_config.yaml        the config of the last alod export / alod import
                  cycle_NN/export_<format>/   a cycle's images for annotators (alod export)
                  cycle_NN/export_<format>.json   what that export held (images, checkpoint, threshold)
                  cycle_NN/{labels.npz, labels.json, import_problems.jsonl}   alod import (human oracle)
                  cycle_NN/import_problems.refused-NNN.jsonl   the problems of a refused alod import
                  labelstudio_serve.json      alod serve: the Label Studio project, tasks created
                  cycle_NN/labelstudio_{answers,tasks}.json   alod serve: annotations taken, tasks sent
      compare/    report.json report.md curves.png runs.json timings.json (alod compare)
    tensor_logs/<run>/            per-cycle scalars and images; pretrain/ and cycle_NN/ sub-runs

Each stage writes the configuration it actually ran with (``config.yaml``) next to its outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The checkpoint :func:`alod.engine.fit` writes after every epoch, in its ``ckpt_dir``.
CHECKPOINT_LAST = "checkpoint_last.pt"
#: The best evaluated weights under plateau stopping (:class:`alod.engine.Plateau`), beside it.
CHECKPOINT_BEST = "checkpoint_best.pt"

#: Stage names, as the ``alod`` subcommands spell them (``annotate``: ``alod export`` and ``alod import``).
STAGES = ("pretrain", "batches", "cycles", "annotate")


@dataclass(frozen=True)
class RunLayout:
    """The folders of one run: ``root = <out_dir>/<name>``, ``tb_root = <tb_dir>/<name>``."""

    root: Path
    tb_root: Path

    @classmethod
    def from_config(cls, run) -> RunLayout:
        """From the ``run:`` section (:class:`alod.config.RunConfig`: ``out_dir``, ``tb_dir``, ``name``)."""
        return cls(root=Path(run.out_dir) / run.name, tb_root=Path(run.tb_dir) / run.name)

    # ------------------------------------------------------------------------------ shared by stages
    def stage_config(self, stage: str) -> Path:
        """Where ``stage`` (one of :data:`STAGES`) writes the resolved config it ran with."""
        if stage == "annotate":  # beside the cycles' own config.yaml, which it must not replace
            return self.cycles_dir / "annotate_config.yaml"
        folders = {"pretrain": self.pretrain_dir, "batches": self.scores_dir, "cycles": self.cycles_dir}
        if stage not in folders:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        return folders[stage] / "config.yaml"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def lock_owner(self) -> Path:
        return self.root / ".lock.owner.json"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    def problems_path(self, split: str) -> Path:
        return self.root / f"problems_{split}.jsonl"

    @property
    def unreadable_images(self) -> Path:
        return self.root / "unreadable_images.jsonl"

    # ----------------------------------------------------------------------------------- pretraining
    @property
    def pretrain_dir(self) -> Path:
        return self.root / "pretrain"

    @property
    def pretrain_checkpoint(self) -> Path:
        return self.pretrain_dir / CHECKPOINT_LAST

    @property
    def partition(self) -> Path:
        return self.pretrain_dir / "partition.json"

    @property
    def pretrain_metrics(self) -> Path:
        return self.pretrain_dir / "metrics.json"

    @property
    def pretrain_log(self) -> Path:
        return self.pretrain_dir / "metrics.jsonl"

    @property
    def pretrain_tb(self) -> Path:
        return self.tb_root / "pretrain"

    # ------------------------------------------------------------------------------------ scoring
    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def score_shards(self, key: str) -> Path:
        """Shards of one (checkpoint, strategy, params, dataset, shard size) combination."""
        return self.scores_dir / key

    @property
    def schedule(self) -> Path:
        return self.root / "schedule.json"

    # ------------------------------------------------------------------------------------- cycles
    @property
    def cycles_dir(self) -> Path:
        return self.root / "cycles"

    @property
    def cycles_state(self) -> Path:
        return self.cycles_dir / "state.json"

    @property
    def cycles_log(self) -> Path:
        return self.cycles_dir / "metrics.jsonl"

    @property
    def label_work(self) -> Path:
        """``alod compare``'s per-cycle annotator actions and model agreement (a cache)."""
        return self.cycles_dir / "label_work.json"

    def cycle_dir(self, cycle: int) -> Path:
        return self.cycles_dir / f"cycle_{cycle:02d}"

    def cycle_checkpoint(self, cycle: int) -> Path:
        return self.cycle_dir(cycle) / CHECKPOINT_LAST

    def cycle_metrics(self, cycle: int) -> Path:
        return self.cycle_dir(cycle) / "metrics.json"

    def cycle_selection(self, cycle: int) -> Path:
        """What the selection options decided for the cycle (predicted and labeled boxes, class
        weights): written by the selector when ``score.batch``, ``score.class_weights`` or
        ``schedule.budget`` is not the default."""
        return self.cycle_dir(cycle) / "selection.json"

    def cycle_label_work(self, cycle: int) -> Path:
        """The simulated annotator's work on the cycle's images against the previous model's
        pre-annotations, per image and in total (``cycles.oracle: simulated_boxes``, written by the
        oracle; :mod:`alod.cycle.oracles`)."""
        return self.cycle_dir(cycle) / "label_work.json"

    def cycle_labeled_metrics(self, cycle: int) -> Path:
        """Cycle ``cycle - 1``'s model evaluated on the images labeled before cycle ``cycle``
        (``score.class_weights: difficulty`` in adaptive selection): written by the selector."""
        return self.cycle_dir(cycle) / "labeled_metrics.json"

    @staticmethod
    def metrics_beside(checkpoint: Path) -> Path:
        """The ``metrics.json`` the stage that wrote ``checkpoint`` wrote beside it (``pretrain/`` and
        ``cycles/cycle_NN/`` both do): the scorer's validation metrics for ``score.class_weights``."""
        return Path(checkpoint).parent / "metrics.json"

    def cycle_epoch_metrics(self, cycle: int, epoch: int) -> Path:
        """Validation metrics after epoch ``epoch`` (1-based) of cycle ``cycle`` (``cycles.stop: plateau``)."""
        return self.cycle_dir(cycle) / f"metrics_epoch_{epoch:03d}.json"

    # --------------------------------------------------------- human oracle (alod export / import)
    def cycle_export_dir(self, cycle: int, fmt: str) -> Path:
        """The folder ``alod export --format fmt`` fills for annotators."""
        return self.cycle_dir(cycle) / f"export_{fmt}"

    def cycle_export_record(self, cycle: int, fmt: str) -> Path:
        """What that export held (images, pre-annotation checkpoint, threshold); outside the folder
        annotators get, so that no tool mistakes it for one of its files."""
        return self.cycle_dir(cycle) / f"export_{fmt}.json"

    def cycle_labels(self, cycle: int) -> Path:
        """The imported labels (a :class:`alod.data.index.DetectionIndex` ``.npz``)."""
        return self.cycle_dir(cycle) / "labels.npz"

    def cycle_labels_record(self, cycle: int) -> Path:
        """What was imported: tool, file, sha256, images labeled and returned, problem counts."""
        return self.cycle_dir(cycle) / "labels.json"

    def cycle_import_problems(self, cycle: int) -> Path:
        """Every problem of the last ``alod import`` of the cycle, one JSON object a line."""
        return self.cycle_dir(cycle) / "import_problems.jsonl"

    def cycle_refused_import_problems(self, cycle: int, attempt: int) -> Path:
        """The problems of refused import attempt ``attempt`` (1, 2, ...) of the cycle: a refused
        import changes no stored file, so its problems go beside, under the attempt's own name."""
        return self.cycle_dir(cycle) / f"import_problems.refused-{attempt:03d}.jsonl"

    # ------------------------------------------------------------- Label Studio backend (alod serve)
    @property
    def serve_record(self) -> Path:
        """``alod serve``'s record: the Label Studio project it serves and the cycles whose tasks it
        created there."""
        return self.cycles_dir / "labelstudio_serve.json"

    def cycle_serve_answers(self, cycle: int) -> Path:
        """The annotations ``alod serve`` accepted for the cycle, as a Label Studio JSON export (what
        ``alod import --format labelstudio`` reads)."""
        return self.cycle_dir(cycle) / "labelstudio_answers.json"

    def cycle_serve_tasks(self, cycle: int) -> Path:
        """The tasks (with their predictions) ``alod serve`` created in Label Studio for the cycle."""
        return self.cycle_dir(cycle) / "labelstudio_tasks.json"

    @property
    def cycles_tb(self) -> Path:
        return self.tb_root

    def cycle_tb(self, cycle: int) -> Path:
        return self.tb_root / f"cycle_{cycle:02d}"

    # ------------------------------------------------------------------------------------ compare
    @property
    def compare_dir(self) -> Path:
        """``alod compare``'s report (each compared run has a run folder of its own)."""
        return self.root / "compare"
