import json
import math
import textwrap

import keras
import numpy as np
import pytest

from conftest import run_in_fresh_process, to_numpy
from keras_corrinit import NFMInit, agop_matrix
from keras_corrinit.correlation import nfm_matrix
from keras_corrinit.layerwise import apply_initializers, nfm_layerwise_initializers

Z = 5.0
RNG = np.random.default_rng(0)
SOURCE = RNG.normal(size=(3, 3, 8, 4)) * np.linspace(0.5, 2, 4)  # rank 4 < fan_in 72


def test_nfm_is_w_transpose_w_exactly():
    flat = SOURCE.reshape(72, 4)
    np.testing.assert_array_equal(nfm_matrix(SOURCE), flat @ flat.T)
    layer = keras.layers.Dense(3)
    layer.build((None, 5))
    w = to_numpy(layer.kernel).astype(np.float64)
    np.testing.assert_allclose(nfm_matrix(layer), w @ w.T, rtol=1e-12)
    spatial = nfm_matrix(SOURCE, reduce="spatial")
    loops = np.zeros((9, 9))
    for p in range(9):
        for q in range(9):
            loops[p, q] = np.mean([flat[p * 8 + c] @ flat[q * 8 + c] for c in range(8)])
    np.testing.assert_allclose(spatial, loops, rtol=1e-12)


def _empirical_check(w, sigma):
    """Columns of w (fan_in, n) have covariance sigma, within sampling error."""
    n = w.shape[1]
    c_hat = w @ w.T / n
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n)
    assert np.all(np.abs(c_hat - sigma) <= Z * se + 1e-12)


def test_full_transfer_covariance_and_kaiming_scale():
    init = NFMInit.from_kernel(SOURCE, seed=1)
    w = to_numpy(init((3, 3, 8, 20000))).reshape(72, -1).astype(np.float64)
    sigma = init.covariance * 2.0 / np.trace(init.covariance)
    _empirical_check(w, sigma)
    assert np.mean(np.diag(sigma)) == pytest.approx(2 / 72)
    # rank-deficient: every sample lies in the span of the source's NFM
    basis, _ = np.linalg.qr(SOURCE.reshape(72, 4))
    residual = w - basis @ (basis.T @ w)
    assert np.abs(residual).max() < 1e-5 * np.abs(w).max()


def test_spatial_transfer_for_other_channel_counts():
    init = NFMInit.from_kernel(SOURCE, seed=2)
    shape = (3, 3, 32, 64)
    w = to_numpy(init(shape)).reshape(9, -1).astype(np.float64)
    spatial = nfm_matrix(SOURCE, reduce="spatial")
    fan_in = 9 * 32
    expected = spatial * 2.0 / (fan_in * np.mean(np.diag(spatial)))
    _empirical_check(w, expected)
    assert np.mean(w**2) == pytest.approx(2 / fan_in, rel=Z * math.sqrt(2 / w.shape[1]))


def test_unscaled_transfer_uses_sigma_as_it_is():
    init = NFMInit.from_kernel(SOURCE, scaling="none", seed=3)
    w = to_numpy(init((3, 3, 8, 20000))).reshape(72, -1).astype(np.float64)
    _empirical_check(w, init.covariance)  # no 2 / trace(Sigma) factor
    spatial = to_numpy(init((3, 3, 32, 64))).reshape(9, -1).astype(np.float64)
    _empirical_check(spatial, nfm_matrix(SOURCE, reduce="spatial"))
    clone = NFMInit.from_config(json.loads(json.dumps(init.get_config())))
    assert clone.scaling == "none"
    np.testing.assert_array_equal(to_numpy(clone((3, 3, 8, 6))), to_numpy(init((3, 3, 8, 6))))
    # a config saved before `scaling` existed is Kaiming-scaled
    legacy = {k: v for k, v in NFMInit.from_kernel(SOURCE, seed=3).get_config().items() if k != "scaling"}
    assert NFMInit.from_config(legacy).scaling == "kaiming"
    with pytest.raises(ValueError, match="`scaling` must be 'kaiming' .* or 'none' .*; received 'he'"):
        NFMInit.from_kernel(SOURCE, scaling="he")


