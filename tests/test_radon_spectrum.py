"""ρ_φ and |φ̂|: the closed forms against the numerical route (trapezoidal rule on a
derivative of φ, an independent computation), the known shapes, and bad input."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import gradflow as gf
import gradflow.radon as radon


K = jnp.linspace(0.25, 6.0, 24)

# Tolerances (relative, where |φ̂(k)| > 1e-9 max|φ̂|): the trapezoidal rule is exact to
# rounding for analytic, exponentially decaying φ^(q) (measured ≤ 2e-9: the rounding of
# sums of size ~1 against |φ̂| ~ 1e-8 at k = 6); a |z|^-2 tail truncated at L = 1000 adds
# ~1/(kL²) absolute (measured 1.3e-5 for z/(1+z²), 5e-6 for sinc²).
SMOOTH = [("gaussian", 1e-8), ("tanh", 1e-8), ("erf", 1e-8), ("softplus", 1e-8), ("gelu", 1e-8)]
POWER_LAW_TAILS = [("rational", 3e-5), ("sinc2", 3e-5)]


@pytest.mark.parametrize("name, rtol", SMOOTH + POWER_LAW_TAILS)
def test_closed_form_matches_numerical_route(name, rtol):
    closed = np.asarray(radon.fourier_magnitude(name, K, method="closed_form"))
    numerical = np.asarray(radon.numerical_fourier_magnitude(name, K))
    resolved = closed > 1e-9 * closed.max()
    np.testing.assert_allclose(numerical[resolved], closed[resolved], rtol=rtol)


def test_penalty_shapes():
    k = jnp.array([0.5, 1.0, 2.0, 3.0])
    # ReLU: ρ = k⁴ in 1-D exactly (|φ̂| = 1/k²), |k|^{d+3} in d dimensions.
    np.testing.assert_allclose(radon.spectral_penalty("relu", k), k**4, rtol=1e-14)
    np.testing.assert_allclose(radon.spectral_penalty("relu", k, dim=3), k**6, rtol=1e-14)
    leaky = gf.LeakyReLU(negative_slope=0.2)
    np.testing.assert_allclose(radon.spectral_penalty(leaky, k), k**4 / 0.64, rtol=1e-14)
    np.testing.assert_allclose(
        radon.spectral_penalty("gaussian", k), np.exp(k**2) / (2 * np.pi), rtol=1e-14
    )
    np.testing.assert_allclose(
        radon.spectral_penalty("tanh", k, dim=2), k * np.sinh(np.pi * k / 2) ** 2 / np.pi**2
    )
    # `radon_power` replaces the |k|^{d-1} factor.
    np.testing.assert_allclose(
        radon.spectral_penalty("relu", k, dim=3, radon_power=0.0), k**4, rtol=1e-14
    )


def test_stop_bands():
    k = jnp.array([0.5, 0.99, 1.0, 1.5, 1.99, 2.0, 3.0])
    sinc = np.asarray(radon.spectral_penalty("sinc", k))
    assert np.all(np.isfinite(sinc[:2])) and np.all(np.isinf(sinc[2:]))
    np.testing.assert_allclose(sinc[:2], 1 / np.pi**2)
    sinc2 = np.asarray(radon.spectral_penalty("sinc2", k))
    inside = np.asarray(k) < 2
    np.testing.assert_allclose(
        sinc2[inside], 1 / (np.pi**2 * (1 - np.asarray(k)[inside] / 2) ** 2), rtol=1e-14
    )
    assert np.all(np.isinf(sinc2[~inside]))
    # The identity represents no k ≠ 0.
    assert np.all(np.isinf(radon.spectral_penalty("identity", k)))


def test_zero_frequency_is_unpenalised_for_non_integrable_activations():
    for name in ("relu", "tanh", "erf", "softplus", "gelu"):
        assert float(radon.spectral_penalty(name, jnp.array(0.0))) == 0.0


class _MyTanh(gf.AbstractActivation):
    def __call__(self, z):
        return jnp.tanh(jnp.asarray(z))


def test_user_activation_uses_numerical_route():
    k = jnp.array([0.5, 1.0, 3.0])
    ours = radon.spectral_penalty(_MyTanh(), k, dim=2)
    np.testing.assert_allclose(ours, radon.spectral_penalty("tanh", k, dim=2), rtol=1e-9)


@pytest.mark.mistyped
def test_bad_input():
    with pytest.raises(ValueError, match="does not exist as an integral"):
        radon.numerical_fourier_magnitude("sinc", jnp.array([0.5]))
    with pytest.raises(ValueError, match="kinks"):
        radon.numerical_fourier_magnitude("relu", jnp.array([0.5]))
    with pytest.raises(ValueError, match="`k` must be finite"):
        radon.spectral_penalty("relu", jnp.array([1.0, math.inf]))
    with pytest.raises(TypeError, match="`k` must be real"):
        radon.spectral_penalty("relu", jnp.array([1.0 + 1j]))
    with pytest.raises(ValueError, match="`dim`"):
        radon.spectral_penalty("relu", jnp.array([1.0]), dim=0)
    with pytest.raises(ValueError, match="`method`"):
        radon.fourier_magnitude("relu", jnp.array([1.0]), method="fft")
    with pytest.raises(ValueError, match="register_spectrum"):
        radon.fourier_magnitude(_MyTanh(), jnp.array([1.0]), method="closed_form")
