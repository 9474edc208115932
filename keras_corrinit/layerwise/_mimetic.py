"""Mimetic initialization of self-attention (Trockman and Kolter 2023), numpy only.

A trained ViT's attention layers have query-key products W_q W_k^T close
to a positive multiple of the identity plus noise, and value-output
products W_v W_o close to a negative multiple of it. Mimetic
initialization draws them that way at the start: a target
A = alpha Z / sqrt(d) + sign beta I (Z standard normal, d the model
dimension) is factored by its SVD, A = U S V^T, into L = U sqrt(S) and
R = sqrt(S) V^T, so L R = A exactly when the heads' total width covers d.

Reference:
    Trockman and Kolter, "Mimetic Initialization of Self-Attention
    Layers", ICML 2023.
"""

import numpy as np

__all__ = ["QUERY_KEY", "VALUE_OUTPUT", "mimetic_factors", "mimetic_kernels"]

# (alpha, beta) of the query-key and value-output targets: the paper's values for small ViTs.
QUERY_KEY = (0.7, 0.7)
VALUE_OUTPUT = (0.4, 0.4)


def mimetic_factors(d, width, alpha, beta, sign, rng):
    """`(L, R)` of shapes `(d, width)` and `(width, d)` with `L @ R` = alpha Z / sqrt(d) + sign beta I.

    Exact when `width >= d` (the extra columns are zero); otherwise the best
    rank-`width` approximation (the largest singular values kept).
    """
    target = alpha * rng.standard_normal((d, d)) / np.sqrt(d) + sign * beta * np.eye(d)
    u, s, vt = np.linalg.svd(target)
    rank = min(d, width)
    root = np.sqrt(s[:rank])
    left, right = np.zeros((d, width)), np.zeros((width, d))
    left[:, :rank] = u[:, :rank] * root
    right[:rank] = root[:, None] * vt[:rank]
    return left, right


def mimetic_kernels(query, key, value, output, seed, query_key=QUERY_KEY, value_output=VALUE_OUTPUT):
    """Kernels of one MultiHeadAttention layer, from the shapes of its four kernels.

    Args:
        query, key, value: Shapes `(d, heads, key_dim)`, `(d, heads,
            key_dim)`, `(d, heads, value_dim)` (self-attention: one `d`).
        output: Shape `(heads, value_dim, d)`.
        seed: Seed of the two noise draws.
        query_key, value_output: `(alpha, beta)` of each target.

    Returns:
        Four float32 arrays of those shapes: summed over heads, query times
        key transposed is the positive target, value times output the
        negative one.
    """
    d, heads, key_dim = query
    value_dim = value[2]
    rng = np.random.default_rng(seed)
    q, k = mimetic_factors(d, heads * key_dim, *query_key, sign=1.0, rng=rng)
    v, o = mimetic_factors(d, heads * value_dim, *value_output, sign=-1.0, rng=rng)
    return (
        q.reshape(query).astype("float32"),
        k.T.reshape(key).astype("float32"),
        v.reshape(value).astype("float32"),
        o.reshape(output).astype("float32"),
    )