def test_from_covariance_full_rank_and_errors():
    a = RNG.normal(size=(18, 18))
    sigma = a @ a.T
    init = NFMInit.from_covariance(sigma, (3, 3), 2, seed=0)
    np.testing.assert_allclose(init.covariance, sigma, rtol=1e-5, atol=1e-5 * np.abs(sigma).max())
    with pytest.raises(ValueError, match="not positive semi-definite"):
        NFMInit.from_covariance(-sigma + np.eye(18), (3, 3), 2)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        NFMInit.from_covariance(np.full((18, 18), np.nan), (3, 3), 2)
    with pytest.raises(ValueError, match=r"`covariance` must be a square \(P, P\) matrix"):
        NFMInit.from_covariance(np.ones((18, 9)), (3, 3), 2)
    with pytest.raises(ValueError, match=r"`covariance` must be a square \(P, P\) matrix with at least one entry"):
        NFMInit.from_covariance(np.zeros((0, 0)), (), 1)
    with pytest.raises(ValueError, match="`covariance` is not symmetric"):
        NFMInit.from_covariance(sigma + np.triu(np.ones((18, 18)), 1), (3, 3), 2)
    with pytest.raises(ValueError, match="must equal the covariance's size 18"):
        NFMInit.from_covariance(sigma, (3, 3), 3)
    with pytest.raises(ValueError, match="needs the same fan_in .* or the same kernel size"):
        init((5, 5, 2, 4))
    with pytest.raises(ValueError, match="all zeros"):
        NFMInit.from_kernel(np.zeros((3, 3, 2, 2)))


def test_config_round_trip_and_size():
    init = NFMInit.from_kernel(SOURCE, seed=4)
    config = init.get_config()
    text = json.dumps(config)
    assert len(text) <= 4 * SOURCE.size * 4  # a few times the source's float32 bytes
    clone = NFMInit.from_config(json.loads(text))
    assert clone.get_config() == config
    np.testing.assert_array_equal(to_numpy(clone((3, 3, 8, 6))), to_numpy(init((3, 3, 8, 6))))


_LOAD = textwrap.dedent(
    """
    import sys, numpy as np, keras
    import keras_corrinit
    model = keras.models.load_model(sys.argv[1], safe_mode=True)
    np.save(sys.argv[2], keras.ops.convert_to_numpy(model.layers[0].kernel))
    print(type(model.layers[0].kernel_initializer).__name__)
    """
)


@pytest.mark.slow
def test_keras_round_trip_offline(tmp_path):
    model = keras.Sequential(
        [keras.Input((10, 10, 8)), keras.layers.Conv2D(4, 3, kernel_initializer=NFMInit.from_kernel(SOURCE, seed=0))]
    )
    path = tmp_path / "nfm.keras"
    model.save(str(path))
    printed = run_in_fresh_process(_LOAD, path, tmp_path / "k.npy")
    assert printed.strip().splitlines()[-1] == "NFMInit"
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), to_numpy(model.layers[0].kernel))


def _small_cnn(width=4):
    return keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            keras.layers.Conv2D(width, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(width, 3, name="c2"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="head"),
        ]
    )


def test_layerwise_from_source_model():
    source, target = _small_cnn(), _small_cnn()
    initializers = nfm_layerwise_initializers(source, target, seed=0)
    assert list(initializers) == ["c1", "c2", "head"]
    apply_initializers(target, initializers)
    for name in initializers:
        w_src = to_numpy(source.get_layer(name).kernel)
        w_tgt = to_numpy(target.get_layer(name).kernel).reshape(-1, w_src.shape[-1])
        basis, _ = np.linalg.qr(w_src.reshape(-1, w_src.shape[-1]))
        assert np.abs(w_tgt - basis @ (basis.T @ w_tgt)).max() < 1e-4 * np.abs(w_tgt).max()
        assert isinstance(target.get_layer(name).kernel_initializer, NFMInit)
    with pytest.raises(ValueError, match="pass `mapping="):
        nfm_layerwise_initializers(source, keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="source layers that do not exist: \\['nope'\\]"):
        nfm_layerwise_initializers(source, target, mapping={"c1": "nope"})


