"""The list of sub-command modules, in the order ``--help`` shows them."""

from . import complete_cmds, index_cmds, learn_cmds

MODULES = [index_cmds, complete_cmds, learn_cmds]
