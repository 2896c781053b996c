import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ALL_ACTIVATIONS, as_jax, flatten, NUMPY_ACTIVATIONS, numpy_loss

import gradflow as gf


def _numpy_net(rng, m, d, bias):
    a = rng.normal(size=m)
    W = rng.normal(size=(m, d))
    b = rng.normal(size=m) if bias else None
    return a, W, b


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_forward_matches_formula(name, bias):
    rng = np.random.default_rng(0)
    m, d, n = 4, 3, 7
    a, W, b = _numpy_net(rng, m, d, bias)
    x = rng.normal(size=(n, d))
    net = gf.TwoLayerNet(as_jax(a), as_jax(W), None if b is None else as_jax(b), name)
    assert (net.width, net.dim, net.dtype) == (m, d, jnp.float64)
    z = x @ W.T + (0 if b is None else b)
    assert net.preactivation(as_jax(x)).shape == (n, m)
    np.testing.assert_allclose(np.asarray(net.preactivation(as_jax(x))), z, rtol=1e-14)
    out = net(as_jax(x))
    assert out.shape == (n,)
    sigma, _ = NUMPY_ACTIVATIONS[name]
    # A length-m dot product of O(1) terms: rounding ~m·eps relative to Σ|a_k σ_k|.
    scale = np.abs(sigma(z)) @ np.abs(a)
    np.testing.assert_array_less(np.abs(np.asarray(out) - sigma(z) @ a), 1e-14 * scale + 1e-300)


@pytest.mark.parametrize("bias", [False, True])
def test_imbalance_and_norm(bias):
    rng = np.random.default_rng(1)
    a, W, b = _numpy_net(rng, 5, 3, bias)
    net = gf.TwoLayerNet(as_jax(a), as_jax(W), None if b is None else as_jax(b))
    expected = a**2 - np.sum(W**2, axis=1) - (0 if b is None else b**2)
    np.testing.assert_allclose(np.asarray(gf.imbalance(net)), expected, rtol=1e-14, atol=1e-15)
    theta = flatten(net)
    np.testing.assert_allclose(float(gf.parameter_norm(net)), np.linalg.norm(theta), rtol=1e-15)


def test_imbalance_of_stacked_nets(getkey):
    keys = jax.random.split(getkey(), 6)
    nets = jax.vmap(lambda k: gf.random_net(k, width=3, dim=2, scale=0.5, bias=True))(keys)
    stacked = gf.imbalance(nets)
    assert stacked.shape == (6, 3)
    for i in range(6):
        net_i = jax.tree_util.tree_map(lambda leaf: leaf[i], nets)
        np.testing.assert_array_equal(stacked[i], gf.imbalance(net_i))


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("distribution", ["gaussian", "sphere"])
def test_random_net_shapes(getkey, distribution, bias, dtype):
    net = gf.random_net(
        getkey(), width=4, dim=3, scale=1e-3, bias=bias, distribution=distribution, dtype=dtype
    )
    assert net.a.shape == (4,) and net.W.shape == (4, 3)
    assert (net.b is None) == (not bias)
    if bias:
        assert net.b.shape == (4,)
    assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(net))
    assert isinstance(net.activation, gf.ReLU)


@pytest.mark.parametrize("scale", [1e-2, 1e-20])
@pytest.mark.parametrize("bias", [False, True])
def test_random_net_sphere_is_balanced(getkey, bias, scale):
    net = gf.random_net(
        getkey(), width=8, dim=3, scale=scale, bias=bias, distribution="sphere", activation="tanh"
    )
    # a_k = ±ε exactly and ‖(w_k, b_k)‖ = ε up to the rounding of a normalisation
    # (a few ulp), so C_k = a_k² − ‖(w_k, b_k)‖² vanishes to ~1e-15·ε².
    np.testing.assert_allclose(np.abs(np.asarray(net.a)), scale, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(gf.imbalance(net)), 0.0, atol=1e-15 * scale**2)
    rows = np.column_stack([net.W] + ([net.b] if bias else []))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), scale, rtol=1e-15)


def test_random_net_scale_is_a_factor(getkey):
    key = getkey()
    unit = gf.random_net(key, width=3, dim=2, scale=1.0, bias=True)
    tiny = gf.random_net(key, width=3, dim=2, scale=1e-20, bias=True)
    # θ0 = ε·θ̄0: one multiplication, exact up to one rounding.
    np.testing.assert_allclose(flatten(tiny), 1e-20 * flatten(unit), rtol=1e-15)
    traced = jax.jit(lambda s: gf.random_net(key, width=3, dim=2, scale=s, bias=True))(1e-20)
    # Under jit XLA may fuse the scaling differently: one rounding apart at most.
    np.testing.assert_allclose(flatten(traced), flatten(tiny), rtol=4e-16)


