"""Fourier transforms of activations and the spectral penalty factor $\\rho_\\varphi(k)$.

**Conventions.** $\\hat\\varphi(k) = \\int \\varphi(z) e^{-ikz}\\,dz$ (angular frequency). For
a $\\varphi$ that is not integrable (ReLU, tanh, erf, softplus, GELU) $\\hat\\varphi$ is the
transform in the sense of tempered distributions; away from $k = 0$ it is a function, and
it is that function we return: $|\\hat\\varphi(k)| = |\\widehat{\\varphi^{(q)}}(k)|/|k|^q$ for
the first derivative $\\varphi^{(q)}$ that is integrable. At $k = 0$ such transforms carry
the distributional part (a polynomial null space: constants, affine functions), and we
return $|\\hat\\varphi(0)| = \\infty$, i.e. no penalty there.

**Our definition of the penalty** (a documented choice; the paper's constants are not
known to us, see `/work/shared/PAPERS.md`, digest A): with orientations uniform on the
sphere and offsets uniform on the line, the kernel's RKHS norm is
$\\|f\\|^2 = C'_d
\\int_{\\mathbb R^d} |\\hat f(\\omega)|^2 \\rho_\\varphi(|\\omega|)\\,d\\omega$ with

$$\\rho_\\varphi(k) = \\frac{|k|^{p}}{|\\hat\\varphi(k)|^2},\\qquad p = d - 1,$$

the density of the penalty *per unit volume of frequency space* $\\mathbb R^d$ with
$C'_d = \\tfrac12|S^{d-1}|(2\\pi)^{1-2d}$ (see `gradflow.radon.seminorm_constant`).
`radon_power` overrides $p$. In the Radon domain $(\\xi, k)$ the volume
element $d\\omega = \\tfrac12 |k|^{d-1} dk\\,d\\xi$ adds one more
$|k|^{d-1}$, which `spectral_seminorm` includes.
"""

import functools
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._activation import (
    AbstractActivation,
    Erf,
    Gaussian,
    GELU,
    get_activation,
    Identity,
    LeakyReLU,
    Rational,
    ReLU,
    Sinc,
    Sinc2,
    Softplus,
    Tanh,
)
from .._activation.smooth import _sinc


Method = Literal["auto", "closed_form", "numerical"]


class Spectrum(NamedTuple):
    """What we know in closed form about one activation type.

    - `magnitude(activation, k)`: $|\\hat\\varphi(k)|$ for real $k$ ($\\infty$ at $k=0$ where
      $\\hat\\varphi$ has a distributional part there).
    - `autocorrelation(activation, tau)`: $A(\\tau) = \\int \\varphi(z)\\varphi(z+\\tau)\\,dz$
      for a square-integrable $\\varphi$, `None` otherwise. It is the kernel of the
      whole-line offset density (`UniformOffsets()`).
    """

    magnitude: Callable[[AbstractActivation, Array], Array]
    autocorrelation: Callable[[AbstractActivation, Array], Array] | None = None


def _inverse_square(k):
    # 1/k², with 1/0 = ∞ (the δ′-type part of the transform at the origin).
    return jnp.where(k == 0, jnp.inf, 1 / jnp.where(k == 0, 1, k) ** 2)


def _over_sinh(k, c):
    # π / sinh(c|k|) → ∞ at 0; for large |k| it underflows to 0 (ρ = ∞), as it should.
    k = jnp.abs(k)
    safe = jnp.where(k == 0, 1, k)
    return jnp.where(k == 0, jnp.inf, jnp.pi / jnp.sinh(c * safe))


def _sinc2_autocorrelation(_, tau):
    # A(τ) = 4π (b − sin b)/b³ with b = 2|τ|; the series below |b| = 0.1 avoids the
    # cancellation of b − sin b (first omitted term b⁸/39916800 < 3e-16 relative there).
    b = 2 * jnp.abs(tau)
    small = b < 0.1
    b_small = jnp.where(small, b, 0.0) ** 2
    series = 1 / 6 - b_small / 120 + b_small**2 / 5040 - b_small**3 / 362880
    safe = jnp.where(small, 1.0, b)
    return 4 * jnp.pi * jnp.where(small, series, (safe - jnp.sin(safe)) / safe**3)


