"""Replay of recorded training runs, the part that needs no clock (the layer below ``engine``).

A replay goes through these modules in order:
1. ``formats``: Kineto (PyTorch profiler) and Chakra trace files -> ``RecordedRun`` (``formats.load_trace``);
2. ``recorded``: the ``RecordedRun``, per-rank ops on streams with the dependencies the GPU enforced;
3. ``rescale``: the GPU and fabric the trace ran on (traces never record the fabric), and compute moved to
   another GPU;
4. ``plan``: the ``ReplayPlan``, one program of ``ReplayOp``s per replayed rank, collectives matched across ranks;
5. ``simcluster.engine.replay`` runs the plan on a fabric with SimPy and returns the events table;
6. ``report``: per-step figures and a Perfetto trace from those events, recorded and replayed side by side.

``simcluster.studies.replay`` strings the steps together for ``simcluster replay``.
"""
