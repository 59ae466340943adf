"""Every ``alod`` subcommand, one home: its parser and its ``run``, registered in
:data:`alod.commands.common.COMMANDS` (:mod:`alod.cli` only dispatches).

* :mod:`~alod.commands.pipeline`: ``demo``, ``pretrain``, ``batches``, ``cycles``, ``compare``
* :mod:`~alod.commands.evaluate`: ``evaluate``
* :mod:`~alod.commands.annotators`: ``export``, ``import``, ``serve``

Importing this package registers them all, in the order ``alod --help`` lists them.
"""
from alod.commands import annotators, evaluate, pipeline
from alod.commands.common import COMMANDS

# Registered here, not by each module, so that ``python -m alod.commands.evaluate`` (which runs a
# second copy of that module as ``__main__``) registers nothing twice.
for _module in (pipeline, evaluate, annotators):
    for _name, _command in _module.ENTRIES.items():
        COMMANDS.register(_name, _command)

__all__ = ["COMMANDS"]
