"""The human loop's commands (``cycles.oracle: human``): ``alod export`` and ``alod import`` (a cycle's
images to an annotation tool and its labels back; the work is :mod:`alod.stages.annotation`'s) and
``alod serve`` (Label Studio as a live ML backend over the waiting cycle; :mod:`alod.serve`)."""
from __future__ import annotations

import argparse
import shlex

from alod.annotate.formats import format_names
from alod.commands.common import Command, add_config_args, command_line, load_args_config
from alod.utils import AlodError


def _export_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Write a cycle's selected images (cycles.oracle: human) for an annotation tool into "
                     "runs/<run>/cycles/cycle_NN/export_<format>/, optionally with the current model's detections as "
                     "pre-annotations; then label them and run alod import.")
    p.add_argument("--cycle", type=int, required=True, help="a cycle the loop has selected")
    p.add_argument("--format", dest="fmt", required=True, choices=format_names(), help="the annotation tool's format")
    p.add_argument("--preannotate", action="store_true",
                   help="add the current model's detections (cycle N-1's checkpoint; cycle 1: the pretraining one)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="lowest detection score kept as a pre-annotation (default: %(default)s)")
    p.add_argument("--copy", action="store_true", help="copy the images (default: symbolic links)")
    p.add_argument("--overwrite", action="store_true", help="write over an earlier export of this cycle and format")
    add_config_args(p)


def _export(args) -> None:
    from alod.stages.annotation import run_export  # why: keeps torch out of alod --help and config checks

    out = run_export(load_args_config(args), cycle=args.cycle, fmt=args.fmt, preannotate=args.preannotate,
                     threshold=args.threshold, copy_images=args.copy, overwrite=args.overwrite,
                     progress=not args.no_progress)
    path = out["import_path"]
    cmd = (command_line("import", args, "--cycle", str(args.cycle), path) if not path.startswith("<")
           else command_line("import", args, "--cycle", str(args.cycle), raw=path))
    print(f"after labeling: {cmd}")


def _import_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Bring a cycle's labels back from an annotation tool (cycles.oracle: human): problems are printed "
                     "and written to runs/<run>/cycles/cycle_NN/import_problems.jsonl, the labels stored in "
                     "cycle_NN/labels.npz; then rerun main_sample.py. The same file twice changes nothing; a "
                     "different one replaces the previous import until the cycle's label step has run.")
    p.add_argument("path", help="the file (or LabelMe folder, CVAT zip) the annotation tool wrote")
    p.add_argument("--cycle", type=int, required=True, help="the cycle the labels are for")
    p.add_argument("--format", dest="fmt", default="auto", choices=["auto", *format_names()],
                   help="the file's format (default: detected from its content)")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept a file that misses some of the cycle's images; they go back to the unlabeled pool")
    add_config_args(p)


def _import(args) -> None:
    from alod.stages.annotation import run_import  # why: keeps torch out of alod --help and config checks

    run_import(load_args_config(args), cycle=args.cycle, path=args.path, fmt=args.fmt,
               allow_partial=args.allow_partial, progress=not args.no_progress)
    overrides = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    print(f"next: python main_sample.py --config {shlex.quote(args.config)}{overrides}")


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
    add_config_args(p)


def _serve(args) -> None:
    from alod.serve import run_continue, run_serve  # why: keeps torch out of alod --help and config checks

    if args.allow_partial and not args.continue_:
        raise AlodError("--allow-partial goes with --continue (the server continues once every image is labeled)")
    cfg = load_args_config(args)
    if args.continue_:
        nxt = run_continue(cfg, allow_partial=args.allow_partial, label_studio_url=args.label_studio_url,
                           public_url=args.public_url, threshold=args.threshold, publish=not args.no_publish)
        print(f"cycle waiting for labels: {nxt}" if nxt is not None else "no cycle waits for labels")
        return
    run_serve(cfg, host=args.host, port=args.port, public_url=args.public_url, project=args.project,
              label_studio_url=args.label_studio_url, threshold=args.threshold, publish=not args.no_publish)


#: The commands of this module, registered by :mod:`alod.commands`.
ENTRIES = {
    "export": Command("a cycle's images for annotators (LabelMe, CVAT, COCO, Label Studio, Pascal VOC, YOLO)", _export_parser, _export),
    "import": Command("annotators' labels of a cycle back (cycles.oracle: human)", _import_parser, _import),
    "serve": Command("a Label Studio ML backend over the cycle waiting for labels", _serve_parser, _serve),
}