_SPECTRA: dict[type, Spectrum] = {
    # φ″ = δ: |φ̂| = 1/k².
    ReLU: Spectrum(lambda act, k: _inverse_square(k)),
    # φ = αz + (1 − α) relu(z): φ″ = (1 − α)δ.
    LeakyReLU: Spectrum(lambda act, k: (1 - act.negative_slope) * _inverse_square(k)),
    # φ̂ = 2πi δ′: zero away from the origin, so every k ≠ 0 is infinitely penalised.
    Identity: Spectrum(lambda act, k: jnp.where(k == 0, jnp.inf, 0.0)),
    Gaussian: Spectrum(
        lambda act, k: math.sqrt(2 * math.pi) * jnp.exp(-0.5 * k**2),
        lambda act, tau: math.sqrt(math.pi) * jnp.exp(-0.25 * tau**2),
    ),
    # φ′ = sech², whose transform is πk/sinh(πk/2).
    Tanh: Spectrum(lambda act, k: _over_sinh(k, math.pi / 2)),
    # φ′ = (2/√π) e^{−z²}, transform 2e^{−k²/4}.
    Erf: Spectrum(lambda act, k: 2 * jnp.exp(-0.25 * k**2) * jnp.sqrt(_inverse_square(k))),
    # φ″ = ¼ sech²(z/2), transform πk/sinh(πk).
    Softplus: Spectrum(lambda act, k: _over_sinh(k, math.pi) * jnp.sqrt(_inverse_square(k))),
    # φ″ = (2 − z²)ϕ(z) with ϕ the normal density, transform (1 + k²)e^{−k²/2}.
    GELU: Spectrum(lambda act, k: (1 + k**2) * jnp.exp(-0.5 * k**2) * _inverse_square(k)),
    # F[1/(1+z²)] = πe^{−|k|}, and F[zψ] = i d/dk F[ψ].
    Rational: Spectrum(
        lambda act, k: math.pi * jnp.exp(-jnp.abs(k)),
        lambda act, tau: 2 * math.pi / (4 + tau**2),
    ),
    # A box: π on |k| < 1, zero outside (ρ = ∞ there: the stop band).
    Sinc: Spectrum(
        lambda act, k: jnp.where(jnp.abs(k) < 1, math.pi, 0.0),
        lambda act, tau: math.pi * _sinc(tau),
    ),
    # A triangle: π(1 − |k|/2) on |k| < 2 (soft edge: ρ ∝ 1/(1 − |k|/2)² inside).
    Sinc2: Spectrum(
        lambda act, k: math.pi * jnp.maximum(1 - jnp.abs(k) / 2, 0.0),
        _sinc2_autocorrelation,
    ),
}


def register_spectrum(activation_type: type, spectrum: Spectrum) -> None:
    """Gives the activations of `activation_type` a closed-form spectrum (used before the
    numerical route by `fourier_magnitude`, `spectral_penalty` and the kernels)."""
    if not (isinstance(activation_type, type) and issubclass(activation_type, AbstractActivation)):
        raise TypeError(
            "`activation_type` must be a subclass of `gradflow.AbstractActivation`, got "
            f"{activation_type!r}."
        )
    if not isinstance(spectrum, Spectrum):
        raise TypeError("`spectrum` must be a `gradflow.radon.Spectrum`.")
    _SPECTRA[activation_type] = spectrum


def spectrum_of(activation: AbstractActivation) -> Spectrum | None:
    """The registered closed form for `activation`'s type, or `None`."""
    return _SPECTRA.get(type(activation))


def _check_k(k) -> Array:
    k = jnp.asarray(k)
    if not jnp.issubdtype(k.dtype, jnp.floating):
        if jnp.issubdtype(k.dtype, jnp.complexfloating):
            raise TypeError(
                "`k` must be real frequencies; ρ_φ is defined on the real line. Pass "
                "`k.real` if the imaginary part is zero."
            )
        k = k.astype(jnp.result_type(float))
    if not isinstance(k, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(k))):
        raise ValueError(
            "`k` must be finite: ρ_φ(±∞) is a limit, not a value. Evaluate on a finite grid "
            "(e.g. `jnp.linspace(-K, K, n)`)."
        )
    return k


def _check_dim(dim) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"`dim` (the input dimension d) must be a positive integer, got {dim!r}.")


# ------------------------------------------------------------------------------------
# The numerical route: |φ̂(k)| = |F[φ^(q)](k)| / |k|^q by the trapezoidal rule.
# ------------------------------------------------------------------------------------

