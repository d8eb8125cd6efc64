"""Analysis of simulation results: metrics and figures.

``plots`` is the only module of simcluster that imports matplotlib; import it lazily (inside the command that
draws) so that the rest of the package, and the CLI's start-up, never pay for it.
"""
