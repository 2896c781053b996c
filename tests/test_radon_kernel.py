"""Penalty kernels against independent answers: SciPy quadrature of the defining
integrals, and the classical closed forms (arc-cosine, Williams) against our quadrature
route (reached through a subclass, which has no closed form registered)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

import gradflow as gf
import gradflow.radon as radon


def _gaussian_expectation(phi, s11, s22, s12):
    """E[φ(u)φ(v)] over N(0, Σ) by nested adaptive SciPy quadrature (independent of ours):
    the outer over u, the inner over v | u ~ N(μ, τ²), each split at φ's kink at 0."""
    sigma = math.sqrt(s11)
    tau = math.sqrt(max(s22 - s12**2 / s11, 0.0))

    def conditional(u):
        mu = s12 / s11 * u
        if tau < 1e-12:  # the diagonal: v = u
            return phi(mu)
        f = lambda z: phi(mu + tau * z) * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # noqa: E731
        return scipy.integrate.quad(f, -14, 14, points=[-mu / tau], epsabs=1e-14, limit=200)[0]

    g = lambda u: phi(u) * conditional(u) * scipy.stats.norm.pdf(u, scale=sigma)  # noqa: E731
    return scipy.integrate.quad(g, -14 * sigma, 14 * sigma, points=[0.0], epsabs=1e-14)[0]


X1 = np.array([[0.3, -1.2], [1.5, 0.4], [-0.7, -0.2]])


def _cov(x1, x2, sw=1.0, sb=1.0):
    return sw**2 * x1 @ x1 + sb**2, sw**2 * x2 @ x2 + sb**2, sw**2 * x1 @ x2 + sb**2


@pytest.mark.parametrize(
    "name, phi",
    [
        ("relu", lambda z: max(z, 0.0)),
        ("erf", scipy.special.erf),
        ("gaussian", lambda z: math.exp(-0.5 * z * z)),
    ],
)
def test_gaussian_weights_closed_forms_against_scipy(name, phi):
    kernel = radon.Kernel(name, radon.GaussianWeights(weight_std=0.8, bias_std=0.5), dim=2)
    gram = np.asarray(kernel.gram(X1))
    for i, j in [(0, 1), (1, 2), (2, 2)]:
        expected = _gaussian_expectation(phi, *_cov(X1[i], X1[j], 0.8, 0.5))
        np.testing.assert_allclose(gram[i, j], expected, rtol=1e-10)


class _Erf(gf.Erf):
    """erf without its closed form: the kernel falls back to Gauss–Hermite."""


class _Gaussian(gf.Gaussian):
    pass


@pytest.mark.parametrize("ntk", [False, True])
@pytest.mark.parametrize("closed, quadrature", [("erf", _Erf()), ("gaussian", _Gaussian())])
def test_quadrature_route_matches_closed_forms(closed, quadrature, ntk):
    # Williams' erf kernel and det(I + Σ)^{-1/2}: the 96² Gauss–Hermite rule on analytic φ
    # converges exponentially while φ(σz) varies slowly on the node spacing; σ ≤ 1.1 here.
    x = jnp.linspace(-1, 1, 7)[:, None]
    density = radon.GaussianWeights(bias_std=0.5)
    exact = radon.Kernel(closed, density, dim=1, ntk=ntk).gram(x)
    ours = radon.Kernel(quadrature, density, dim=1, ntk=ntk).gram(x)
    np.testing.assert_allclose(ours, exact, rtol=1e-9, atol=1e-12)


def test_relu_ntk_against_sheppard():
    # K_φ' of ReLU is P(u > 0, v > 0) = (π − θ)/2π (Sheppard), checked with SciPy's
    # bivariate normal CDF: P(u < 0, v < 0) is the same by symmetry.
    x = jnp.asarray(X1)
    ntk = np.asarray(radon.Kernel("relu", radon.GaussianWeights(), dim=2, ntk=True).gram(x))
    plain = np.asarray(radon.Kernel("relu", radon.GaussianWeights(), dim=2).gram(x))
    for i, j in [(0, 1), (0, 2)]:
        s11, s22, s12 = _cov(X1[i], X1[j])
        mvn = scipy.stats.multivariate_normal([0, 0], [[s11, s12], [s12, s22]])
        orthant = mvn.cdf([0, 0])
        np.testing.assert_allclose((ntk - plain)[i, j], s12 * orthant, rtol=1e-6)


