"""Independent references for the test-suite: NumPy formulas, hand-derived gradients,
SciPy solves and closed-form flows. Nothing here calls gradflow's loss or gradient."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.special
from scipy.integrate import solve_ivp

import gradflow as gf


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8, equal_nan=False):
    """True when two PyTrees have the same structure and all array leaves are close."""
    x_arrays, x_static = eqx.partition(x, eqx.is_array)
    y_arrays, y_static = eqx.partition(y, eqx.is_array)
    if jax.tree_util.tree_structure(x_arrays) != jax.tree_util.tree_structure(y_arrays):
        return False
    if x_static != y_static:
        return False
    close = jax.tree_util.tree_map(
        lambda a, b: (
            a.shape == b.shape
            and a.dtype == b.dtype
            and bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))
        ),
        x_arrays,
        y_arrays,
    )
    return all(jax.tree_util.tree_leaves(close))


# --------------------------------------------------------------------------------------
# Activations: value and first derivative, written out by hand in NumPy.
# --------------------------------------------------------------------------------------


def _sinc(z):
    # sin(z)/z = j₀(z), and its derivative is −j₁(z): SciPy's spherical Bessel functions
    # are accurate to ~1e-15 relative near 0, where (z cos z − sin z)/z² cancels.
    return scipy.special.spherical_jn(0, z)


def _sinc_derivative(z):
    return -scipy.special.spherical_jn(1, z)


def _sech_squared(z):
    # 4e^{−2|z|}/(1 + e^{−2|z|})²: neither overflows nor cancels like 1 − tanh² does.
    e = np.exp(-2 * np.abs(z))
    return 4 * e / (1 + e) ** 2


def _normal_cdf(z):
    # `ndtr`, not ½(1 + erf(z/√2)), which cancels for z ≪ 0.
    return scipy.special.ndtr(z)


def _normal_pdf(z):
    return np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)


NUMPY_ACTIVATIONS = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "leaky_relu": (
        lambda z: np.where(z > 0, z, 0.01 * z),
        lambda z: np.where(z > 0, 1.0, 0.01),
    ),
    "identity": (lambda z: np.asarray(z, float), lambda z: np.ones_like(z, dtype=float)),
    "tanh": (np.tanh, lambda z: _sech_squared(z)),
    "rational": (lambda z: z / (1 + z**2), lambda z: (1 - z**2) / (1 + z**2) ** 2),
    "sinc": (_sinc, _sinc_derivative),
    "sinc2": (lambda z: _sinc(z) ** 2, lambda z: 2 * _sinc(z) * _sinc_derivative(z)),
    "gaussian": (lambda z: np.exp(-0.5 * z**2), lambda z: -z * np.exp(-0.5 * z**2)),
    "erf": (scipy.special.erf, lambda z: 2 / np.sqrt(np.pi) * np.exp(-(z**2))),
    "softplus": (lambda z: np.logaddexp(0.0, z), scipy.special.expit),
    "gelu": (lambda z: z * _normal_cdf(z), lambda z: _normal_cdf(z) + z * _normal_pdf(z)),
}

ALL_ACTIVATIONS = sorted(NUMPY_ACTIVATIONS)
SMOOTH_ACTIVATIONS = sorted(set(ALL_ACTIVATIONS) - {"relu", "leaky_relu"})


# --------------------------------------------------------------------------------------
# Parameters as one flat NumPy vector [a, W (row-major), b], independent of gradflow's
# own ravelling.
# --------------------------------------------------------------------------------------


def flatten(net) -> np.ndarray:
    """`(..., P)` array `[a, W.ravel(), b]` of a (possibly stacked) `TwoLayerNet`."""
    a = np.asarray(net.a)
    W = np.asarray(net.W)
    parts = [a, W.reshape(W.shape[:-2] + (-1,))]
    if net.b is not None:
        parts.append(np.asarray(net.b))
    return np.concatenate(parts, axis=-1)


def unflatten(theta, m, d, bias):
    a = theta[:m]
    W = theta[m : m + m * d].reshape(m, d)
    b = theta[m + m * d :] if bias else np.zeros(m)
    return a, W, b


def relative_error(theta, theta_ref) -> np.ndarray:
    """‖θ − θ_ref‖ / ‖θ_ref‖ along the last axis."""
    theta = np.asarray(theta)
    theta_ref = np.asarray(theta_ref)
    return np.linalg.norm(theta - theta_ref, axis=-1) / np.linalg.norm(theta_ref, axis=-1)


def assert_relative_close(actual, expected, rtol):
    """‖actual − expected‖ ≤ rtol·‖expected‖ along the last axis (one parameter vector
    per row), and NaN or inf in the same places (e.g. save times after a run's `t_stop`).

    The error measure of the flow's accuracy contract, relative to ‖θ‖: two runs whose
    sums are ordered differently (a batch of another size, vmap against a loop, another
    fusion) differ by ulps of ‖θ‖ amplified by the flow, not by ulps of each entry, so an
    entry near zero may differ by a large multiple of its own size."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    nonfinite = ~np.isfinite(expected)
    np.testing.assert_array_equal(~np.isfinite(actual), nonfinite)
    np.testing.assert_array_equal(actual[nonfinite], expected[nonfinite])
    rows = ~nonfinite.any(axis=-1)
    error = relative_error(actual[rows], expected[rows])
    assert np.all(error <= rtol), error.max()


def numpy_loss(theta, x, y, *, m, bias, activation, weights=None, reduction="mean"):
    """½·Σ_i ω_i (f(x_i) − y_i)² / Z with Z = Σ ω_i ("mean") or 1 ("sum")."""
    sigma, _ = NUMPY_ACTIVATIONS[activation]
    a, W, b = unflatten(np.asarray(theta), m, x.shape[1], bias)
    omega = np.ones(len(y)) if weights is None else np.asarray(weights)
    r = sigma(x @ W.T + b) @ a - y
    total = 0.5 * np.sum(omega * r**2)
    return total / np.sum(omega) if reduction == "mean" else total


def numpy_gradient(theta, x, y, *, m, bias, activation, weights=None, reduction="mean"):
    """∇L by the chain rule, written out by hand:

    e_i = ω_i r_i / Z,  ∂L/∂a_k = Σ_i e_i σ(z_ik),  ∂L/∂w_k = Σ_i e_i a_k σ'(z_ik) x_i,
    ∂L/∂b_k = Σ_i e_i a_k σ'(z_ik).
    """
    sigma, dsigma = NUMPY_ACTIVATIONS[activation]
    a, W, b = unflatten(theta, m, x.shape[1], bias)
    omega = np.ones(len(y)) if weights is None else np.asarray(weights)
    z = x @ W.T + b
    h = sigma(z)
    e = omega * (h @ a - y)
    if reduction == "mean":
        e = e / np.sum(omega)
    g_a = h.T @ e
    g_z = e[:, None] * a[None, :] * dsigma(z)
    g_W = g_z.T @ x
    parts = [g_a, g_W.ravel()] + ([g_z.sum(axis=0)] if bias else [])
    return np.concatenate(parts)


# DOP853 at rtol 1e-13 agrees with itself at rtol 3e-14 (atol 1e-16·ε) to ≤ 2e-11 relative
# on workload W1 at every scale from 1e-2 to 1e-20 (measured over three seeds), so it is a
# reference three orders of magnitude below the 1e-8 the tests demand. The absolute
# tolerance sits 14 orders below the init scale, so the escape phase is resolved.
REFERENCE_RTOL = 1e-13
REFERENCE_ATOL_PER_SCALE = 1e-14


def reference_flow(net, x, y, ts, *, weights=None, reduction="mean"):
    """θ(ts) from `scipy.integrate.solve_ivp(method="DOP853")` with the NumPy gradient."""
    x = np.asarray(x)
    y = np.asarray(y)
    ts = np.asarray(ts)
    theta0 = flatten(net)
    scale = np.max(np.abs(theta0))
    kwargs = dict(
        m=net.width,
        bias=net.b is not None,
        activation=_activation_name(net),
        weights=weights,
        reduction=reduction,
    )
    result = solve_ivp(
        lambda t, theta: -numpy_gradient(theta, x, y, **kwargs),
        (0.0, float(ts[-1])),
        theta0,
        method="DOP853",
        t_eval=ts,
        rtol=REFERENCE_RTOL,
        atol=REFERENCE_ATOL_PER_SCALE * scale,
    )
    assert result.success, result.message
    return result.y.T


def _activation_name(net) -> str:
    names = {
        "ReLU": "relu",
        "LeakyReLU": "leaky_relu",
        "Identity": "identity",
        "Tanh": "tanh",
        "Rational": "rational",
        "Sinc": "sinc",
        "Sinc2": "sinc2",
        "Gaussian": "gaussian",
        "Erf": "erf",
        "Softplus": "softplus",
        "GELU": "gelu",
    }
    return names[type(net.activation).__name__]


# --------------------------------------------------------------------------------------
# Closed-form flows of the scalar linear network f(x) = a·w·x on the one point x = 1,
# target c, loss ½(aw − c)². With u = aw and the conserved imbalance C = a² − w²,
#
#     u̇ = (c − u)(a² + w²) = (c − u)·√(C² + 4u²).
# --------------------------------------------------------------------------------------


def logistic_product(t, u0, c):
    """Balanced case C = 0: u̇ = 2u(c − u), so u(t) = c·u0·e^{2ct} / (c + u0(e^{2ct} − 1)).

    Written with e^{−2ct} so that it neither overflows nor loses digits at u0 = 1e-40."""
    t = np.asarray(t, float)
    decay = np.exp(-2 * c * t)
    return c * u0 / (c * decay + u0 * (1 - decay))


def _imbalanced_time(u, u0, c, C):
    # ∫ du / ((c − u)√(C² + 4u²)) = (1/√D)·log E(u) with D = C² + 4c² and
    # E(u) = (2C² + 8cu + 2√D·√(C² + 4u²)) / (c − u): every term is positive for
    # 0 < u < c, so nothing cancels even when u and C are 1e-40.
    D = C**2 + 4 * c**2

    def log_E(v):
        return np.log(2 * C**2 + 8 * c * v + 2 * np.sqrt(D) * np.sqrt(C**2 + 4 * v**2)) - np.log(
            c - v
        )

    return (log_E(u) - log_E(u0)) / np.sqrt(D)


def imbalanced_product(t, u0, c, C):
    """u(t) for 0 < u0 < c and any C, by inverting the closed-form t(u) with Brent's
    method to relative precision 4·(machine epsilon)."""
    out = []
    for ti in np.atleast_1d(np.asarray(t, float)):
        if ti == 0:
            out.append(u0)
            continue
        hi = c * (1 - 1e-15)
        if _imbalanced_time(hi, u0, c, C) <= ti:
            out.append(hi)
            continue
        out.append(
            scipy.optimize.brentq(
                lambda u: _imbalanced_time(u, u0, c, C) - ti,
                u0,
                hi,
                xtol=1e-300,
                rtol=4 * np.finfo(float).eps,
                maxiter=500,
            )
        )
    return np.asarray(out)


def factors_from_product(u, C):
    """(a, w) with a·w = u > 0, a² − w² = C, a, w > 0, computed without cancellation."""
    u = np.asarray(u, float)
    root = np.sqrt(C**2 + 4 * u**2)
    if C >= 0:
        a2 = (root + C) / 2
        w2 = 2 * u**2 / (root + C)
    else:
        w2 = (root - C) / 2
        a2 = 2 * u**2 / (root - C)
    return np.sqrt(a2), np.sqrt(w2)


def as_jax(array, dtype=jnp.float64):
    return jnp.asarray(np.asarray(array), dtype)


def pinning_problem():
    """The exact-ReLU-flow issue's problem: a biased ReLU net of 16 neurons on 40 points in
    3-D whose breakplanes pin data points. **Returns:** `(x, y, key)`; `key` draws the
    nets (`random_net(split(key, 2)[0], ...)` is the one several test files run, so the
    session's compilation cache compiles its exact flow once)."""
    key_x, key_net = jax.random.split(jax.random.key(0))
    x = jax.random.normal(key_x, (40, 3))
    y = jnp.sin(x @ jnp.array([1.0, -2.0, 0.5]))
    return x, y, key_net


def pinning_net(key):
    return gf.random_net(key, width=16, dim=3, scale=0.3, activation="relu", bias=True)
