"""Minimum-norm interpolants: they interpolate, their norm yᵀK⁻¹y is the spectral
seminorm computed through the Radon route, and ill-conditioning is reported."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradflow.radon as radon


X = jnp.linspace(-2.0, 2.0, 7)[:, None]
Y = jnp.sin(2 * X[:, 0])


@pytest.mark.parametrize(
    "kernel",
    [
        radon.Kernel("gaussian", radon.RadonDensity(), dim=1),
        radon.Kernel("relu", radon.RadonDensity(radon.UniformOffsets(3.0)), dim=1),
        radon.Kernel("erf", radon.GaussianWeights(), dim=1, ntk=True),
    ],
    ids=["gaussian-whole-line", "relu-window", "erf-ntk"],
)
def test_interpolates_and_reports_condition(kernel):
    result = radon.minimum_norm_interpolant(kernel, X, Y)
    np.testing.assert_allclose(result(X), Y, atol=1e-9)
    assert float(result.residual) < 1e-9
    gram = np.asarray(kernel.gram(X))
    exact = np.linalg.cond(gram)
    # A lower bound from Rayleigh quotients, within 5% on these matrices (measured ~1e-10).
    assert 0.95 * exact <= float(result.condition_number) <= exact * (1 + 1e-8)
    np.testing.assert_allclose(result.seminorm, Y @ np.linalg.solve(gram, Y), rtol=1e-9)


@pytest.mark.parametrize(
    "name", ["gaussian", pytest.param("rational", marks=pytest.mark.slow), "sinc2"]
)
def test_norm_equals_radon_route_seminorm(name):
    # For orientations uniform and offsets on the whole line the RKHS norm *is* the
    # spectral seminorm (an identity of the definitions, see `seminorm_constant`); the
    # Radon route computes it by an FFT of the interpolant along the offset. Tolerances:
    # the Gaussian kernel decays like e^{-r²/4}, so the FFT is exact to rounding
    # (measured 2e-14) once ρ's growth is cut at |k| = 6, where the integrand is
    # e^{-36}; the rational and sinc² kernels decay like 1/r², so the interpolant is
    # truncated at |x| = 400 (measured 3e-6 and 3e-7).
    kernel = radon.Kernel(name, radon.RadonDensity(), dim=1)
    result = radon.minimum_norm_interpolant(kernel, X, Y)
    if name == "gaussian":
        kwargs = dict(support_radius=16.0, num_offsets=1024, max_frequency=6.0)
        rtol = 1e-12
    else:
        # ρ of z/(1+z²) grows like e^{2|k|}: cut at |k| = 15 (integrand ~e^{-30}).
        kwargs = dict(support_radius=400.0, num_offsets=2**15, max_frequency=15.0)
        rtol = 1e-5
    value = radon.spectral_seminorm(result, name, dim=1, **kwargs)
    np.testing.assert_allclose(value, result.seminorm, rtol=rtol)


def test_singular_gram_is_an_error():
    kernel = radon.Kernel("relu", radon.GaussianWeights(), dim=1)
    x = jnp.array([[0.0], [1.0], [1.0]])
    y = jnp.array([0.0, 1.0, 2.0])
    with pytest.raises(eqx.EquinoxRuntimeError, match="ridge"):
        radon.minimum_norm_interpolant(kernel, x, y)
    report = radon.minimum_norm_interpolant(kernel, x, y, throw=False)
    assert float(report.condition_number) > 1e12
    # A ridge regularises it.
    ridged = radon.minimum_norm_interpolant(kernel, x, y, ridge=1e-3)
    assert np.all(np.isfinite(ridged.coefficients))


def test_under_jit_and_vmap():
    kernel = radon.Kernel("gaussian", radon.RadonDensity(), dim=1)
    ys = jnp.stack([Y, 2 * Y, jnp.cos(X[:, 0])])
    norms = jax.vmap(lambda y: radon.minimum_norm_interpolant(kernel, X, y).seminorm)(ys)
    np.testing.assert_allclose(norms[1], 4 * norms[0], rtol=1e-12)


@pytest.mark.mistyped
def test_bad_input():
    kernel = radon.Kernel("gaussian", radon.RadonDensity(), dim=1)
    with pytest.raises(ValueError, match="`y` must have shape"):
        radon.minimum_norm_interpolant(kernel, X, Y[:3])
    with pytest.raises(ValueError, match="`ridge`"):
        radon.minimum_norm_interpolant(kernel, X, Y, ridge=-1.0)
