"""Shared machinery under every concept (private).

`validation` (argument checks and their messages), `backend` (the one module
that leans on a backend's specifics or on Keras internals), `layers` (kernel
slots of every layer kind), `graph` (reading a Functional model's graph:
heads, residual branches), `model_pass` (the one forward-pass engine that
watches layers' inputs), `data` (batches from arrays, datasets,
generators), `config` (JSON-configurable objects), `apply` (per-layer
seeds, pairing layers, setting kernels all or nothing) and `figures`
(matplotlib, imported only when a plot is made).
"""