def _radial(r, d):
    """E_ξ[√π exp(−(r ξ₁)²/4)] for ξ uniform on S^{d−1}: the Gaussian activation's
    whole-line Radon kernel, by SciPy quadrature over u = ξ₁ ∝ (1 − u²)^{(d−3)/2}."""
    if d == 1:
        return math.sqrt(math.pi) * math.exp(-(r**2) / 4)
    a = (d - 3) / 2
    f = lambda u: math.sqrt(math.pi) * math.exp(-((r * u) ** 2) / 4) * (1 - u * u) ** a  # noqa: E731
    g = lambda u: (1 - u * u) ** a  # noqa: E731
    return scipy.integrate.quad(f, -1, 1)[0] / scipy.integrate.quad(g, -1, 1)[0]


@pytest.mark.parametrize("d", [1, 2, 3, 10])
def test_whole_line_radon_kernel(d):
    key = jax.random.key(d)
    x = jax.random.normal(key, (4, d))
    gram = np.asarray(radon.Kernel("gaussian", radon.RadonDensity(), dim=d).gram(x))
    xs = np.asarray(x)
    for i in range(4):
        r = np.linalg.norm(xs[0] - xs[i])
        np.testing.assert_allclose(gram[0, i], _radial(r, d), rtol=1e-10)
    if d == 2:  # and the Bessel form E_θ e^{−a cos²θ} = e^{−a/2} I₀(a/2)
        r2 = np.sum((xs[0] - xs[1]) ** 2)
        expected = math.sqrt(math.pi) * scipy.special.i0e(r2 / 8)
        np.testing.assert_allclose(gram[0, 1], expected, rtol=1e-12)


@pytest.mark.parametrize(
    "name, phi",
    [("rational", lambda z: z / (1 + z * z)), ("sinc2", lambda z: np.sinc(z / np.pi) ** 2)],
)
def test_autocorrelations_against_scipy(name, phi):
    x = jnp.array([[0.0], [0.4], [2.5]])
    gram = np.asarray(radon.Kernel(name, radon.RadonDensity(), dim=1).gram(x))
    for j, tau in enumerate([0.0, 0.4, 2.5]):
        expected = scipy.integrate.quad(
            lambda z: phi(z) * phi(z + tau), -np.inf, np.inf, limit=2000, epsabs=1e-13
        )[0]
        np.testing.assert_allclose(gram[0, j], expected, rtol=2e-7)


def _offset_expectation(phi, s, t, offsets):
    if isinstance(offsets, radon.UniformOffsets):
        R = offsets.radius
        f = lambda g: phi(s - g) * phi(t - g) / (2 * R)  # noqa: E731
        return scipy.integrate.quad(f, -R, R, points=[s, t], epsabs=1e-14)[0]
    tau = offsets.scale
    f = lambda g: phi(s - g) * phi(t - g) * scipy.stats.norm.pdf(g, scale=tau)  # noqa: E731
    return scipy.integrate.quad(f, -12 * tau, 12 * tau, points=[s, t], epsabs=1e-14)[0]


@pytest.mark.parametrize("offsets", [radon.UniformOffsets(2.0), radon.GaussianOffsets(1.5)])
@pytest.mark.parametrize(
    "name, phi", [("relu", lambda z: max(z, 0.0)), ("tanh", math.tanh)]
)  # fmt: skip
def test_finite_offsets_1d(offsets, name, phi):
    x = jnp.array([[-1.3], [0.2], [1.1]])
    gram = np.asarray(radon.Kernel(name, radon.RadonDensity(offsets), dim=1).gram(x))
    for i, j in [(0, 1), (1, 2), (2, 2)]:
        s, t = float(x[i, 0]), float(x[j, 0])
        expected = 0.5 * (
            _offset_expectation(phi, s, t, offsets) + _offset_expectation(phi, -s, -t, offsets)
        )
        # Closed form for ReLU; for tanh 48-node Gauss–Legendre (measured ~5e-15) or
        # 96-node Gauss–Hermite (measured ≤ 5e-8: φ(s − τz) varies fast on its nodes).
        np.testing.assert_allclose(gram[i, j], expected, rtol=1e-12 if name == "relu" else 1e-7)


