from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    ALL_ACTIVATIONS,
    as_jax,
    flatten,
    NUMPY_ACTIVATIONS,
    reference_flow,
    relative_error,
    SMOOTH_ACTIVATIONS,
)
from scipy.special import spherical_jn

import gradflow as gf


# Both signs, the origin, tiny values (where sinc's derivative used to cancel to 0),
# moderate values and the saturated tails.
_Z = np.concatenate(
    [
        np.linspace(-6.0, 6.0, 241),
        [0.0, 1e-300, -1e-300, 1e-12, -1e-8, 1e-4, 0.4999999, 0.5, 0.5000001, 30.0, -30.0],
    ]
)


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_activation_matches_its_formula(name):
    sigma, _ = NUMPY_ACTIVATIONS[name]
    out = gf.get_activation(name)(as_jax(_Z))
    assert out.dtype == jnp.float64
    # Different but equally valid float64 evaluations (e.g. sin(z)/z vs a series, erf
    # from two libraries) differ by a few ulp; 1e-14 relative leaves a factor ~50.
    np.testing.assert_allclose(np.asarray(out), sigma(_Z), rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_activation_derivative_matches_hand_derived(name):
    _, dsigma = NUMPY_ACTIVATIONS[name]
    # Kinked activations are compared away from their kink, where σ' is unique.
    z = _Z if name in SMOOTH_ACTIVATIONS else _Z[_Z != 0]
    grad = jax.vmap(jax.grad(gf.get_activation(name)))(as_jax(z))
    # A derivative by autodiff vs by hand: each is a few ulp off; differentiating
    # sin(z)/z costs up to ~3·eps/z² ≈ 3e-15 relative at |z| = 0.5 (see `_sinc`). The
    # absolute 1e-15 (~5 ulp of σ' = O(1)) admits JAX's tanh' = 1 − tanh², which cancels
    # in the tails: correct in absolute, not relative, terms, which is what a gradient
    # summed over neurons needs.
    np.testing.assert_allclose(np.asarray(grad), dsigma(z), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", SMOOTH_ACTIVATIONS)
def test_reference_derivatives_match_finite_differences(name):
    # Checks the NumPy references themselves. Central differences with h = 1e-5 have
    # truncation error h²·|σ'''|/6 ≲ 1e-10 and rounding error eps·|σ|/h ≲ 1e-11.
    sigma, dsigma = NUMPY_ACTIVATIONS[name]
    z = np.linspace(-4.0, 4.0, 81)
    h = 1e-5
    fd = (sigma(z + h) - sigma(z - h)) / (2 * h)
    np.testing.assert_allclose(dsigma(z), fd, rtol=0, atol=1e-9)


def test_sinc_at_zero():
    sinc = gf.Sinc()
    second = jax.jit(jax.grad(jax.grad(sinc)))
    assert float(sinc(0.0)) == 1.0
    assert float(jax.jit(jax.grad(sinc))(0.0)) == 0.0
    # σ = 1 − z²/6 + ..., so σ''(0) = −1/3; (σ²)''(0) = 2σ'(0)² + 2σσ''(0) = −2/3.
    np.testing.assert_allclose(float(second(0.0)), -1 / 3, rtol=1e-15)
    second_of_square = jax.jit(jax.grad(jax.grad(gf.Sinc2())))
    np.testing.assert_allclose(float(second_of_square(0.0)), -2 / 3, rtol=1e-15)


@pytest.mark.parametrize("z", [1e-20, 1e-12, 1e-8, -1e-6, 1e-3, 0.3])
def test_sinc_derivative_is_relatively_accurate_near_zero(z):
    # sinc' = −j₁ (spherical Bessel); SciPy's j₁ is accurate to ~1e-15 relative here.
    # The network's inner-weight gradient is a·σ'(w·x)·x with w·x ~ init scale, so σ'
    # needs *relative* accuracy at tiny z; autodiff of sin(z)/z returns exactly 0 below
    # |z| ~ 1e-8.
    grad = float(jax.grad(gf.Sinc())(z))
    np.testing.assert_allclose(grad, -spherical_jn(1, z), rtol=1e-14)
    np.testing.assert_allclose(
        float(jax.grad(gf.Sinc2())(z)), -2 * spherical_jn(0, z) * spherical_jn(1, z), rtol=1e-14
    )


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_activation_keeps_float32(name):
    z = jnp.linspace(-2.0, 2.0, 9, dtype=jnp.float32)
    activation = gf.get_activation(name)
    assert activation(z).dtype == jnp.float32
    assert jax.vmap(jax.grad(activation))(z).dtype == jnp.float32


@pytest.mark.parametrize("name", ALL_ACTIVATIONS)
def test_kinks(name):
    activation = gf.get_activation(name)
    if name in ("relu", "leaky_relu"):
        assert activation.kinks == (0.0,)
        assert not activation.is_smooth
    else:
        assert activation.kinks == ()
        assert activation.is_smooth


def test_leaky_relu_slope():
    np.testing.assert_array_equal(gf.LeakyReLU(0.2)(jnp.array([-1.0, 2.0])), [-0.2, 2.0])
    with pytest.raises(ValueError, match="`negative_slope`"):
        gf.LeakyReLU(negative_slope=1.0)
    with pytest.raises(ValueError, match="`negative_slope`"):
        gf.LeakyReLU(negative_slope=-0.1)


class _Swish(gf.AbstractActivation):
    beta: float = eqx.field(static=True, default=1.0)

    def __call__(self, z):
        return z * jax.nn.sigmoid(self.beta * z)


class _TanhViaSigmoid(gf.AbstractActivation):
    # tanh(z) = 2·sigmoid(2z) − 1, computed differently from `jnp.tanh`.
    def __call__(self, z):
        return 2 * jax.nn.sigmoid(2 * jnp.asarray(z)) - 1


class _HardTanh(gf.AbstractActivation):
    kinks: ClassVar[tuple[float, ...]] = (-1.0, 1.0)

    def __call__(self, z):
        return jnp.clip(z, -1, 1)


def test_custom_activation_by_subclassing_and_registering():
    gf.register_activation("test_swish_beta2", lambda: _Swish(beta=2.0))
    activation = gf.get_activation("test_swish_beta2")
    assert isinstance(activation, _Swish) and activation.beta == 2.0
    assert activation.is_smooth
    assert not _HardTanh().is_smooth

    x = np.array([[0.5, -1.0], [2.0, 0.25], [-0.3, 0.7]])
    a = np.array([1.0, -0.5])
    W = np.array([[0.3, -0.2], [1.1, 0.4]])
    net = gf.TwoLayerNet(as_jax(a), as_jax(W), activation="test_swish_beta2")
    z = x @ W.T
    expected = (z / (1 + np.exp(-2 * z))) @ a
    np.testing.assert_allclose(np.asarray(net(as_jax(x))), expected, rtol=1e-14)
    # An instance works wherever a name does, and is returned unchanged.
    assert gf.get_activation(activation) is activation


@pytest.mark.slow  # the custom activation's values and derivatives are checked fast above
def test_custom_activation_flow_matches_reference(w1_data):
    # A user-defined tanh runs through the whole engine and matches the DOP853 reference
    # computed with NumPy's tanh; tolerance as in test_flow_reference.py.
    x, y = w1_data
    net = gf.random_net(jax.random.key(0), width=2, dim=2, scale=1e-8, activation="tanh")
    custom = gf.TwoLayerNet(net.a, net.W, activation=_TanhViaSigmoid())
    ts = gf.log_times(200.0, 41)
    sol = gf.gradient_flow(custom, x, y, t1=200.0, ts=ts, reduction="sum")
    assert int(sol.status) == gf.Status.SUCCESS
    reference = reference_flow(net, x, y, ts, reduction="sum")
    assert relative_error(flatten(sol.nets), reference).max() <= 1e-8


@pytest.mark.mistyped
def test_unknown_activation_name():
    with pytest.raises(ValueError, match="`activation`"):
        gf.get_activation("not_an_activation")
    with pytest.raises(ValueError, match="`activation`"):
        gf.TwoLayerNet(jnp.ones(2), jnp.ones((2, 1)), activation="swish_typo")
    with pytest.raises(TypeError, match="`activation`"):
        gf.get_activation(jnp.tanh)
    with pytest.raises(ValueError, match="`name`"):
        gf.register_activation("", gf.Tanh)
