"""The stages: ``pretrain`` (train the scorer), ``scoring`` (rank the pool, write the schedule) and
``cycles`` (select, label, train, evaluate). Each reads only files another stage wrote, through
:mod:`alod.layout`; no stage imports another (``tests/test_architecture.py`` checks this).
"""
