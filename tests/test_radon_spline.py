"""RS coordinates: round trips, the rescaling symmetry, and use as flow observables."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
import gradflow.radon as radon


def _net(getkey, activation, *, m=5, d=3, bias=True):
    a = jax.random.normal(getkey(), (m,))
    W = jax.random.normal(getkey(), (m, d))
    b = jax.random.normal(getkey(), (m,)) if bias else None
    return gf.TwoLayerNet(a, W, b, activation)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "gelu"])
@pytest.mark.parametrize("bias", [True, False])
def test_round_trips(getkey, activation, bias):
    net = _net(getkey, activation, bias=bias)
    rs = radon.radon_spline(net)
    np.testing.assert_allclose(jnp.linalg.norm(rs.orientation, axis=1), 1.0, rtol=1e-15)
    back = radon.network_of(rs, activation, bias=bias)
    x = jax.random.normal(getkey(), (20, 3))
    # Same function (for homogeneous φ a different, balanced, representative).
    np.testing.assert_allclose(back(x), net(x), rtol=1e-13, atol=1e-13)
    again = radon.radon_spline(back)
    for field in ("orientation", "offset", "amplitude"):
        np.testing.assert_allclose(getattr(again, field), getattr(rs, field), rtol=1e-13)
    if radon.is_homogeneous(activation):
        assert rs.scale is None
        np.testing.assert_allclose(gf.imbalance(back), 0.0, atol=1e-14)
    else:
        np.testing.assert_allclose(rs.scale, jnp.linalg.norm(net.W, axis=1), rtol=1e-15)
        np.testing.assert_allclose(back.W, net.W, rtol=1e-14)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity"])
def test_rescaling_invariance(getkey, activation):
    net = _net(getkey, activation)
    alpha = jnp.array([0.3, 2.0, 7.5, 1e-3, 1e3])
    scaled = gf.TwoLayerNet(net.a / alpha, net.W * alpha[:, None], net.b * alpha, activation)
    rs, rs_scaled = radon.radon_spline(net), radon.radon_spline(scaled)
    # Invariant to rounding: a few ulps from the norm and the divisions.
    for field in ("orientation", "offset", "amplitude"):
        np.testing.assert_allclose(getattr(rs_scaled, field), getattr(rs, field), rtol=1e-14)


def test_breakplanes_are_zero_sets(getkey):
    net = _net(getkey, "relu", d=2)
    rs = radon.radon_spline(net)
    # The point γξ lies on neuron i's breakplane: its preactivation vanishes there.
    points = rs.offset[:, None] * rs.orientation
    z = jnp.einsum("id,id->i", points, net.W) + net.b
    np.testing.assert_allclose(z, 0.0, atol=1e-14)
    np.testing.assert_allclose(radon.breakplane_offsets(net), rs.offset)


def test_dead_neuron_and_gradient():
    net = gf.TwoLayerNet(jnp.array([1.0, 2.0]), jnp.array([[0.0, 0.0], [3.0, 4.0]]),
                         jnp.array([1.0, 5.0]), "relu")  # fmt: skip
    rs = radon.radon_spline(net)
    np.testing.assert_array_equal(rs.orientation[0], 0.0)
    assert float(rs.offset[0]) == 0.0 and float(rs.amplitude[0]) == 0.0
    np.testing.assert_allclose(rs.offset[1], -1.0)
    grads = jax.grad(lambda n: jnp.sum(radon.radon_spline(n).amplitude))(net)
    assert np.all(np.isfinite(grads.W)) and np.all(np.isfinite(grads.a))


def test_scale_mismatch_is_refused(getkey):
    rs = radon.radon_spline(_net(getkey, "tanh"))
    with pytest.raises(ValueError, match="`rs.scale` must be None"):
        radon.network_of(rs, "relu")


def test_rs_observables_under_vmap(getkey):
    # What a flow does with an observable at its save times: a vmap over stacked nets.
    nets = [_net(getkey, "relu", m=3, d=2) for _ in range(4)]
    stacked = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *nets)
    observed = {name: jax.vmap(fn)(stacked) for name, fn in radon.rs_observables().items()}
    assert observed["orientation"].shape == (4, 3, 2)
    for i, net in enumerate(nets):
        np.testing.assert_allclose(observed["amplitude"][i], radon.radon_spline(net).amplitude)


@pytest.mark.slow
def test_rs_observables_in_a_flow(getkey):  # ~20 s, mostly compiling the flow
    x = jax.random.normal(getkey(), (8, 2))
    y = jnp.tanh(x[:, 0])
    net = _net(getkey, "tanh", m=3, d=2)
    ts = jnp.array([0.0, 0.5, 1.0])
    solution = gf.gradient_flow(
        net, x, y, t1=1.0, ts=ts, solver=dfx.Tsit5(), observables=radon.rs_observables()
    )
    offsets = solution.observables["offset"]
    assert offsets.shape == (3, 3)
    for i in range(3):
        expected = radon.radon_spline(jax.tree_util.tree_map(lambda v: v[i], solution.nets))
        np.testing.assert_allclose(offsets[i], expected.offset, rtol=1e-14)
