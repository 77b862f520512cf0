"""The list of sub-command modules, in the order ``--help`` shows them."""

from . import index_cmds

MODULES = [index_cmds]