def test_agop_closed_form_linear_conv():
    inputs = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(5, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    x = RNG.normal(size=(20, 8, 8, 2)).astype("float32")
    agop = agop_matrix(model, "conv", x, batch_size=8)
    k = to_numpy(model.get_layer("conv").kernel).reshape(-1, 5).astype(np.float64)
    d = to_numpy(model.get_layer("head").kernel).astype(np.float64)
    positions = 6 * 6
    # f = D^T mean_ij h_ij, so df/dh_ij = D / positions for every sample and position
    expected = k @ (d @ d.T) @ k.T / positions**2
    np.testing.assert_allclose(agop, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    # the layer is left as it was
    assert "call" not in model.get_layer("conv").__dict__
    # the AGOP (rank <= 3) is a valid covariance for NFMInit, kept exactly
    init = NFMInit.from_covariance(agop, (3, 3), 2, seed=0)
    np.testing.assert_allclose(init.covariance, agop, rtol=1e-5, atol=1e-6 * np.abs(agop).max())
    w = to_numpy(init((3, 3, 2, 5))).reshape(18, 5)
    basis, _ = np.linalg.qr(k @ d)  # the AGOP's column space
    assert np.abs(w - basis @ (basis.T @ w)).max() < 1e-4 * np.abs(w).max()


def test_agop_through_relu_matches_closed_form():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, activation="relu", name="d1"),
            keras.layers.Dense(2, name="d2"),
        ]
    )
    x = RNG.normal(size=(7, 6)).astype("float32")
    agop = agop_matrix(model, "d1", x)
    w1, b1 = (to_numpy(v).astype(np.float64) for v in model.get_layer("d1").weights)
    w2 = to_numpy(model.get_layer("d2").kernel).astype(np.float64)
    # f = W2^T relu(W1^T x + b1): the Jacobian wrt the layer input is W2^T diag(active) W1^T
    total = 0.0
    for sample in x.astype(np.float64):
        active = (sample @ w1 + b1 > 0).astype(np.float64)
        jac = w2.T @ np.diag(active) @ w1.T
        total = total + jac.T @ jac
    np.testing.assert_allclose(agop, total / len(x), rtol=1e-4, atol=1e-6 * np.abs(agop).max())


def test_agop_bad_layer():
    model = _small_cnn()
    with pytest.raises(ValueError, match="must be a Conv1D/2D/3D or Dense layer"):
        agop_matrix(model, model.layers[2], np.zeros((2, 10, 10, 3)))


def _relu_head_model(outputs):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dense(outputs, name="head"),
        ]
    )


def _closed_form_jacobians(model, x):
    """Per-sample Jacobians of the output with respect to d1's input."""
    w1, b1 = (to_numpy(v).astype(np.float64) for v in model.get_layer("d1").weights)
    w2 = to_numpy(model.get_layer("head").kernel).astype(np.float64)
    return [w2.T @ np.diag((sample @ w1 + b1 > 0).astype(np.float64)) @ w1.T for sample in x.astype(np.float64)]


def test_agop_with_more_outputs_than_max_outputs_is_unbiased():
    model = _relu_head_model(100)
    x = RNG.normal(size=(40, 6)).astype("float32")
    jacobians = _closed_form_jacobians(model, x)
    exact_reference = np.mean([j.T @ j for j in jacobians], axis=0)
    # all 100 outputs: the exact path
    exact = agop_matrix(model, "d1", x, batch_size=64, max_outputs=100)
    np.testing.assert_allclose(exact, exact_reference, rtol=1e-4, atol=1e-6 * np.abs(exact).max())
    # 32 projections shared by the one batch: trace(estimate) = mean_k v_k^T B v_k
    # with B = mean_n J_n J_n^T, so its variance is 2 tr(B^2) / 32.
    b = np.mean([j @ j.T for j in jacobians], axis=0)
    relative_se = math.sqrt(2 * np.trace(b @ b) / 32) / np.trace(b)
    ratios = [
        np.trace(agop_matrix(model, "d1", x, batch_size=64, max_outputs=32, seed=seed)) / np.trace(exact)
        for seed in range(4)
    ]
    for ratio in ratios:
        assert abs(ratio - 1) < Z * relative_se, (ratio, relative_se)
    assert abs(np.mean(ratios) - 1) < Z * relative_se / 2  # four independent estimates


def test_agop_argument_errors():
    model = _relu_head_model(3)
    x = np.zeros((4, 6), "float32")
    with pytest.raises(ValueError, match="`max_outputs` must be an int >= 1; received 0"):
        agop_matrix(model, "d1", x, max_outputs=0)
    with pytest.raises(TypeError, match="`batch_size` must be an int; received 2.5"):
        agop_matrix(model, "d1", x, batch_size=2.5)
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1; received 0"):
        agop_matrix(model, "d1", x, batch_size=0)


