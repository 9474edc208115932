"""The package's built-in benchmarks (private): networks, data sets, arms and
the grids behind docs/evidence.md, run by `keras-corrinit compare` on the
public `keras_corrinit.experiments.compare`."""
