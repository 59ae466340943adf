"""The precomputed schedule: ranked images, batches, and the images every cycle adds.

The rules (the original project's, made explicit):

1. Every image of the training pool gets a score; ``rank`` 0 is the highest score. Ties are broken
   by image name, so the ranking is a total order.
2. The pool is cut into batches of ``batch_size`` images (5000 at full scale) in a seeded random
   order: the batches are the successive "arrivals" of unlabeled data. Within a batch, images are
   listed by rank. The last batch may be smaller; it is kept when it still holds ``query_size``
   images (BDD100K's 69,863 labeled train frames give 13 full batches and one of 4,863).
3. Cycle 1 takes ``query_size`` images drawn at random (seeded) from batch 1: the cold start, before
   any image was chosen by score. The draw indexes batch 1 in *name* order (:func:`cycle1_draw`),
   never in rank order, so it depends on the seed and the pool only: every strategy, both selection
   modes and the random baseline of one seed start from the same images (``alod compare`` checks
   it). Cycle ``n > 1`` takes the top ``query_size`` of batch ``n``.

Scoring a sample (``score.subset < 1``): only a seeded random sample of each arrival batch from
batch 2 on is scored, :func:`scoring_sample`. Batch ``n``'s sample holds
``min(len, max(query_size, ceil(subset * len)))`` of its images, drawn with
``numpy.random.default_rng((seed, 1, n))`` from the batch's positions in ascending order: it depends
on the seed, the batch and ``subset`` only, never on shards or processes. Batch 1 is not scored at
all (its cycle is a random draw), and neither are images in no batch (a dropped last batch, or
batches past ``num_batches``). Then:

* ``images`` lists the scored images only (ranks ``0..S-1`` among them), and ``unscored`` lists
  every other pool image by name; ``subset`` records the fraction;
* batch 1 is listed by name; batch ``n > 1`` lists its sample by rank, then its unscored images by
  name, so cycle ``n > 1`` (its first ``query_size`` images) is the top of the sample: an unscored
  image is never chosen by score;
* cycle 1's draw is the same as with ``subset: 1.0`` (rule 3).

With ``subset: 1.0`` none of these keys is written and the file is byte-identical to before. The
format stays ``alod.schedule/1``: both keys are optional, as ``pool`` is, and readers that look
scores up by name (``alod export``'s priorities) find none for an unscored image.

Selection options (``score.batch``, ``score.class_weights``, ``schedule.budget``;
:class:`alod.cycle.batch_rules.SelectOptions`): cycle ``n > 1`` is then chosen from batch ``n``'s scored
images by :func:`alod.cycle.batch_rules.choose` (a diverse pick among the top ``batch_pool x query_size``
with the scorer's embeddings, the rule's draws from ``default_rng((seed, 4, n))``; or images in
rank order up to ``box_budget`` predicted boxes), its ``rule`` says which (``kmeanspp``, ``coreset``,
``top to boxes``, ...) and it records ``predicted_boxes``; the file records the options under
``selection``. Class weights act on the scores before they reach the schedule. Without options none
of this is written and the bytes are as before.

The file is JSON with sorted keys, scores rounded to 7 significant digits (so that float noise in
the last bits, e.g. from different inference batch sizes, cannot change the bytes), and no
timestamps: the same inputs and seed give a byte-identical file.
"""
from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from alod.cycle.batch_rules import SelectOptions, choose
from alod.utils import AlodError, atomic_write_text

SCHEDULE_FORMAT = "alod.schedule/1"


def _round_sig(x: float, digits: int = 7) -> float:
    return float(f"{x:.{digits - 1}e}") if np.isfinite(x) else x


