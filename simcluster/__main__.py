"""``python -m simcluster``: the same as the ``simcluster`` command (and ``python -m simcluster.cli``)."""

from simcluster.cli import console

console()
