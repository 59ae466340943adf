"""The ``alod`` command and the three stage scripts. No logic here: parse, load config, call one function.

    alod demo                 all three stages on the built-in dataset (configs/demo.yaml)
    alod pretrain  ...        = accelerate launch train_part_entropy.py ...
    alod batches --ckpt ...   = python make_batches.py --ckpt ...
    alod cycles    ...        = python main_sample.py ...
    alod compare --strategies entropy,random --modes precomputed,adaptive --seeds 0,1,2
    alod evaluate --gt ... --pred ... --out metrics.json
    alod export --cycle N --format labelme [--preannotate]    a cycle's images for annotators
    alod import --cycle N PATH                                 their labels back (cycles.oracle: human)
    alod serve [--port 9090] | --continue [--allow-partial]   Label Studio ML backend over the waiting cycle

Each subcommand is a ``(configure_parser, run)`` pair in :data:`COMMANDS`; a stage script is the
same pair under the script's own name (:func:`script_main`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alod.utils import AlodError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = REPO_CONFIGS / "demo.yaml"


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="YAML config (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _load(args):
    from alod.config import load_config

    return load_config(args.config, args.overrides)


# ------------------------------------------------------------------------------------ pretrain
def _pretrain_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Stage 1: train the scorer on the fixed pretraining partition (resumes from the last epoch). "
                     "Writes runs/<run>/pretrain/ and tensor_logs/<run>/pretrain/.")
    _add_config_args(p)


def _pretrain(args) -> None:
    from alod.stages.pretrain import run_pretrain

    ckpt = run_pretrain(_load(args), progress=not args.no_progress)
    print(f"checkpoint: {ckpt}\nnext: python make_batches.py --ckpt {ckpt} --config {args.config}")


# ------------------------------------------------------------------------------------- batches
def _batches_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Stage 2: score every training image with a checkpoint and write runs/<run>/schedule.json "
                     "(resumes from the last complete score shard). Strategies: "
                     + ", ".join(_strategy_names()) + "; parameters per strategy with "
                     "--set score.params.<strategy>.<param>=<value>.")
    p.add_argument("--ckpt", default=None,
                   help="scorer checkpoint (default: runs/<run>/pretrain/checkpoint_last.pt; "
                        "not read by strategies that need no model, such as random)")
    _add_config_args(p)


def _strategy_names() -> list[str]:
    from alod.strategies import STRATEGIES

    return sorted(STRATEGIES)


def _batches(args) -> None:
    from alod.stages.scoring import run_scoring

    out = run_scoring(_load(args), ckpt=args.ckpt, progress=not args.no_progress)
    print(f"schedule: {out}\nnext: python main_sample.py --config {args.config}")


# -------------------------------------------------------------------------------------- cycles
def _cycles_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Stage 3: run the cycles (select, label, retrain from scratch, evaluate, log); rerun to "
                     "resume. Writes runs/<run>/cycles/ and tensor_logs/<run>/.")
    p.add_argument("--schedule", default=None, help="schedule.json (default: runs/<run>/schedule.json)")
    p.add_argument("--max-cycles", type=int, default=None, help="stop after this many cycles in total")
    _add_config_args(p)


def _cycles(args) -> None:
    from alod.stages.cycles import run_cycles, summary_table

    cfg = _load(args)
    state = run_cycles(cfg, schedule_file=args.schedule, progress=not args.no_progress, max_cycles=args.max_cycles)
    print(summary_table(state))
    print(f"TensorBoard: tensorboard --logdir {cfg.run.tb_dir}")


# ---------------------------------------------------------------------------------------- demo
def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Pretrain, score and run the cycles in one process (default: configs/demo.yaml)."
    _add_config_args(p)


def _demo(args) -> None:
    from alod.demo import run_demo

    run_demo(_load(args), progress=not args.no_progress)


# ------------------------------------------------------------------------------------- compare
def _csv(kind):
    def parse(text: str):
        items = [x.strip() for x in text.split(",") if x.strip()]
        try:
            return [kind(x) for x in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def _compare_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Run the comparison protocol of the config's compare: section (every strategy and the random "
                     "baseline in every mode and seed from the same cycle-1 images, a random run at equal boxes per "
                     "strategy run, the full-data line) and write runs/<run>/compare/{report.md, report.json, "
                     "curves.png, run.json}. Rerun the same command to resume; finished runs are reused.")
    p.add_argument("--strategies", type=_csv(str), default=None,
                   help="comma-separated strategies, random included (default: compare.strategies)")
    p.add_argument("--modes", type=_csv(str), default=None,
                   help="comma-separated selection modes: precomputed, adaptive (default: compare.modes)")
    p.add_argument("--seeds", type=_csv(int), default=None, help="comma-separated seeds (default: compare.seeds)")
    p.add_argument("--full-seeds", type=_csv(int), default=None,
                   help="seeds of the full-data line; empty string for none (default: compare.full_seeds)")
    p.add_argument("--no-full", action="store_true", help="skip the full-data line (same as --full-seeds '')")
    p.add_argument("--no-equal-boxes", action="store_true", help="skip the random runs at equal boxes")
    p.add_argument("--variant", action="append", default=None, metavar="NAME=KEY=VALUE[;KEY=VALUE...]",
                   help="an extra strategy <strategy>+NAME per strategy but random, with these config overrides, "
                        "e.g. div=score.batch=kmeanspp; repeatable; replaces compare.variants")
    _add_config_args(p)


def _compare(args) -> None:
    from alod.compare import resolve, run_compare

    cfg = resolve(_load(args), strategies=args.strategies, modes=args.modes, seeds=args.seeds,
                  full_seeds=[] if args.no_full else args.full_seeds,
                  equal_boxes=False if args.no_equal_boxes else None,
                  variants=args.variant)
    report = run_compare(cfg, progress=not args.no_progress)
    for entry in report["comparisons"]:
        print(entry["sentence"])


# ------------------------------------------------------------------------------------ evaluate
def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    from alod.commands import evaluate

    evaluate.configure_parser(p)


def _evaluate(args) -> int:
    from alod.commands import evaluate

    return evaluate.run(args)


# ------------------------------------------------------------------------------ export / import
def _format_names() -> list[str]:
    from alod.annotate.formats import format_names

    return format_names()


def _command(name: str, args, *rest: str, raw: str = "") -> str:
    """``alod <name>`` with the config and overrides this command was given, then ``rest`` (quoted)
    and ``raw`` (a placeholder, unquoted)."""
    import shlex

    parts = ["alod", name, "--config", args.config]
    for o in args.overrides:
        parts += ["--set", o]
    return " ".join(shlex.quote(p) for p in [*parts, *rest]) + (f" {raw}" if raw else "")


def _export_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a cycle's selected images (cycles.oracle: human) for an annotation tool into "
                     "runs/<run>/cycles/cycle_NN/export_<format>/, optionally with the current model's detections as "
                     "pre-annotations; then label them and run alod import.")
    p.add_argument("--cycle", type=int, required=True, help="a cycle the loop has selected")
    p.add_argument("--format", dest="fmt", required=True, choices=_format_names(), help="the annotation tool's format")
    p.add_argument("--preannotate", action="store_true",
                   help="add the current model's detections (cycle N-1's checkpoint; cycle 1: the pretraining one)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="lowest detection score kept as a pre-annotation (default: %(default)s)")
    p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links)")
    p.add_argument("--overwrite", action="store_true", help="write over an earlier export of this cycle and format")
    _add_config_args(p)


def _export(args) -> None:
    from alod.stages.annotation import run_export

    out = run_export(_load(args), cycle=args.cycle, fmt=args.fmt, preannotate=args.preannotate,
                     threshold=args.threshold, copy_images=args.copy, overwrite=args.overwrite,
                     progress=not args.no_progress)
    path = out["import_path"]
    cmd = (_command("import", args, "--cycle", str(args.cycle), path) if not path.startswith("<")
           else _command("import", args, "--cycle", str(args.cycle), raw=path))
    print(f"after labeling: {cmd}")


def _import_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Bring a cycle's labels back from an annotation tool (cycles.oracle: human): problems are printed "
                     "and written to runs/<run>/cycles/cycle_NN/import_problems.jsonl, the labels stored in "
                     "cycle_NN/labels.npz; then rerun main_sample.py. The same file twice changes nothing; a "
                     "different one replaces the previous import until the cycle's label step has run.")
    p.add_argument("path", help="the file (or LabelMe folder, CVAT zip) the annotation tool wrote")
    p.add_argument("--cycle", type=int, required=True, help="the cycle the labels are for")
    p.add_argument("--format", dest="fmt", default="auto", choices=["auto", *_format_names()],
                   help="the file's format (default: detected from its content)")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a file that misses some of the cycle's images; they go back to the unlabeled pool")
    _add_config_args(p)


def _import(args) -> None:
    from alod.stages.annotation import run_import

    run_import(_load(args), cycle=args.cycle, path=args.path, fmt=args.fmt, allow_partial=args.allow_partial,
               progress=not args.no_progress)
    import shlex

    overrides = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    print(f"next: python main_sample.py --config {shlex.quote(args.config)}{overrides}")


# --------------------------------------------------------------------------------------- serve
def _serve_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Serve the run's cycle waiting for labels (cycles.oracle: human) as a Label Studio 1.x ML backend: "
                     "connect it as the project's model; it creates the cycle's tasks with pre-annotations, takes "
                     "the annotations through the webhook, and continues the cycle once every image is labeled. "
                     "Creating tasks needs LABEL_STUDIO_API_KEY (and LABEL_STUDIO_URL or --label-studio-url). "
                     "With --continue: import the accepted annotations now, continue the cycle, and exit.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=9090, help="port to listen on (default: %(default)s)")
    p.add_argument("--public-url", default=None,
                   help="the URL Label Studio and the annotators' browsers reach this server at "
                        "(default: http://HOST:PORT)")
    p.add_argument("--project", type=int, default=None,
                   help="the Label Studio project id to serve (default: the first that calls /setup)")
    p.add_argument("--label-studio-url", default=None,
                   help="Label Studio's URL (default: $LABEL_STUDIO_URL, else the one it sends to /setup)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="lowest detection score shown as a pre-annotation (default: %(default)s)")
    p.add_argument("--no-publish", action="store_true",
                   help="do not create tasks in the project (import alod export --format labelstudio's yourself)")
    p.add_argument("--continue", dest="continue_", action="store_true",
                   help="do not serve: import the annotations accepted so far, continue the cycle, create the next "
                        "cycle's tasks, exit")
    p.add_argument("--allow-partial", action="store_true",
                   help="with --continue: images without an annotation go back to the unlabeled pool "
                        "(as alod import --allow-partial)")
    _add_config_args(p)


def _serve(args) -> None:
    from alod.serve import run_continue, run_serve

    if args.allow_partial and not args.continue_:
        raise AlodError("--allow-partial goes with --continue (the server continues once every image is labeled)")
    if args.continue_:
        nxt = run_continue(_load(args), allow_partial=args.allow_partial, label_studio_url=args.label_studio_url,
                           public_url=args.public_url, threshold=args.threshold, publish=not args.no_publish)
        print(f"cycle waiting for labels: {nxt}" if nxt is not None else "no cycle waits for labels")
        return
    run_serve(_load(args), host=args.host, port=args.port, public_url=args.public_url, project=args.project,
              label_studio_url=args.label_studio_url, threshold=args.threshold, publish=not args.no_publish)


#: name -> (help, configure_parser, run)
COMMANDS = {
    "demo": ("run all three stages on the built-in dataset", _demo_parser, _demo),
    "pretrain": ("stage 1: train the scorer (= train_part_entropy.py)", _pretrain_parser, _pretrain),
    "batches": ("stage 2: score the pool and write the schedule (= make_batches.py)", _batches_parser, _batches),
    "cycles": ("stage 3: run the active-learning cycles (= main_sample.py)", _cycles_parser, _cycles),
    "compare": ("strategies against random over seeds: report and curves", _compare_parser, _compare),
    "evaluate": ("mAP of predictions against ground truth (BDD100K or COCO files)", _evaluate_parser, _evaluate),
    "export": ("a cycle's images for annotators (LabelMe, CVAT, COCO, Label Studio)", _export_parser, _export),
    "import": ("annotators' labels of a cycle back (cycles.oracle: human)", _import_parser, _import),
    "serve": ("a Label Studio ML backend over the cycle waiting for labels", _serve_parser, _serve),
}


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="alod", description="Active learning for object detection.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, configure, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        configure(p)
        p.set_defaults(func=run)
    return top


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return _guard(lambda: args.func(args))


def script_main(command: str, *, prog: str, argv=None) -> int:
    """A stage script (``train_part_entropy.py``, ...): subcommand ``command`` under its own name."""
    _, configure, run = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=prog)
    configure(parser)
    args = parser.parse_args(argv)
    return _guard(lambda: run(args))


def _guard(fn) -> int:
    """User errors (AlodError) print one clear line instead of a traceback."""
    try:
        rc = fn()
    except AlodError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NotImplementedError as e:
        print(f"not built yet: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(rc or 0)