def test_finite_offsets_2d_relu():
    x = jnp.array([[0.5, -0.3], [-0.2, 0.9]])
    offsets = radon.UniformOffsets(2.0)
    gram = np.asarray(radon.Kernel("relu", radon.RadonDensity(offsets), dim=2).gram(x))

    def integrand(theta):
        xi = np.array([np.cos(theta), np.sin(theta)])
        s, t = float(x[0] @ xi), float(x[1] @ xi)
        return _offset_expectation(lambda z: max(z, 0.0), s, t, offsets) / (2 * np.pi)

    expected = scipy.integrate.quad(integrand, 0, 2 * np.pi, limit=200, epsabs=1e-13)[0]
    # Midpoint rule over 256 angles on an integrand that is C² in θ: ~n^-3.
    np.testing.assert_allclose(gram[0, 1], expected, rtol=1e-7)


# One kernel per route (closed form, Gauss–Hermite, whole line, finite offsets closed and
# by features). The Radon rules are feature maps with positive weights, PSD for any
# `num_nodes`; the Gauss–Hermite route is not (its rule depends on each pair's
# correlation: 8 nodes give an eigenvalue −2e-3 λ_max here), so it keeps its default.
KERNELS = [
    radon.Kernel("erf", radon.GaussianWeights(), dim=3, ntk=True),
    radon.Kernel("tanh", radon.GaussianWeights(), dim=3),
    radon.Kernel("sinc", radon.RadonDensity(), dim=3),
    radon.Kernel("relu", radon.RadonDensity(radon.UniformOffsets(3.0)), dim=2, num_nodes=32),
    radon.Kernel("softplus", radon.RadonDensity(radon.GaussianOffsets()), dim=2, num_nodes=12),
]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: f"{type(k.activation).__name__}")
def test_symmetric_positive_semidefinite(kernel):
    x = jax.random.normal(jax.random.key(1), (25, kernel.dim))
    if kernel.dim == 2:
        x = x[:, :2]
    gram = np.asarray(kernel.gram(x))
    np.testing.assert_allclose(gram, gram.T, rtol=1e-13, atol=1e-15)
    eigenvalues = np.linalg.eigvalsh(gram)
    # PSD up to rounding (eigenvalues ≥ −n·ε·λ_max), or up to the Gauss–Hermite route's
    # quadrature error (~1e-6 at these σ ≈ 2).
    generic = isinstance(kernel.density, radon.GaussianWeights) and not kernel.ntk
    floor = 1e-6 if generic else 25 * 1e-15
    assert eigenvalues.min() >= -floor * eigenvalues.max()
    # A pair evaluation and a vmap over pairs agree with the Gram matrix.
    np.testing.assert_allclose(kernel(x[0], x[1]), gram[0, 1], rtol=1e-13)
    pairs = jax.vmap(kernel)(x[:5], x[5:10])
    np.testing.assert_allclose(pairs, np.diag(gram[:5, 5:10]), rtol=1e-13)


@pytest.mark.mistyped
def test_bad_input():
    with pytest.raises(ValueError, match="`density=RadonDensity"):
        radon.Kernel("relu", radon.RadonDensity(), dim=1)
    with pytest.raises(ValueError, match="`dim`=3"):
        radon.Kernel("relu", radon.RadonDensity(radon.UniformOffsets(1.0)), dim=3)
    with pytest.raises(ValueError, match="`ntk=True`"):
        radon.Kernel("gaussian", radon.RadonDensity(), dim=1, ntk=True)
    with pytest.raises(ValueError, match="kinks"):
        radon.Kernel("leaky_relu", radon.RadonDensity(radon.UniformOffsets(1.0)), dim=1)
    with pytest.raises(ValueError, match="`radius`"):
        radon.UniformOffsets(-1.0)
    kernel = radon.Kernel("relu", dim=2)
    with pytest.raises(ValueError, match=r"`x1` must have shape \(n, 2\)"):
        kernel.gram(jnp.ones((3, 3)))
