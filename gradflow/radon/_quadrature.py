"""Fixed Gauss rules as NumPy arrays (built once at trace time, then constants of the
compiled program). Nodes and weights of probability measures: weights sum to 1."""

import math

import numpy as np


def legendre(n: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre for the uniform probability on $[lo, hi]$: exact for polynomials of
    degree $2n - 1$."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo), 0.5 * weights


def hermite(n: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite for $N(0, \\text{scale}^2)$: exact for polynomials of degree $2n-1$."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return scale * nodes, weights / math.sqrt(2 * math.pi)


def sphere_projection(dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A rule for $u = \\xi_1$ with $\\xi$ uniform on $S^{d-1}$, $d \\ge 3$: density
    $\\propto (1 - u^2)^{(d-3)/2}$ on $[-1, 1]$ (Gauss–Gegenbauer by Golub–Welsch: the
    eigenvalues of the Jacobi matrix of the monic recurrence
    $\\beta_k = k(k + 2a)/((2k + 2a - 1)(2k + 2a + 1))$, $a = (d - 3)/2$)."""
    if dim < 3:
        raise ValueError(f"`dim` must be at least 3 for this rule, got {dim}.")
    a = 0.5 * (dim - 3)
    k = np.arange(1, n, dtype=float)
    beta = k * (k + 2 * a) / ((2 * k + 2 * a - 1) * (2 * k + 2 * a + 1))
    jacobi = np.diag(np.sqrt(beta), 1) + np.diag(np.sqrt(beta), -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    return nodes, vectors[0] ** 2


def circle(n: int, *, half: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The trapezoidal (midpoint) rule for $\\xi$ uniform on the circle: `n` unit vectors
    at angles $2\\pi(j + \\frac12)/n$ (or $\\pi(j + \\frac12)/n$ with `half`, enough for an
    integrand even in $\\xi$). Spectrally accurate for smooth periodic integrands."""
    span = np.pi if half else 2 * np.pi
    angles = span * (np.arange(n) + 0.5) / n
    return np.stack([np.cos(angles), np.sin(angles)], axis=1), np.full(n, 1 / n)
