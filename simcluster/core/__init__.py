"""The bottom layer: SI units and their parsing (``units``), user errors (``errors``), and the package data
files (``catalog``, reading ``simcluster/data/``). Imports nothing else of simcluster."""
