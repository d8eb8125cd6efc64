"""``python -m simcluster.cli``: the same as the ``simcluster`` command."""

from simcluster.cli import console

console()
