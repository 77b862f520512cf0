"""The list of sub-command modules, in the order ``--help`` shows them."""

from . import complete_cmds, demo_cmds, index_cmds, learn_cmds, model_cmds

MODULES = [demo_cmds, index_cmds, model_cmds, learn_cmds, complete_cmds]
