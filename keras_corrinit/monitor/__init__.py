"""Watching training: the gradient-sign zig-zag measure, as a Keras callback and as a tracker.

`GradientSignMonitor` (a callback for `fit`) and `GradientSignTracker` (for
custom training loops) count how often each kernel's gradient sign flips
between steps, the paper's zig-zag measure; `plot_training_curves` draws
runs' curves.
"""

from keras_corrinit._core.figures import plot_training_curves as plot_training_curves
from keras_corrinit.monitor._callback import GradientSignMonitor as GradientSignMonitor
from keras_corrinit.monitor._tracker import GradientSignTracker as GradientSignTracker

__all__ = ["GradientSignMonitor", "GradientSignTracker", "plot_training_curves"]