# Largest derivative order the numerical route tries before giving up.
_MAX_DERIVATIVE_ORDER = 3
# φ^(q) counts as integrable when |z|^{3/2} |φ^(q)(z)| on the outer half of the window is
# below this fraction of max |φ^(q)|: decay like |z|^{-2} or faster passes (|z|^{-1/2}
# ≈ 0.03 at z = 1000), decay like 1/|z| or none fails (√z ≈ 30).
_DECAY_THRESHOLD = 0.1
# Values of φ^(q) below this fraction of its peak are dropped from the window.
_NEGLIGIBLE = 1e-18
# Entries of the phase matrix k ⊗ z built at once (memory: 16 bytes each).
_MAX_PHASES = 2**24


def _derivative(activation, order):
    """z ↦ φ^(order)(z) elementwise, compiled as one program (eager evaluation of nested
    `grad`s would compile each primitive separately)."""
    return functools.partial(_derivative_jit, activation, order)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _derivative_jit(activation, order, z):
    f = activation
    for _ in range(order):
        f = jax.grad(f)
    return jax.vmap(f)(z)


def _choose_order(activation, z) -> int:
    outer = np.abs(z) >= 0.5 * np.max(z)
    for order in range(_MAX_DERIVATIVE_ORDER + 1):
        g = np.asarray(_derivative(activation, order)(z))
        if not np.all(np.isfinite(g)):
            break
        scale = np.max(np.abs(g))
        if scale == 0:
            break
        tail = np.max(np.abs(z[outer]) ** 1.5 * np.abs(g[outer]))
        if tail <= _DECAY_THRESHOLD * scale:
            return order
    raise ValueError(
        f"The Fourier transform of `activation` ({type(activation).__name__}) does not exist "
        f"as an integral: none of φ, φ′, …, φ^({_MAX_DERIVATIVE_ORDER}) decays like |z|^-2 "
        f"on the window |z| ≤ {float(np.max(z)):g}. Register its transform in closed form "
        "with `gradflow.radon.register_spectrum`, or pass `derivative_order=` (and a larger "
        "`half_width`) to force a conditionally convergent integral."
    )


