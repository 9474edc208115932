"""Argument checks shared by the whole package (private).

One rule everywhere: a value of the wrong type raises `TypeError`, a value
of the right type outside its range raises `ValueError`, and the message
names the argument (in backticks) and says what is accepted. Numbers follow
Keras's convention: an integer is anything `operator.index` accepts (Python
and numpy integers, never a bool); a real number is any Python or numpy
integer or float (never a bool).

Messages show shapes and a few values, never a whole array (`short`), and
the bound on the work a configuration may ask for lives here
(`MAX_POSITIONS`).
"""

import math
import numbers
import operator

import numpy as np

# Largest kernel (spatial positions) handled: 32x32 or 10x10x10. Matrices
# are P x P and their eigendecompositions cost O(P^3), so a matrix from an
# untrusted config cannot make loading take minutes or gigabytes.
MAX_POSITIONS = 1024

# A non-positive-semi-definite correlation is repaired by alternating
# projections, one P x P eigendecomposition each (0.16 s at P = 1024 on one
# 2-core machine). Their number is capped so that a config asks for at most
# the work of 200 projections at P = 256 (16x16): 200 up to 16x16, 10 at
# the 32x32 bound. The repair's last step makes its result a valid
# correlation matrix whatever the count; fewer only make it less near.
_REPAIR_WORK = 200 * 256**3


def repair_iterations(p):
    """How many alternating projections the repair of a P x P matrix may take."""
    return min(200, max(10, _REPAIR_WORK // p**3))


# (largest, smallest normal) of each float dtype Keras uses; numpy has no
# bfloat16 of its own.
_FLOAT_RANGES = {
    "float16": (65504.0, 6.104e-05),
    "bfloat16": (3.39e38, 1.175e-38),
    "float32": (3.4028e38, 1.175e-38),
    "float64": (1.797e308, 2.225e-308),
}

# Weights are normal draws: over a few million of them the largest is about
# 5.5 standard deviations; 10 leaves room for any realistic kernel.
_DRAW_RANGE = 10.0


def short(value, limit=6):
    """A compact description of `value` for error messages."""
    if isinstance(value, np.ndarray) or (isinstance(value, (list, tuple)) and len(value) > limit):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            return f"a {type(value).__name__} of length {len(value)}"
        if array.dtype == object or array.size <= limit:
            text = repr(value)
            return text if len(text) <= 200 else f"a {type(value).__name__} of length {len(value)}"
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else repr(v) for v in array.ravel()[:limit].tolist())
        return f"an array of shape {array.shape} ({head}, ...)"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + f"... ({len(text) - 200} more characters)"


def clipped(text, limit=1000):
    """`text` cut to `limit` characters, saying how much was cut."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def integer(value, name, minimum=None):
    """`value` as a Python int; `TypeError` unless an integer, `ValueError` below `minimum`."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be an int; received {value!r}.")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an int; received {short(value)}.") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; received {value}.")
    return value


def real(value, name, low=None, high=None, low_open=False, high_open=False, what=None):
    """`value` as a finite Python float in the given range.

    Args:
        value: The argument.
        name: Its name, for messages.
        low, high: Bounds (None: unbounded); closed unless `low_open` /
            `high_open`.
        what: How the accepted values are described, e.g. "a number in
            [0, 1]"; default derived from the bounds.
    """
    what = what or _range_text(low, high, low_open, high_open)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be {what}; received {short(value)}.")
    value = float(value)
    inside = math.isfinite(value)
    if inside and low is not None:
        inside = value > low if low_open else value >= low
    if inside and high is not None:
        inside = value < high if high_open else value <= high
    if not inside:
        raise ValueError(f"`{name}` must be {what}; received {value!r}.")
    return value


def _range_text(low, high, low_open, high_open):
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def seed(value, name="seed"):
    """None, or an int in [0, 2**32) (Python or numpy) as a Python int: what every backend's generator takes."""
    if value is None:
        return None
    value = integer(value, name)
    if not 0 <= value < 2**32:
        raise ValueError(f"`{name}` must be None or an int in [0, 2**32); received {value}.")
    return value


