"""Many simulations at once: sweeps over GPU counts, fabrics and options (``sweep``, also behind ``compare``),
and the calibration and held-out checks against published runs (``validation``)."""