def numerical_fourier_magnitude(
    activation: "str | AbstractActivation",
    k: Float[ArrayLike, "..."],
    *,
    derivative_order: int | None = None,
    half_width: float = 1000.0,
    step: float = 0.02,
) -> Float[Array, "..."]:
    """$|\\hat\\varphi(k)|$ from $\\varphi$ itself, for smooth activations without a closed form.

    Computes $|\\widehat{\\varphi^{(q)}}(k)|/|k|^q$ by the trapezoidal rule on
    $[-L, L]$ (`half_width` $L$, spacing `step`), with $\\varphi^{(q)}$ by automatic
    differentiation and $q$ the first order whose derivative decays like $|z|^{-2}$ on the
    window (or `derivative_order`). For an analytic $\\varphi^{(q)}$ decaying exponentially
    the rule is exact to rounding ($\\approx 10^{-16}\\int|\\varphi^{(q)}|$ absolute); a tail
    like $|z|^{-2}$ adds $\\approx 1/(|k| L^2)$. Measured against the closed forms (see
    `tests/test_radon_spectrum.py`): relative error below $10^{-8}$ wherever
    $|\\hat\\varphi(k)| > 10^{-9} \\max|\\hat\\varphi|$, and below $3 \\cdot 10^{-5}$
    for the $|z|^{-2}$ tails of $z/(1+z^2)$ and sinc² at $|k| \\ge 0.25$.

    **Raises** `ValueError` for an activation with kinks (its derivatives hold Dirac
    masses that sampling cannot see) and when no derivative up to order 3 decays.
    """
    activation = get_activation(activation)
    if not activation.is_smooth:
        raise ValueError(
            f"`activation` ({type(activation).__name__}) has kinks at {activation.kinks}: its "
            "derivatives hold Dirac masses, which the numerical route cannot sample. Register "
            "its transform with `gradflow.radon.register_spectrum` (ReLU and leaky ReLU have "
            "one built in)."
        )
    k = _check_k(k)
    n = int(round(2 * half_width / step)) + 1
    z = np.linspace(-half_width, half_width, n)
    order = _choose_order(activation, z) if derivative_order is None else derivative_order
    g = np.asarray(_derivative(activation, order)(jnp.asarray(z)))
    # Where φ^(q) has decayed below 1e-18 of its peak (exponential tails), the window
    # ends: the dropped part is below rounding, and the sums get shorter.
    significant = np.abs(g) > _NEGLIGIBLE * np.max(np.abs(g))
    edge = min(half_width, float(np.max(np.abs(z[significant]))) + 1.0)
    keep = np.abs(z) <= edge
    z, gw = z[keep], g[keep] * step
    gw[[0, -1]] *= 0.5
    z = jnp.asarray(z, k.dtype)
    gw = jnp.asarray(gw, k.dtype)

    def transform(kk):
        phase = kk[:, None] * z[None, :]
        return jnp.hypot(jnp.cos(phase) @ gw, jnp.sin(phase) @ gw)

    flat = k.reshape(-1)
    chunks = max(1, (flat.size * z.size) // _MAX_PHASES)
    if chunks == 1:
        magnitude = transform(flat)
    else:
        pad = (-flat.size) % chunks
        padded = jnp.pad(flat, (0, pad)).reshape(chunks, -1)
        magnitude = jax.lax.map(transform, padded).reshape(-1)[: flat.size]
    magnitude = magnitude.reshape(k.shape)
    if order == 0:
        return magnitude
    safe = jnp.where(k == 0, 1, jnp.abs(k))
    return jnp.where(k == 0, jnp.inf, magnitude / safe**order)


def fourier_magnitude(
    activation: "str | AbstractActivation",
    k: Float[ArrayLike, "..."],
    *,
    method: Method = "auto",
) -> Float[Array, "..."]:
    """$|\\hat\\varphi(k)|$, $\\hat\\varphi(k) = \\int\\varphi(z)e^{-ikz}dz$ (see the module
    docstring for non-integrable $\\varphi$ and $k = 0$).

    `method="auto"` uses the closed form where one is registered (every built-in
    activation has one) and `numerical_fourier_magnitude` otherwise; `"closed_form"` and
    `"numerical"` force one route.
    """
    activation = get_activation(activation)
    k = _check_k(k)
    spectrum = spectrum_of(activation)
    if method == "numerical" or (method == "auto" and spectrum is None):
        return numerical_fourier_magnitude(activation, k)
    if method not in ("auto", "closed_form"):
        raise ValueError(f"`method` must be 'auto', 'closed_form' or 'numerical', got {method!r}.")
    if spectrum is None:
        raise ValueError(
            f"No closed-form spectrum is registered for `activation` "
            f"({type(activation).__name__}). Use `method='numerical'` (smooth activations) "
            "or register one with `gradflow.radon.register_spectrum`."
        )
    return spectrum.magnitude(activation, k)


def spectral_penalty(
    activation: "str | AbstractActivation",
    k: Float[ArrayLike, "..."],
    *,
    dim: int = 1,
    radon_power: float | None = None,
    method: Method = "auto",
) -> Float[Array, "..."]:
    """The spectral penalty factor $\\rho_\\varphi(k) = |k|^{p}/|\\hat\\varphi(k)|^2$, with
    $p = d - 1$ (`dim` $= d$) unless `radon_power` sets it.

    Infinite where $\\hat\\varphi(k) = 0$ (the stop band of sinc and sinc², every $k \\ne 0$
    for the identity), zero at $k = 0$ for activations whose transform has a
    distributional part there. Closed forms (up to the constants in the code): ReLU
    $|k|^{d+3}$, Gaussian $|k|^{d-1}e^{k^2}/2\\pi$, tanh $|k|^{d-1}\\sinh^2(\\pi k/2)/\\pi^2$,
    erf $|k|^{d+1}e^{k^2/2}/4$, softplus $|k|^{d+1}\\sinh^2(\\pi k)/\\pi^2$,
    $z/(1+z^2)$: $|k|^{d-1}e^{2|k|}/\\pi^2$, sinc $|k|^{d-1}/\\pi^2$ on $|k|<1$,
    sinc² $|k|^{d-1}/(\\pi^2(1-|k|/2)^2)$ on $|k|<2$, GELU
    $|k|^{d+3}e^{k^2}/(1+k^2)^2$. Large $|k|$ overflows to $\\infty$ in float64 (e.g.
    $e^{k^2}$ past $|k| \\approx 26$).
    """
    _check_dim(dim)
    k = _check_k(k)
    power = dim - 1 if radon_power is None else radon_power
    magnitude = fourier_magnitude(activation, k, method=method)
    numerator = jnp.abs(k) ** power if power else jnp.ones_like(k)
    return numerator / magnitude**2
