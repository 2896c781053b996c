"""Designing an activation from the spectral penalty it should have: from a target
$\\rho(k)$, $|\\hat\\varphi(k)| = \\sqrt{|k|^{d-1}/\\rho(k)}$, a phase (zero: $\\varphi$ even
and real), and an inverse FFT.

$\\varphi$ is represented exactly as the inverse discrete Fourier transform of the samples
$\\hat\\varphi(k_j)$, $k_j = 2\\pi j/P$: the cosine series
$\\varphi(z) = \\tfrac1P\\hat\\varphi(0) + \\tfrac2P\\sum_{j\\ge1}\\hat\\varphi(k_j)\\cos(k_j z)$
on $|z| < P/2$ (`period` $P$), and 0 outside. On the FFT grid it equals
`numpy.fft.irfft` of the samples (scaled), between the grid points it is their
band-limited interpolant, so it is smooth and autodiff gives its derivatives. It
approximates the $\\varphi$ whose transform is $|\\hat\\varphi|$ as long as that $\\varphi$ has
decayed by $|z| = P/2$ (the copies of the periodic sum then do not overlap): a $|\\hat\\varphi|$
that is smooth in $k$ gives a $\\varphi$ that decays fast. `design_activation` checks it.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._activation import AbstractActivation


# Cosine terms whose weight is below this fraction of the largest are dropped: their
# sum changes φ by less than this relative to max |φ̂| / P.
_NEGLIGIBLE = 1e-13
# φ counts as decayed at the edge of the period if |φ| there is below this fraction of
# max |φ| (larger: the periodic copies overlap and the transform is not the target's).
_EDGE_TOLERANCE = 1e-10


class DesignedActivation(AbstractActivation):
    """An even activation given by its cosine series (see the module docstring); made by
    `design_activation`.

    **Fields** (static, so nets using it compile once per design):

    - `frequencies` $k_j$ and `coefficients` $c_j$: $\\varphi(z) = \\sum_j c_j\\cos(k_j z)$
      for $|z| <$ `half_period`, 0 outside.
    - `name`: a label (also the name it is registered under, if any).
    """

    frequencies: tuple[float, ...] = eqx.field(static=True)
    coefficients: tuple[float, ...] = eqx.field(static=True)
    half_period: float = eqx.field(static=True)
    name: str = eqx.field(static=True, default="designed")

    def __call__(self, z: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        z = jnp.asarray(z)
        k = jnp.asarray(self.frequencies, z.dtype)
        c = jnp.asarray(self.coefficients, z.dtype)
        inside = jnp.abs(z) < self.half_period

        # One term at a time: memory of z's size (an outer product z ⊗ k would hold
        # z.size × len(k) numbers: 9 GB for a width-4000 net on 1024 points).
        def add(total, term):
            frequency, coefficient = term
            return total + coefficient * jnp.cos(frequency * z), None

        values, _ = jax.lax.scan(add, jnp.zeros_like(z), (k, c))
        return jnp.where(inside, values, 0.0)


def design_activation(
    target: Callable[[np.ndarray], np.ndarray],
    *,
    dim: int = 1,
    period: float = 400.0,
    max_frequency: float = 20.0,
    name: str = "designed",
) -> DesignedActivation:
    """The even real activation whose spectral penalty factor is `target`:
    $|\\hat\\varphi(k)| = \\sqrt{|k|^{d-1}/\\rho(k)}$ with `dim` $= d$ (the convention of
    `gradflow.radon.spectral_penalty`), $\\hat\\varphi$ real and even, by an inverse FFT.

    **Arguments:**

    - `target`: $k \\mapsto \\rho(k)$ on a NumPy array of $k \\ge 0$; `numpy.inf` where
      frequencies must be absent (a stop band). It must be finite somewhere.
    - `period` $P$: the FFT's period; the frequency spacing is $2\\pi/P$. $\\varphi$ must
      have decayed (below 1e-10 of its peak) by $|z| = P/2$, else `ValueError`: a
      $\\rho$ with sharp features in $k$ needs a longer period.
    - `max_frequency`: $\\rho$ is sampled on $[0,$ `max_frequency`$]$; $|\\hat\\varphi|$ must be
      negligible beyond (else `ValueError`).

    **Returns:** a `DesignedActivation`. Register it with
    `gradflow.register_activation(name, lambda: phi)` to use it by name; its
    $\\rho_\\varphi$ then goes through the numerical route of `spectral_penalty` (no closed
    form is registered), which is how a design is checked against its target.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"`dim` must be a positive integer, got {dim!r}.")
    for label, value in (("period", period), ("max_frequency", max_frequency)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"`{label}` must be a positive finite number, got {value!r}.")
    spacing = 2 * math.pi / period
    k = np.arange(int(max_frequency / spacing) + 1) * spacing
    rho = np.asarray(target(k), dtype=np.float64)
    if rho.shape != k.shape:
        raise ValueError(f"`target(k)` must return an array of the shape of `k`, got {rho.shape}.")
    if np.any(np.isnan(rho)) or np.any(rho < 0):
        raise ValueError("`target(k)` must be ≥ 0 (or inf) at every k ≥ 0; it gave NaN or < 0.")
    with np.errstate(divide="ignore"):
        magnitude = np.sqrt(np.where(np.isinf(rho), 0.0, k ** (dim - 1) / rho))
    if dim > 1:
        # |k|^{d-1} vanishes at 0; the limit of |φ̂| there comes from the next sample.
        magnitude[0] = magnitude[1]
    if not np.all(np.isfinite(magnitude)) or not np.any(magnitude > 0):
        raise ValueError(
            "`target` must be positive and finite somewhere (ρ = 0 would need |φ̂| = ∞, "
            "ρ = ∞ everywhere leaves φ = 0)."
        )
    peak = np.max(magnitude)
    if magnitude[-1] > 1e-8 * peak:
        raise ValueError(
            f"|φ̂| is still {magnitude[-1] / peak:.1e} of its peak at `max_frequency`="
            f"{max_frequency}: raise `max_frequency` (or make ρ grow faster beyond it)."
        )
    weights = np.where(k == 0, 1.0, 2.0) * magnitude / period
    keep = weights > _NEGLIGIBLE * np.max(weights)
    # φ on the FFT grid by an inverse real FFT; the cosine series is its interpolant.
    n = 2 * int(2 ** math.ceil(math.log2(max(len(k), 2) + 1)))
    samples = np.zeros(n // 2 + 1)
    samples[: min(len(k), n // 2 + 1)] = magnitude[: n // 2 + 1]
    grid_values = np.fft.irfft(samples, n) * n / period
    edge = np.max(np.abs(grid_values[n // 2 - n // 16 : n // 2 + n // 16]))
    if edge > _EDGE_TOLERANCE * np.max(np.abs(grid_values)):
        raise ValueError(
            f"φ has not decayed at |z| = period/2 = {period / 2:g} ({edge:.1e} relative): "
            "ρ varies too sharply in k for this period. Raise `period`."
        )
    return DesignedActivation(
        frequencies=tuple(float(v) for v in k[keep]),
        coefficients=tuple(float(v) for v in weights[keep]),
        half_period=period / 2,
        name=name,
    )


def design_on_grid(
    target: Callable[[np.ndarray], np.ndarray],
    *,
    dim: int = 1,
    period: float = 400.0,
    max_frequency: float = 20.0,
    points: int = 2**14,
) -> tuple[np.ndarray, np.ndarray]:
    """The designed $\\varphi$ on `points` FFT grid points of $[-P/2, P/2)$ by
    `numpy.fft.irfft` alone (the construction the cosine series interpolates):
    `(z, phi)`."""
    spacing = 2 * math.pi / period
    k = np.arange(points // 2 + 1) * spacing
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        rho = np.asarray(target(k), dtype=np.float64)
        magnitude = np.sqrt(np.where(np.isinf(rho), 0.0, k ** (dim - 1) / rho))
    magnitude = np.where((k <= max_frequency) & np.isfinite(magnitude), magnitude, 0.0)
    if dim > 1:
        magnitude[0] = magnitude[1]
    phi = np.fft.fftshift(np.fft.irfft(magnitude, points)) * points / period
    z = (np.arange(points) - points // 2) * period / points
    return z, phi
