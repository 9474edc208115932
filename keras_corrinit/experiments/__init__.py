"""Does an initialization help on *my* model? `compare` answers it.

`compare(build_model, data, arms)` trains the user's model once per arm and
seed, pairs the runs by seed, and returns a `Comparison`: paired
differences to the baseline with 95% intervals, the epochs each arm needs to
reach the baseline's final accuracy, scale-control verdicts, Markdown and
plots. Runs go to any `concurrent.futures.Executor` (a process pool, Dask,
Ray, `mpi4py.futures`), and a results store makes a comparison resumable.
Arms are named in one registry: `register_arm(name, ArmSpec(...))` adds one.
"""

from keras_corrinit.experiments._arms import BUILTIN_ARMS
from keras_corrinit.experiments._compare import compare
from keras_corrinit.experiments._comparison import Comparison
from keras_corrinit.experiments._registry import ArmSpec
from keras_corrinit.experiments._registry import register as register_arm

__all__ = ["BUILTIN_ARMS", "ArmSpec", "Comparison", "compare", "register_arm"]