def rank_images(names: list[str], scores: np.ndarray) -> np.ndarray:
    """``ranks int64[n]``: 0 for the highest score; ties broken by name (ascending)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    if not np.all(np.isfinite(scores)):
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(scores))[:3]]
        raise AlodError(f"non-finite scores for {bad}...; the checkpoint may be diverged")
    order = np.lexsort((np.asarray(names, dtype=str), -scores))
    ranks = np.empty(len(names), dtype=np.int64)
    ranks[order] = np.arange(len(names))
    return ranks


def arrival_batches(n_images: int, *, batch_size: int, query_size: int, num_batches: int | None,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """The pool cut into its arrival batches (rule 2): positions ``int[<= batch_size]`` per batch.

    Draws one permutation from ``rng`` (the caller continues the same stream for cycle 1's random
    draw, so every selector that uses this function sees the same batches for the same seed).
    """
    arrival = rng.permutation(n_images)
    chunks = [arrival[s : s + batch_size] for s in range(0, n_images, batch_size)]
    chunks = [c for c in chunks if len(c) >= query_size]
    if num_batches is not None:
        if num_batches > len(chunks):
            raise AlodError(
                f"schedule.num_batches={num_batches} but {n_images} images make only {len(chunks)} "
                f"batches of {batch_size} (each needing >= {query_size} images)"
            )
        chunks = chunks[:num_batches]
    if not chunks:
        raise AlodError(f"{n_images} images are fewer than one cycle's query_size={query_size}")
    return chunks


def cycle1_draw(batch1, names, *, query_size: int, rng: np.random.Generator) -> list[int]:
    """Cycle 1's positions ``int[query_size]`` (rule 3): a draw from batch 1 listed by image name.

    ``rng`` continues the stream that drew the arrival batches. Indexing the batch in name order,
    not rank order, keeps every score out of the draw: before 2026-12 the precomputed schedule drew
    positions of the rank-sorted batch, so each strategy started from other images.
    """
    first = sorted((int(i) for i in batch1), key=lambda i: str(names[i]))
    picked = sorted(rng.choice(len(first), size=query_size, replace=False).tolist())
    return [first[k] for k in picked]


def cycle1_images(names, *, batch_size: int, query_size: int, num_batches: int | None, seed: int) -> list[str]:
    """The names of cycle 1's images for this pool and seed, without any score (the cold start that
    every run of the seed shares; the scorer trains on them under ``pretrain.images: cycle1``)."""
    rng = np.random.default_rng(seed)
    chunks = arrival_batches(len(names), batch_size=batch_size, query_size=query_size, num_batches=num_batches,
                             rng=rng)
    return [str(names[i]) for i in cycle1_draw(chunks[0], names, query_size=query_size, rng=rng)]


#: Independent random streams, ``default_rng((seed, stream, n))``: the sample of arrival batch ``n``
#: that the scoring stage scores, and the sample of unlabeled images the adaptive selector re-scores
#: before cycle ``n``.
SUBSET_STREAM_BATCH = 1
SUBSET_STREAM_ADAPTIVE = 2
#: The random order in which the ``random_boxes`` selector adds images before cycle ``n``.
STREAM_RANDOM_BOXES = 3
#: The draws of a batch rule (``score.batch: kmeanspp``) before cycle ``n``, in both selectors.
STREAM_BATCH_RULE = 4


def subset_count(subset: float, n: int) -> int:
    """``ceil(subset * n)`` on the decimal value of ``subset`` (``0.3 * 10`` is 3, not 4 from float noise)."""
    return math.ceil(Fraction(repr(float(subset))) * int(n))


def check_subset(*, subset: float, batch_size: int, query_size: int) -> None:
    """Refuse a ``score.subset`` that scores fewer images of an arrival batch than one cycle takes.

    Raises:
        AlodError: naming ``score.subset``, ``schedule.batch_size`` and ``schedule.query_size``.
    """
    count = subset_count(subset, batch_size)
    if count < query_size:
        raise AlodError(
            f"config: score.subset ({subset:g}) scores ceil({subset:g} x {batch_size}) = {count} images of each "
            f"arrival batch (schedule.batch_size), fewer than one cycle's schedule.query_size ({query_size}): "
            "raise score.subset or lower schedule.query_size")


def sample_size(n: int, *, subset: float, query_size: int) -> int:
    """How many of ``n`` candidates a ``subset`` scores: ``min(n, max(query_size, ceil(subset * n)))``.

    At least one cycle's ``query_size`` (a smaller last batch, or few unlabeled images left, still
    give a full cycle), never more than there are.
    """
    return min(int(n), max(int(query_size), subset_count(subset, n)))


def draw_sample(candidates, *, subset: float, query_size: int, seed: int, stream: int, n: int) -> np.ndarray:
    """The seeded sample ``int64[k]`` (ascending) of ``candidates`` (ints, any order) that ``subset`` scores.

    ``k = sample_size(len(candidates), ...)``; drawn with ``default_rng((seed, stream, n))`` from the
    candidates in ascending order, so it depends on the candidate set and the seeds only.
    """
    pool = np.sort(np.asarray(candidates, dtype=np.int64))
    k = sample_size(len(pool), subset=subset, query_size=query_size)
    rng = np.random.default_rng((int(seed), int(stream), int(n)))
    return np.sort(rng.choice(pool, size=k, replace=False)).astype(np.int64)


def _batch_samples(chunks: list[np.ndarray], *, subset: float, query_size: int, seed: int) -> list[np.ndarray]:
    """Per arrival batch, the positions scored under ``subset < 1``: none of batch 1, a sample of the others."""
    out = [np.zeros(0, dtype=np.int64)]
    for n, chunk in enumerate(chunks[1:], start=2):
        out.append(draw_sample(chunk, subset=subset, query_size=query_size, seed=seed, stream=SUBSET_STREAM_BATCH,
                               n=n))
    return out


def scoring_sample(n_images: int, *, batch_size: int, query_size: int, num_batches: int | None, seed: int,
                   subset: float) -> np.ndarray | None:
    """The pool positions ``int64[S]`` (ascending) the scoring stage scores, or ``None`` for all of
    them (``subset >= 1``). The same arrival batches and samples :func:`build_schedule` uses."""
    if subset >= 1.0:
        return None
    chunks = arrival_batches(n_images, batch_size=batch_size, query_size=query_size, num_batches=num_batches,
                             rng=np.random.default_rng(seed))
    samples = _batch_samples(chunks, subset=subset, query_size=query_size, seed=seed)
    return np.sort(np.concatenate(samples)).astype(np.int64)


def _ranked_batches(names: list[str], scores: np.ndarray, chunks: list[np.ndarray], *, subset: float,
                    query_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """``(scored int[k], ranks int64[n], batches)``: the positions that were scored, every image's
    rank among them (-1: not scored), and each arrival batch's positions by rank (unscored images
    after the scored ones, by name)."""
    if subset >= 1.0:
        ranks = rank_images(names, scores)
        return np.arange(len(names)), ranks, [sorted(c.tolist(), key=lambda i: ranks[i]) for c in chunks]
    samples = _batch_samples(chunks, subset=subset, query_size=query_size, seed=seed)
    scored = np.sort(np.concatenate(samples))
    ranks = np.full(len(names), -1, dtype=np.int64)
    ranks[scored] = rank_images([names[i] for i in scored], scores[scored])
    batches = []
    for chunk, sample in zip(chunks, samples):
        rest = sorted(np.setdiff1d(chunk, sample).tolist(), key=lambda i: names[i])
        batches.append(sorted(sample.tolist(), key=lambda i: ranks[i]) + rest)
    return scored, ranks, batches


def _cycles(batches: list[list[int]], chunks: list[np.ndarray], names: list[str], *, query_size: int,
            rng: np.random.Generator) -> list[dict]:
    """One entry per batch: cycle 1 the seeded random draw from the first arrival batch
    (:func:`cycle1_draw` with ``rng``, after the batches were drawn from it), cycle ``n > 1`` the top
    ``query_size`` of batch ``n``."""
    cycles = []
    for n, batch in enumerate(batches, start=1):
        if n == 1:
            chosen = cycle1_draw(chunks[0], names, query_size=query_size, rng=rng)
            rule = "random"
        else:
            chosen = batch[:query_size]
            rule = "top"
        cycles.append({"cycle": n, "batch": n, "rule": rule, "images": [names[i] for i in chosen]})
    return cycles


def _checked_inputs(names, scores, *, batch_size: int, query_size: int, subset: float) -> tuple[list[str], np.ndarray]:
    """``(names as str, scores rounded as the schedule stores them)``; errors for sizes that cannot
    make a schedule, mismatched lengths and repeated names."""
    if query_size <= 0 or batch_size < query_size:
        raise AlodError(f"need 0 < query_size <= batch_size, got query_size={query_size}, batch_size={batch_size}")
    if not 0.0 < subset <= 1.0:
        raise AlodError(f"score.subset must be in (0, 1], got {subset!r}")
    scores = np.array([_round_sig(float(s)) for s in np.asarray(scores, dtype=np.float64)])
    names = [str(n) for n in names]
    if len(scores) != len(names):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    if len(set(names)) != len(names):
        raise AlodError("image names in the pool are not unique")
    return names, scores


def build_schedule(
    *,
    names: list[str],
    scores: np.ndarray,
    batch_size: int,
    query_size: int,
    seed: int,
    num_batches: int | None = None,
    dataset: dict,
    checkpoint: dict | None,
    strategy: dict,
    pool: str = "all",
    subset: float = 1.0,
    selection: dict | None = None,
    embeddings: np.ndarray | None = None,
    predicted_boxes: np.ndarray | None = None,
) -> dict:
    """Build the schedule dict.

    Args:
        names: the training pool's image names, ``str[n]``.
        scores: ``float[n]`` strategy scores aligned with ``names`` (higher = label first).
        batch_size, query_size: images per batch and per cycle.
        seed: draws the batch order and cycle 1's random images.
        num_batches: cap on the number of batches (None: all that hold ``query_size`` images).
        dataset: ``{"num_images", "names_sha256"}`` from ``DetectionIndex.fingerprint()``.
        checkpoint: ``{"path", "sha256"}`` of the scorer, or ``None`` for a strategy that needs no
            model (``random``).
        strategy: ``{"name", "params"}``.
        pool: ``"all"`` (every training image is ranked) or ``"unseen"`` (``names`` are the images
            the scorer did not train on); recorded only when not ``"all"``, so that default
            schedules keep their bytes.
        subset: fraction in (0, 1] of each arrival batch that was scored (module docstring). Below 1,
            only ``scores`` at the positions :func:`scoring_sample` returns are read (the others may
            be NaN); recorded, with ``unscored``, only then.
        selection: the selection options in effect (:meth:`alod.cycle.batch_rules.SelectOptions.identity`),
            or ``None``: cycles ``n > 1`` take the top of their batch (module docstring).
        embeddings: ``float16[n, d]`` per image (a rule that reads embeddings), aligned with ``names``.
        predicted_boxes: ``int[n]`` predicted boxes per image (``budget: boxes``), aligned with ``names``.
    """
    names, scores = _checked_inputs(names, scores, batch_size=batch_size, query_size=query_size, subset=subset)
    rng = np.random.default_rng(seed)
    chunks = arrival_batches(len(names), batch_size=batch_size, query_size=query_size, num_batches=num_batches,
                             rng=rng)
    scored, ranks, batches = _ranked_batches(names, scores, chunks, subset=subset, query_size=query_size, seed=seed)
    cycles = _cycles(batches, chunks, names, query_size=query_size, rng=rng)
    if selection:  # cycles n > 1 under the selection options instead of the top of their batch
        for entry, batch in zip(cycles[1:], batches[1:]):
            entry.update(_cycle_with_options(batch, ranks, names=names, scores=scores, selection=selection,
                                             embeddings=embeddings, predicted=predicted_boxes, query_size=query_size,
                                             seed=seed, cycle=entry["cycle"]))
    out = {
        "format": SCHEDULE_FORMAT,
        "dataset": dict(dataset),
        "checkpoint": dict(checkpoint) if checkpoint is not None else None,
        "strategy": {"name": strategy["name"], "params": dict(strategy.get("params") or {})},
        "batch_size": int(batch_size),
        "query_size": int(query_size),
        "seed": int(seed),
        "images": [
            {"name": names[i], "score": float(scores[i]), "rank": int(ranks[i])}
            for i in scored[np.argsort(ranks[scored], kind="stable")]
        ],
        "batches": [[names[i] for i in b] for b in batches],
        "cycles": cycles,
    }
    if pool != "all":
        out["pool"] = pool
    if selection:
        out["selection"] = dict(selection)
    if subset < 1.0:
        out["subset"] = float(subset)
        out["unscored"] = sorted(names[i] for i in np.setdiff1d(np.arange(len(names)), scored))
    return out


def _cycle_with_options(batch: list[int], ranks: np.ndarray, *, names: list[str], scores: np.ndarray,
                        selection: dict, embeddings, predicted, query_size: int, seed: int, cycle: int) -> dict:
    """Cycle ``cycle``'s ``{"rule", "images", "predicted_boxes"}`` from ``batch`` (pool positions, scored
    ones first by rank) under the ``selection`` options (:func:`alod.cycle.batch_rules.choose`)."""


    fields = {f.name for f in dataclasses.fields(SelectOptions)}
    opts = SelectOptions(**{k: v for k, v in selection.items() if k in fields})
    cands = np.asarray([i for i in batch if ranks[i] >= 0], dtype=np.int64)  # unscored images are never chosen
    emb = np.asarray(embeddings)[cands] if opts.needs_embeddings else None
    pred = np.asarray(predicted, dtype=np.int64)[cands] if predicted is not None else None
    picked, info = choose(opts, names=[names[i] for i in cands], scores=scores[cands], k=query_size, emb=emb,
                          predicted=pred, rng=np.random.default_rng((int(seed), STREAM_BATCH_RULE, int(cycle))))
    return {"rule": opts.rule(), "images": [names[i] for i in cands[picked]], **info}


def dumps_schedule(schedule: dict) -> str:
    return json.dumps(schedule, sort_keys=True, indent=1) + "\n"


def save_schedule(schedule: dict, path: str | Path) -> None:
    atomic_write_text(path, dumps_schedule(schedule))


def load_schedule(path: str | Path) -> dict:
    """Read and structurally check a schedule; errors say what to run to make one."""
    path = Path(path)
    if not path.is_file():
        raise AlodError(
            f"no schedule at {path}. Make one first: python make_batches.py --ckpt <checkpoint> --config <config>"
        )
    try:
        schedule = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AlodError(f"schedule {path} is not valid JSON (line {e.lineno}, column {e.colno}); rerun make_batches.py") from e
    if not isinstance(schedule, dict) or schedule.get("format") != SCHEDULE_FORMAT:
        raise AlodError(f"{path}: not an {SCHEDULE_FORMAT} file; rerun make_batches.py")
    for key in ("dataset", "cycles", "batches", "images", "query_size", "batch_size"):
        if key not in schedule:
            raise AlodError(f"schedule {path} lacks {key!r}; rerun make_batches.py")
    return schedule


def check_schedule_matches(schedule: dict, fingerprint: dict, *, path: str | Path = "schedule.json") -> None:
    """Refuse a schedule made for another dataset, saying which field differs."""
    have = schedule.get("dataset", {})
    if have.get("num_images") != fingerprint["num_images"]:
        raise AlodError(
            f"schedule {path} was made for {have.get('num_images')} training images but the dataset has "
            f"{fingerprint['num_images']}; rerun make_batches.py for this dataset"
        )
    if have.get("names_sha256") != fingerprint["names_sha256"]:
        raise AlodError(
            f"schedule {path} was made for other training images (names hash {str(have.get('names_sha256'))[:12]}... "
            f"vs the dataset's {fingerprint['names_sha256'][:12]}...); rerun make_batches.py for this dataset"
        )