@pytest.mark.parametrize("scale", [1.0, 1e-8, 1e-20])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    "imbalance", [[1.0, 2.0, 0.5], [-1.0, -0.25, -3.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]
)
def test_net_with_imbalance(getkey, imbalance, bias, scale):
    key = getkey()
    C = scale**2 * np.asarray(imbalance)
    net = gf.net_with_imbalance(key, C, dim=3, scale=scale, bias=bias, activation="tanh")
    assert isinstance(net.activation, gf.Tanh)
    # C_k = a_k² − ‖(w_k, b_k)‖² is a difference of numbers of size ~ε²: a few roundings of
    # those, so 1e-12 relative to ε² (the brief's tolerance) is a margin of ~1e3.
    np.testing.assert_allclose(np.asarray(gf.imbalance(net)), C, rtol=1e-12, atol=1e-12 * scale**2)
    # Directions and signs are those of the plain Gaussian draw with the same key.
    base = gf.random_net(key, width=3, dim=3, scale=scale, bias=bias, activation="tanh")
    np.testing.assert_array_equal(np.sign(net.a), np.sign(base.a))
    rows = np.column_stack([net.W] + ([net.b] if bias else []))
    base_rows = np.column_stack([base.W] + ([base.b] if bias else []))
    cosine = np.sum(rows * base_rows, axis=1) / (
        np.linalg.norm(rows, axis=1) * np.linalg.norm(base_rows, axis=1)
    )
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-14)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_squared_loss_matches_formula(reduction, weighted):
    rng = np.random.default_rng(2)
    a, W, b = _numpy_net(rng, 3, 2, True)
    x = rng.normal(size=(6, 2))
    y = rng.normal(size=6)
    weights = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0]) if weighted else None
    net = gf.TwoLayerNet(as_jax(a), as_jax(W), as_jax(b), "tanh")
    loss = gf.squared_loss(
        net, as_jax(x), as_jax(y), None if weights is None else as_jax(weights), reduction
    )
    expected = numpy_loss(
        flatten(net), x, y, m=3, bias=True, activation="tanh", weights=weights, reduction=reduction
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-14)


def test_zero_weight_removes_a_sample_exactly():
    rng = np.random.default_rng(3)
    a, W, _ = _numpy_net(rng, 3, 2, False)
    net = gf.TwoLayerNet(as_jax(a), as_jax(W), activation="gelu")
    x = rng.normal(size=(5, 2))
    y = rng.normal(size=5)
    weights = as_jax([1.0, 1.0, 0.0, 1.0, 1.0])
    padded = gf.squared_loss(net, as_jax(x), as_jax(y), weights)
    dropped = gf.squared_loss(net, as_jax(np.delete(x, 2, 0)), as_jax(np.delete(y, 2)))
    np.testing.assert_allclose(float(padded), float(dropped), rtol=1e-15)


@pytest.mark.mistyped
def test_constructor_errors():
    with pytest.raises(ValueError, match="`a`"):
        gf.TwoLayerNet(jnp.ones((2, 1, 1)), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="`W`"):
        gf.TwoLayerNet(jnp.ones(2), jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="`b`"):
        gf.TwoLayerNet(jnp.ones(2), jnp.ones((2, 1)), jnp.ones(3))
    with pytest.raises(TypeError, match="`a`, `W` and `b` must share one dtype"):
        gf.TwoLayerNet(jnp.ones(2), jnp.ones((2, 1), jnp.float32))
    with pytest.raises(TypeError, match="floating point"):
        gf.TwoLayerNet(jnp.ones(2, jnp.int32), jnp.ones((2, 1), jnp.int32))


@pytest.mark.mistyped
def test_random_net_errors(getkey):
    with pytest.raises(ValueError, match="`scale`"):
        gf.random_net(getkey(), width=2, dim=2, scale=0.0)
    with pytest.raises(ValueError, match="`scale`"):
        gf.random_net(getkey(), width=2, dim=2, scale=float("inf"))
    with pytest.raises(ValueError, match="`width`"):
        gf.random_net(getkey(), width=0, dim=2, scale=1.0)
    with pytest.raises(ValueError, match="`dim`"):
        gf.random_net(getkey(), width=2, dim=2.5, scale=1.0)
    with pytest.raises(ValueError, match="`distribution`"):
        gf.random_net(getkey(), width=2, dim=2, scale=1.0, distribution="uniform")
    with pytest.raises(ValueError, match="`activation`"):
        gf.random_net(getkey(), width=2, dim=2, scale=1.0, activation="sigmoid_typo")
    with pytest.raises(ValueError, match="`imbalance`"):
        gf.net_with_imbalance(getkey(), jnp.ones((2, 2)), dim=2, scale=1.0)