def test_agop_uses_every_batch_of_a_generator_and_of_tf_data():
    model = _relu_head_model(3)
    x = RNG.normal(size=(40, 6)).astype("float32")
    expected = agop_matrix(model, "d1", x, batch_size=8)
    first_batch_only = agop_matrix(model, "d1", x[:8])
    assert not np.allclose(expected, first_batch_only)
    generator = (x[i : i + 8] for i in range(0, 40, 8))
    np.testing.assert_allclose(agop_matrix(model, "d1", generator), expected, rtol=1e-5)
    dataset = __import__("tensorflow").data.Dataset.from_tensor_slices(x).batch(8)
    np.testing.assert_allclose(agop_matrix(model, "d1", dataset), expected, rtol=1e-5)
    # `steps` limits it: the first two batches are the first 16 samples
    np.testing.assert_allclose(agop_matrix(model, "d1", dataset, steps=2), agop_matrix(model, "d1", x[:16]), rtol=1e-5)


def test_agop_refuses_non_finite_data_and_a_layer_of_another_model():
    model = _relu_head_model(3)
    with pytest.raises(ValueError, match="`data` contains NaN or Inf"):
        agop_matrix(model, "d1", np.full((8, 6), np.nan, "float32"))
    stranger = keras.layers.Dense(8, name="stranger")
    stranger.build((None, 6))
    with pytest.raises(ValueError, match="`layer` 'stranger' is not a layer of the model"):
        agop_matrix(model, stranger, np.zeros((8, 6), "float32"))


def test_a_spatial_shape_beyond_the_bound_is_refused_before_any_work():
    # 2048 positions: the spatial transfer's (P x P) factorization would take
    # tens of seconds and gigabytes; the bound refuses the config instead.
    with pytest.raises(ValueError, match="`spatial_shape` \\(2048,\\) has 2048 spatial positions; .* at most 1024"):
        NFMInit(np.random.rand(2048, 1), [2048], 1, seed=1)


@pytest.mark.parametrize("magnitude", [1e-200, 1e200])
def test_kaiming_scaling_of_tiny_and_huge_kernels_is_exact(magnitude):
    kernel = RNG.normal(size=(3, 3, 4, 8))
    reference = to_numpy(NFMInit.from_kernel(kernel, seed=3)((3, 3, 4, 8)))
    scaled = to_numpy(NFMInit.from_kernel(kernel * magnitude, seed=3)((3, 3, 4, 8)))
    np.testing.assert_allclose(scaled, reference, rtol=1e-5, atol=1e-7)
    spatial = to_numpy(NFMInit.from_kernel(kernel * magnitude, seed=3)((3, 3, 2, 8)))
    assert np.all(np.isfinite(spatial)) and np.any(spatial != 0)


def test_unscaled_weights_that_float32_cannot_hold_are_refused():
    kernel = RNG.normal(size=(3, 3, 4, 8))
    with pytest.raises(ValueError, match=r"`factor` \(with scaling='none'\) give weights .* beyond what float32 holds"):
        NFMInit.from_kernel(kernel * 1e200, scaling="none")
    with pytest.raises(ValueError, match=r"`factor` \(with scaling='none'\) give weights .* which is 0 in float32"):
        NFMInit.from_kernel(kernel * 1e-200, scaling="none")


def test_from_covariance_checks_shapes_before_factorizing(monkeypatch):
    big = np.eye(2048 * 2)  # 2048 positions: beyond the bound; an eigendecomposition of it takes seconds

    def no_factorization(*args, **kwargs):
        raise AssertionError("factorized before the shapes were checked")

    # refused before any O(n^3) work (a check by what runs, not by the clock: it took 3-21 s)
    for name in ("eigh", "eigvalsh", "svd", "cholesky", "eig"):
        monkeypatch.setattr(np.linalg, name, no_factorization)
    with pytest.raises(ValueError, match="positions"):
        NFMInit.from_covariance(big, (32, 64), 2)
    with pytest.raises(ValueError, match=r"must equal the covariance's size 4096"):
        NFMInit.from_covariance(big, (3, 3), 2)
