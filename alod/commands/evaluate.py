"""``alod evaluate``: mAP of a prediction file against ground truth, as the official BDD100K eval.

    alod evaluate --gt det_val.json --pred preds.json --out metrics.json
    alod evaluate --gt instances_val2017.json --pred results.json --out metrics.json   # COCO

No logic here: parse, call :func:`alod.evaluation.evaluate_files`, write, print. The
``--format`` choices come from the label-format registry (:mod:`alod.data.readers`).
"""
from __future__ import annotations

import argparse
import sys

from alod.commands.common import Command
from alod.data.readers import FORMAT_CHOICES
from alod.evaluation import BOX_CONVENTIONS, evaluate_files, format_table, json_safe
from alod.utils import AlodError, atomic_write_json


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` arguments to ``parser``."""
    parser.description = (
        "Evaluate predictions against ground truth with pycocotools, the way the official BDD100K "
        "detection evaluation does (ignored classes as crowd regions, w = x2 - x1 + 1). "
        "Ground truth: BDD100K det_20 / 2018 frames or COCO instances JSON; predictions: BDD100K frames "
        "with a 'score' per label, or a COCO results list [{image_id, category_id, bbox, score}]."
    )
    parser.add_argument("--gt", required=True, metavar="LABELS.json", help="ground-truth label file")
    parser.add_argument("--pred", required=True, metavar="PREDICTIONS.json", help="prediction file")
    parser.add_argument("--out", required=True, metavar="metrics.json",
                        help="where to write the metrics (fractions in [0, 1]; null for classes without ground truth)")
    parser.add_argument("--format", dest="fmt", default="auto", choices=FORMAT_CHOICES,
                        help="format of --gt (default: from the JSON shape); --pred must be of the same family")
    parser.add_argument("--box-convention", default=None, choices=BOX_CONVENTIONS,
                        help="bdd100k: w = x2 - x1 + 1 (official BDD100K); coco: w = x2 - x1 "
                             "(default: bdd100k for BDD100K files, coco for COCO files)")
    parser.add_argument("--max-dets", type=int, default=100,
                        help="detections kept per image and class (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Evaluate, write ``args.out`` atomically, print a per-class table. Raises AlodError on bad input."""
    report = evaluate_files(gt=args.gt, pred=args.pred, fmt=args.fmt, box_convention=args.box_convention,
                            max_dets=args.max_dets, log=print)
    atomic_write_json(args.out, json_safe(report))
    c = report["counts"]
    print(f"{c['images']} images, {c['gt_boxes']} boxes ({c['ignored_regions']} ignored regions), "
          f"{c['detections']} detections ({c['images_without_predictions']} images without); "
          f"box convention {report['box_convention']}")
    print(format_table(report, report["classes"], c["gt_per_class"]))
    print(f"mAP50 {report['mAP50']:.4f}  mAP {report['mAP']:.4f} -> {args.out}")
    return 0


#: The commands of this module, registered by :mod:`alod.commands`.
ENTRIES = {
    "evaluate": Command("mAP of predictions against ground truth (BDD100K or COCO files)", configure_parser, run),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="alod evaluate")
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except AlodError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
