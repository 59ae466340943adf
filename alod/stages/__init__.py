"""The stages: ``pretrain`` (train the scorer), ``scoring`` (rank the pool, write the schedule),
``cycles`` (select, label, train, evaluate) and ``annotation`` (``alod export`` / ``alod import``).
Each reads only files another stage wrote, through :mod:`alod.layout`; no stage imports another
(``tests/test_architecture.py`` checks this). :mod:`alod.stages.setup` is what they share: the
config check, the set-up, training and evaluating a detector.
"""