def boolean(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool (True or False); received {short(value)}.")
    return bool(value)


def text(value, name):
    """A non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a string; received {type(value).__name__}.")
    if not value:
        raise ValueError(f"`{name}` must be a non-empty string.")
    return value


def kernel_size(value, rank=None, minimum_positions=1):
    """`kernel_size` as a tuple: an int (repeated `rank` times, default 2) or a tuple of ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * (rank or 2)
    try:
        shape = tuple(int(k) for k in value)
    except (TypeError, ValueError):
        raise TypeError(
            f"`kernel_size` must be an int or a tuple of ints such as (3, 3); received {value!r}."
        ) from None
    if rank is not None and len(shape) != rank:
        raise ValueError(f"`kernel_size` must have {rank} dimensions, e.g. (3, 3); received {shape}.")
    if math.prod(shape) < minimum_positions or any(k < 1 for k in shape):
        raise ValueError(
            f"`kernel_size` must have at least {minimum_positions} position{'s' if minimum_positions > 1 else ''} "
            f"(e.g. 3 or (3, 3)); received {shape}."
        )
    return shape


def check_positions(p, what):
    """Raises unless `p` spatial positions are within `MAX_POSITIONS`."""
    if p > MAX_POSITIONS:
        raise ValueError(
            f"{what} has {p} spatial positions; this package "
            f"supports at most {MAX_POSITIONS} (a 32x32 or 10x10x10 kernel)."
        )


def spatial_shape(value, name="spatial_shape"):
    """A tuple of positive ints with at most `MAX_POSITIONS` positions."""
    if isinstance(value, str):
        raise TypeError(f"`{name}` must be a tuple of positive ints such as (3, 3); received {value!r}.")
    try:
        shape = tuple(integer(d, name) for d in value)
    except TypeError:
        raise TypeError(f"`{name}` must be a tuple of positive ints such as (3, 3); received {short(value)}.") from None
    if any(d < 1 for d in shape):
        raise ValueError(f"`{name}` must contain positive sizes; received {shape}.")
    check_positions(math.prod(shape), f"`{name}` {shape}")
    return shape


def float_matrix(value, name, square=True):
    """`value` as a finite float64 2D array (square unless `square=False`)."""
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        kind = "square numeric array" if square else "numeric 2D array"
        raise TypeError(f"`{name}` must be a {kind} or nested list; received {short(value)}.") from None
    if m.ndim != 2 or m.size == 0 or (square and m.shape[0] != m.shape[1]):
        kind = "a square (P, P) matrix" if square else "a (rows, columns) matrix"
        raise ValueError(f"`{name}` must be {kind} with at least one entry; received shape {m.shape}.")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"`{name}` contains NaN or Inf entries; pass a finite matrix.")
    return m


def symmetric(m, name, tolerance=1e-6):
    """Raises unless `m` is symmetric to `tolerance` relative to its largest entry."""
    scale = max(float(np.abs(m).max()), 1e-300)
    asymmetry = float(np.abs(m - m.T).max())
    if asymmetry > tolerance * scale:
        raise ValueError(
            f"`{name}` is not symmetric (largest |m[i, j] - m[j, i]| = {asymmetry:.3g}); "
            "pass a symmetric matrix, e.g. (m + m.T) / 2."
        )


def check_weight_scale(largest_std, dtype, parameters):
    """Raises unless weights of standard deviation up to `largest_std` fit `dtype`.

    Args:
        largest_std: The largest per-weight standard deviation a draw has.
        dtype: The dtype the weights are drawn and returned in.
        parameters: The arguments that set the scale, for the message,
            e.g. "`gain`".
    """
    largest, tiny = _FLOAT_RANGES[dtype]
    if not math.isfinite(largest_std) or largest_std * _DRAW_RANGE > largest:
        raise ValueError(
            f"{parameters} give weights with a standard deviation of {largest_std:.3g}, beyond what "
            f"{dtype} holds (largest {largest:.3g}); pass a smaller scale."
        )
    if largest_std < tiny:
        raise ValueError(
            f"{parameters} give weights with a standard deviation of {largest_std:.3g}, which is 0 in "
            f"{dtype} (smallest normal number {tiny:.3g}); pass a larger scale."
        )
