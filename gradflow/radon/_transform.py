"""The Radon transform of a function of one or two variables, and the spectral seminorm
computed through it (Fourier slice theorem: $\\widehat{f}(k\\xi) = \\mathcal F_t[Rf(\\xi,
\\cdot)](k)$)."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._activation import AbstractActivation, get_activation
from . import _quadrature as quadrature
from ._spectrum import _check_dim, Method, spectral_penalty


Function = Callable[[Float[Array, "n d"]], Float[Array, " n"]]


def sphere_area(dim: int) -> float:
    """$|S^{d-1}| = 2\\pi^{d/2}/\\Gamma(d/2)$ (2 for $d = 1$: the two points $\\pm 1$)."""
    _check_dim(dim)
    return 2 * math.pi ** (dim / 2) / math.gamma(dim / 2)


def seminorm_constant(dim: int) -> float:
    """$C_d$ in $\\|f\\|^2 = C_d\\,E_\\xi \\int_{\\mathbb R} |\\mathcal F_t[Rf](\\xi, k)|^2
    |k|^{d-1} \\rho_\\varphi(k)\\,dk$, the RKHS norm of the kernel with orientations uniform
    on $S^{d-1}$ and offsets uniform on the line: $C_d = |S^{d-1}|^2 / (4 (2\\pi)^{2d-1})$.

    Derivation: that kernel has Fourier transform
    $\\hat K(\\omega) = (2\\pi)^{d-1} (2/|S^{d-1}|)\\,|\\hat\\varphi(|\\omega|)|^2/|\\omega|^{d-1}$,
    so $\\|f\\|^2 = (2\\pi)^{-d}\\int |\\hat f|^2/\\hat K = \\tfrac12 |S^{d-1}| (2\\pi)^{1-2d}
    \\int_{\\mathbb R^d} |\\hat f(\\omega)|^2 \\rho_\\varphi(|\\omega|)\\,d\\omega$;
    polar coordinates $d\\omega = \\tfrac12 |k|^{d-1} dk\\,d\\xi$ over
    $k \\in \\mathbb R$ give $C_d$.
    For $d = 1$, $C_1 = 1/2\\pi$ and ReLU's seminorm is $\\int f''^2$.
    """
    return sphere_area(dim) ** 2 / (4 * (2 * math.pi) ** (2 * dim - 1))


def _orientations(dim: int, num: int) -> Float[Array, "A d"]:
    if dim == 1:
        return jnp.array([[1.0], [-1.0]])
    # Rf(−ξ, −t) = Rf(ξ, t): half the circle carries all of |F_t Rf|².
    return jnp.asarray(quadrature.circle(num, half=True)[0])


def radon_transform(
    f: Function,
    orientations: Float[ArrayLike, "A d"],
    offsets: Float[ArrayLike, " T"],
    *,
    support_radius: float,
    num_points: int = 256,
) -> Float[Array, "A T"]:
    """$Rf(\\xi, t) = \\int_{\\xi\\cdot x = t} f$, for $d = 1$ ($Rf(\\xi, t) = f(\\xi t)$,
    $\\xi = \\pm 1$) and $d = 2$ (the line integral over $s \\in [-L, L]$ of
    $f(t\\xi + s\\xi^\\perp)$ by `num_points`-point Gauss–Legendre, $L$ = `support_radius`).

    `f` maps points of shape `(n, d)` to values of shape `(n,)` (a `TwoLayerNet` does).
    It should vanish (to the accuracy wanted) outside the disc of radius $L$. The rule is
    exponentially accurate for smooth $f$, and converges like $1/n$ when $f$ jumps
    (an indicator).
    """
    orientations = jnp.asarray(orientations)
    offsets = jnp.asarray(offsets)
    if orientations.ndim != 2 or orientations.shape[1] not in (1, 2):
        raise ValueError(
            f"`orientations` must have shape (A, 1) or (A, 2) (d = 1 or 2), got "
            f"{orientations.shape}."
        )
    if offsets.ndim != 1:
        raise ValueError(f"`offsets` must have shape (T,), got {offsets.shape}.")
    if not support_radius > 0:
        raise ValueError(f"`support_radius` must be positive, got {support_radius!r}.")
    dim = orientations.shape[1]
    dtype = jnp.result_type(orientations.dtype, offsets.dtype, float)
    orientations = orientations.astype(dtype)
    offsets = offsets.astype(dtype)
    if dim == 1:
        points = orientations[:, None, :] * offsets[None, :, None]
        return f(points.reshape(-1, 1)).reshape(orientations.shape[0], offsets.shape[0])
    s, w = quadrature.legendre(num_points, -support_radius, support_radius)
    s = jnp.asarray(s, dtype)
    w = jnp.asarray(w, dtype) * (2 * support_radius)
    normals = jnp.stack([-orientations[:, 1], orientations[:, 0]], axis=1)

    def one(xi, normal):
        points = (
            offsets[:, None, None] * xi[None, None, :] + s[None, :, None] * normal[None, None, :]
        )  # (T, S, 2)
        values = f(points.reshape(-1, 2)).reshape(offsets.shape[0], s.shape[0])
        return values @ w

    return jax.lax.map(lambda pair: one(*pair), (orientations, normals))


def spectral_seminorm(
    f: Function,
    activation: "str | AbstractActivation",
    *,
    dim: int,
    support_radius: float,
    num_offsets: int = 512,
    num_orientations: int = 64,
    num_points: int = 256,
    max_frequency: float | None = None,
    stop_band_tol: float = 1e-12,
    method: Method = "auto",
) -> Float[Array, ""]:
    """The spectral seminorm $\\|f\\|_\\varphi^2 = C_d\\,E_\\xi \\int |\\mathcal F_t[Rf](\\xi, k)|^2
    |k|^{d-1}\\rho_\\varphi(k)\\,dk$ (`seminorm_constant`), through the Radon transform of `f`
    and an FFT along the offset, for inputs of dimension 1 or 2.

    For the kernel of orientations uniform on the sphere and offsets uniform on the line
    it is that kernel's RKHS norm (so it equals $y^\\top K^{-1}y$ for the minimum-norm
    interpolant). For ReLU in 1-D it is $\\int f''^2$.

    **Arguments:**

    - `f`: points `(n, d)` → values `(n,)`, negligible outside the disc of radius
      `support_radius` $L$.
    - `num_offsets`: FFT length over $t \\in [-2L, 2L)$ (twice the support, so the
      periodic transform does not wrap), i.e. frequencies up to
      $\\pi\\,$`num_offsets`$/4L$.
    - `num_orientations`: midpoint rule on half the circle ($d = 2$).
    - `max_frequency`: integrate only $|k| \\le$ this. Needed where $\\rho_\\varphi$ grows so
      fast that rounding noise of $|\\mathcal F_t Rf|$ ($\\approx 10^{-16}$ of its maximum)
      times $\\rho_\\varphi$ is not negligible (Gaussian: $e^{k^2}$, so $|k| \\lesssim 6$).
    - `stop_band_tol`: where $\\rho_\\varphi = \\infty$ (sinc's stop band) the result is
      $\\infty$ if the energy there exceeds this fraction of the total, and the band is
      skipped otherwise (rounding noise is never exactly zero).
    """
    _check_dim(dim)
    if dim > 2:
        raise ValueError(
            f"`dim`={dim}: the Radon route is implemented for d = 1 and 2. For higher "
            "dimension use the kernel route, `minimum_norm_interpolant(...).seminorm`."
        )
    activation = get_activation(activation)
    period = 4.0 * support_radius
    h = period / num_offsets
    t = -2.0 * support_radius + h * jnp.arange(num_offsets, dtype=jnp.result_type(float))
    xi = _orientations(dim, num_orientations)
    radon = radon_transform(f, xi, t, support_radius=support_radius, num_points=num_points)
    # F_t Rf(ξ, k_j) ≈ h Σ_n Rf(ξ, t_n) e^{−i k_j t_n}; the phase of the shifted grid does
    # not change the modulus.
    energy = jnp.abs(h * jnp.fft.fft(radon, axis=-1)) ** 2
    k = 2 * jnp.pi * jnp.asarray(np.fft.fftfreq(num_offsets, d=h), radon.dtype)
    dk = 2 * jnp.pi / period
    rho = spectral_penalty(activation, k, dim=dim, method=method)
    weight = jnp.abs(k) ** (dim - 1) * rho if dim > 1 else rho
    if max_frequency is not None:
        inside = jnp.abs(k) <= max_frequency
        weight = jnp.where(inside, weight, 0.0)
        energy = jnp.where(inside[None, :], energy, 0.0)
    stop = jnp.isinf(weight)
    stop_energy = jnp.sum(jnp.where(stop[None, :], energy, 0.0))
    finite = jnp.sum(jnp.where(stop[None, :], 0.0, energy * weight[None, :])) * dk
    value = seminorm_constant(dim) * finite / xi.shape[0]
    return jnp.where(stop_energy > stop_band_tol * jnp.sum(energy), jnp.inf, value)
