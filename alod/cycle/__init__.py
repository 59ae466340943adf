"""The active-learning loop's parts, as baal keeps them under ``baal/active/``; the cycles stage
(:mod:`alod.stages.cycles`) runs them as ``select -> label -> train -> evaluate``.

* :mod:`~alod.cycle.selection`: step 1, which images (selectors, chosen by ``cycles.selector``)
* :mod:`~alod.cycle.oracles`: step 2, who labels them (oracles, chosen by ``cycles.oracle``)
* :mod:`~alod.cycle.pool`: the labeled pool (per image: the cycle that added it, its label source)
* :mod:`~alod.cycle.scorer`: scoring images with a detector and a strategy (scoring stage and the
  adaptive selector)
* :mod:`~alod.cycle.actions`: what an annotator does to a selected image, and how much two
  consecutive models agree (pure NumPy; ``alod compare`` and the stopping signal)
"""
