"""Radon transforms with known answers, and the spectral seminorm through the Radon route
against closed forms computed in the Fourier domain (independent of the Radon route)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate

import gradflow.radon as radon


def _bump(x):
    return jnp.exp(-0.5 * jnp.sum(x**2, axis=1))


def test_radon_transform_of_a_gaussian_bump():
    # R[e^{-|x|²/2}](ξ, t) = √(2π) e^{-t²/2} for every ξ (d = 2).
    angles = jnp.array([0.0, 0.7, 2.0])
    xi = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    t = jnp.linspace(-3, 3, 13)
    radon_values = radon.radon_transform(_bump, xi, t, support_radius=10.0, num_points=128)
    expected = math.sqrt(2 * math.pi) * np.exp(-0.5 * np.asarray(t) ** 2)
    np.testing.assert_allclose(radon_values, np.broadcast_to(expected, (3, 13)), rtol=1e-13)


@pytest.mark.slow  # the Gaussian bump above is its fast sibling (a known transform)
def test_radon_transform_of_a_disc():
    # The chord length 2√(r² − t²). The indicator jumps inside the window, so
    # Gauss–Legendre converges like 1/n: measured 2e-3 relative with 2000 nodes.
    r = 1.3
    disc = lambda x: (jnp.sum(x**2, axis=1) <= r**2).astype(x.dtype)  # noqa: E731
    xi = jnp.array([[1.0, 0.0], [0.6, 0.8]])
    t = jnp.array([-1.0, 0.0, 0.5, 1.2, 1.5])  # the last one misses the disc
    values = radon.radon_transform(disc, xi, t, support_radius=2.0, num_points=2000)
    expected = 2 * np.sqrt(np.maximum(r**2 - np.asarray(t) ** 2, 0))
    np.testing.assert_allclose(values, np.broadcast_to(expected, (2, 5)), rtol=5e-3, atol=2e-3)


def test_relu_seminorm_in_1d_is_the_curvature_energy():
    # d = 1: ‖f‖² = ∫ f″² = 3√π/4 for the Gaussian bump. The FFT of a smooth, decayed
    # function is exact to rounding.
    value = radon.spectral_seminorm(_bump, "relu", dim=1, support_radius=10.0)
    np.testing.assert_allclose(value, 3 * math.sqrt(math.pi) / 4, rtol=1e-12)


def _fourier_form(rho, d=2):
    """½|S¹|(2π)^{1−2d} ∫_{R²} |f̂(ω)|² ρ(|ω|) dω for the bump, f̂ = 2π e^{−|ω|²/2}: a radial
    SciPy integral, no Radon transform."""
    radial = scipy.integrate.quad(
        lambda k: (2 * math.pi) ** 2 * math.exp(-(k**2)) * rho(k) * 2 * math.pi * k, 0, 30
    )[0]
    return 0.5 * radon.sphere_area(d) * (2 * math.pi) ** (1 - 2 * d) * radial


@pytest.mark.parametrize(
    "name, rho",
    [
        ("relu", lambda k: k**5),  # closed form 15π^{3/2}/16
        ("tanh", lambda k: k * math.sinh(math.pi * k / 2) ** 2 / math.pi**2),
    ],
)
def test_seminorm_in_2d_against_the_fourier_form(name, rho):
    # tanh's ρ grows like e^{π|k|}: cut at |k| = 12, where the integrand is ~e^{-106}
    # but rounding noise (1e-32 of the peak energy) times ρ would still be ~1e-16.
    value = radon.spectral_seminorm(
        _bump, name, dim=2, support_radius=10.0, num_points=96, max_frequency=12.0
    )
    np.testing.assert_allclose(value, _fourier_form(rho), rtol=1e-10)
    if name == "relu":
        np.testing.assert_allclose(value, 15 * math.pi**1.5 / 16, rtol=1e-12)


def test_stop_band_makes_the_seminorm_infinite():
    # A Gaussian bump has energy at every frequency; sinc cannot represent |k| ≥ 1.
    assert np.isinf(radon.spectral_seminorm(_bump, "sinc", dim=1, support_radius=10.0))


@pytest.mark.mistyped
def test_bad_input():
    with pytest.raises(ValueError, match="`dim`=3"):
        radon.spectral_seminorm(_bump, "relu", dim=3, support_radius=1.0)
    with pytest.raises(ValueError, match="`orientations`"):
        radon.radon_transform(_bump, jnp.ones((2, 3)), jnp.zeros(4), support_radius=1.0)
    with pytest.raises(ValueError, match="`support_radius`"):
        radon.radon_transform(_bump, jnp.ones((2, 2)), jnp.zeros(4), support_radius=0.0)
