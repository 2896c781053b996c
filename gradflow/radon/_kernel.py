"""Penalty kernels
$K_\\varphi(x, x') = E[\\varphi(\\xi\\cdot x - \\gamma)\\varphi(\\xi\\cdot x' - \\gamma)]$
and their NTK variant, by closed forms where known and fixed Gauss rules otherwise."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr
from jaxtyping import Array, ArrayLike, Float

from .._activation import (
    AbstractActivation,
    Erf,
    Gaussian,
    get_activation,
    Identity,
    LeakyReLU,
    ReLU,
)
from . import _quadrature as quadrature
from ._density import (
    AbstractDensity,
    GaussianWeights,
    RadonDensity,
    UniformOffsets,
)
from ._spectrum import spectrum_of


# --------------------------------------------------------------------------------------
# Gaussian weights: E[φ(u)φ(v)] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]).
# --------------------------------------------------------------------------------------


def _angle_terms(s11, s22, s12):
    norm = jnp.sqrt(s11 * s22)
    cosine = jnp.clip(s12 / jnp.where(norm > 0, norm, 1), -1, 1)
    theta = jnp.arccos(cosine)
    return norm, theta, cosine


def _relu_gaussian(s11, s22, s12):
    # Cho & Saul's arc-cosine kernel of order 1: σ₁σ₂ (sin θ + (π − θ) cos θ) / 2π.
    norm, theta, cosine = _angle_terms(s11, s22, s12)
    return norm * (jnp.sin(theta) + (jnp.pi - theta) * cosine) / (2 * jnp.pi)


def _step_gaussian(s11, s22, s12):
    # Arc-cosine kernel of order 0: P(u > 0, v > 0) = (π − θ) / 2π.
    _, theta, _ = _angle_terms(s11, s22, s12)
    return (jnp.pi - theta) / (2 * jnp.pi)


# Each entry: (K_φ, K_φ′) as functions of (activation, s11, s22, s12).
_GAUSSIAN_CLOSED_FORMS: dict[type, tuple[Callable, Callable]] = {
    ReLU: (
        lambda act, s11, s22, s12: _relu_gaussian(s11, s22, s12),
        lambda act, s11, s22, s12: _step_gaussian(s11, s22, s12),
    ),
    # φ = αz + (1 − α) relu(z), and E[u relu(v)] = s12/2 by the symmetry (u, v) → −(u, v).
    LeakyReLU: (
        lambda act, s11, s22, s12: (
            act.negative_slope * s12 + (1 - act.negative_slope) ** 2 * _relu_gaussian(s11, s22, s12)
        ),
        lambda act, s11, s22, s12: (
            act.negative_slope + (1 - act.negative_slope) ** 2 * _step_gaussian(s11, s22, s12)
        ),
    ),
    Identity: (
        lambda act, s11, s22, s12: s12,
        lambda act, s11, s22, s12: jnp.ones_like(s12),
    ),
    # Williams (1997): (2/π) arcsin(2 s12 / √((1 + 2 s11)(1 + 2 s22))); φ′ = (2/√π) e^{−z²}
    # gives (4/π) det(I + 2Σ)^{−1/2}.
    Erf: (
        lambda act, s11, s22, s12: (
            (2 / jnp.pi) * jnp.arcsin(2 * s12 / jnp.sqrt((1 + 2 * s11) * (1 + 2 * s22)))
        ),
        lambda act, s11, s22, s12: (
            (4 / jnp.pi) / jnp.sqrt((1 + 2 * s11) * (1 + 2 * s22) - 4 * s12**2)
        ),
    ),
    # E[exp(−(u² + v²)/2)] = det(I + Σ)^{−1/2}; φ′ = −z e^{−z²/2}: E[uv e^{−(u²+v²)/2}]
    # = s12 / det(I + Σ)^{3/2}.
    Gaussian: (
        lambda act, s11, s22, s12: 1 / jnp.sqrt((1 + s11) * (1 + s22) - s12**2),
        lambda act, s11, s22, s12: s12 / ((1 + s11) * (1 + s22) - s12**2) ** 1.5,
    ),
}


def _elementwise(f):
    """`f` (a scalar function) applied to every entry of an array."""

    def apply(z):
        return jax.vmap(f)(z.reshape(-1)).reshape(z.shape)

    return apply


def _gauss_hermite_2d(phi, s11, s22, s12, n):
    """E[φ(u)φ(v)] by an n × n Gauss–Hermite product rule on u = σ₁(c z₁ + s z₂),
    v = σ₂(c z₁ − s z₂), c = √((1 + ρ)/2), s = √((1 − ρ)/2): symmetric under swapping the
    two points (the rule is symmetric in z₂), exact for polynomial φ of degree < n,
    exponentially convergent for analytic φ, but slowly once φ(σz) varies on a scale
    below the node spacing ≈ π/√(2n) (σ large: points far from the origin). Loops over
    the n² nodes so memory stays that of one Gram matrix."""
    nodes, weights = quadrature.hermite(n)
    nodes = jnp.asarray(nodes, s12.dtype)
    weights = jnp.asarray(weights, s12.dtype)
    sigma1 = jnp.sqrt(s11)
    sigma2 = jnp.sqrt(s22)
    safe = jnp.where(sigma1 * sigma2 > 0, sigma1 * sigma2, 1)
    rho = jnp.clip(s12 / safe, -1, 1)
    c = jnp.sqrt((1 + rho) / 2)
    s = jnp.sqrt((1 - rho) / 2)

    def outer(i, total):
        def inner(j, acc):
            u = sigma1 * (c * nodes[i] + s * nodes[j])
            v = sigma2 * (c * nodes[i] - s * nodes[j])
            return acc + weights[j] * phi(u) * phi(v)

        return total + weights[i] * jax.lax.fori_loop(0, n, inner, jnp.zeros_like(s12))

    return jax.lax.fori_loop(0, n, outer, jnp.zeros_like(s12))


# --------------------------------------------------------------------------------------
# Radon densities: E_ξ E_γ[φ(ξ·x − γ) φ(ξ·x' − γ)].
# --------------------------------------------------------------------------------------


def _relu_offset_integral(s, t, offsets):
    """E_γ[relu(s − γ) relu(t − γ)] in closed form for the finite offset densities."""
    m = jnp.minimum(s, t)
    if isinstance(offsets, UniformOffsets):
        radius = offsets.radius
        top = jnp.clip(m, -radius, radius)

        def antiderivative(g):
            return s * t * g - 0.5 * (s + t) * g**2 + g**3 / 3

        return (antiderivative(top) - antiderivative(-radius)) / (2 * radius)
    tau = offsets.scale
    r = m / tau
    density = jnp.exp(-0.5 * r**2) / math.sqrt(2 * math.pi)
    return (s * t + tau**2) * ndtr(r) + (s + t - m) * tau * density


def _orientation_rule(dim, n):
    if dim == 1:
        return jnp.array([[1.0], [-1.0]]), jnp.array([0.5, 0.5])
    nodes, weights = quadrature.circle(n)
    return jnp.asarray(nodes), jnp.asarray(weights)


def _offset_rule(offsets, n):
    if isinstance(offsets, UniformOffsets):
        return quadrature.legendre(n, -offsets.radius, offsets.radius)
    return quadrature.hermite(n, offsets.scale)


class Kernel(eqx.Module):
    """A penalty kernel: $K_\\varphi(x, x') = E[\\varphi(\\cdot)\\varphi(\\cdot)]$ over `density`.

    **Arguments:**

    - `activation`: a name or `AbstractActivation`.
    - `density`: `GaussianWeights(weight_std, bias_std)` (any dimension) or
      `RadonDensity(offsets)` with `UniformOffsets(radius)` or `GaussianOffsets(scale)`.
    - `dim`: the input dimension $d$.
    - `ntk`: add the derivative terms of the neural tangent kernel (Gaussian weights):
      $\\Theta(x, x') = K_\\varphi + (\\sigma_w^2 x\\cdot x' + \\sigma_b^2) K_{\\varphi'}$,
      the kernel of $f = m^{-1/2}\\sum_k a_k \\varphi(w_k\\cdot x + b_k)$ with
      $a_k \\sim N(0, 1)$ at infinite width.
    - `num_nodes`: nodes per axis of the quadrature rules (see below).

    **How each is computed** (what `tests/test_radon_kernel.py` checks, with its tolerance):

    - Gaussian weights reduce, in any $d$, to $E[\\varphi(u)\\varphi(v)]$ over a bivariate normal
      with covariance $\\sigma_w^2 x\\cdot x' + \\sigma_b^2$: closed forms for ReLU (arc-cosine),
      leaky ReLU, identity, erf (Williams) and the Gaussian; an `num_nodes`² Gauss–Hermite
      product rule otherwise (exponentially convergent for analytic $\\varphi$ but slowly
      for large $\\sigma^2 = \\sigma_w^2|x|^2 + \\sigma_b^2$: measured 1e-6 for erf at
      $\\sigma \\approx 2.1$ with the default 96, 3e-8 with 128; the tests check that route
      against Williams' form). That rule depends on each pair's correlation, so it is not
      a feature map: its Gram matrix is PSD only up to the quadrature error (with 8
      nodes an eigenvalue of −2e-3 λ_max was seen). The Radon rules are feature maps
      with positive weights: PSD for any `num_nodes`.
    - `RadonDensity(UniformOffsets())` (whole line) needs a square-integrable $\\varphi$:
      $K = E_u[A(|x - x'| u)]$ with $A$ the autocorrelation of $\\varphi$ and $u = \\xi_1$;
      $d = 1$: exact; $d = 2$: midpoint rule over half the circle; $d \\ge 3$:
      Gauss–Gegenbauer for the density $\\propto(1-u^2)^{(d-3)/2}$.
    - Finite offsets (`UniformOffsets(radius)`, `GaussianOffsets`) for $d \\in \\{1, 2\\}$:
      exact in $\\xi$ for $d = 1$, the midpoint rule on the circle for $d = 2$; the offset
      integral in closed form for ReLU, by Gauss–Legendre / Hermite otherwise (for a
      kinked $\\varphi$ that converges only algebraically, so ReLU is the one kinked
      activation supported there). $d \\ge 3$ raises: a tensor rule on the sphere is not
      affordable; use the whole line or Gaussian weights.

    Call it on two points (`kernel(x, x2)`, shapes `(d,)`), or use `kernel.gram(x1, x2)`
    for the matrix; both trace to plain array code (jit, vmap, grad in $x$ away from the
    ReLU's non-differentiable points).
    """

    activation: AbstractActivation = eqx.field(static=True)
    density: AbstractDensity
    dim: int = eqx.field(static=True)
    ntk: bool = eqx.field(static=True, default=False)
    num_nodes: int = eqx.field(static=True, default=48)

    def __init__(
        self,
        activation: "str | AbstractActivation",
        density: AbstractDensity = GaussianWeights(),
        *,
        dim: int,
        ntk: bool = False,
        num_nodes: int | None = None,
    ):
        self.activation = get_activation(activation)
        self.density = density
        self.dim = dim
        self.ntk = ntk
        if num_nodes is None:
            # The d = 2 ReLU orientation rule converges like n^-3 (g is C² in ξ): 256
            # nodes give ~1e-8 relative (tests/test_radon_kernel.py).
            closed_relu = isinstance(density, RadonDensity) and type(self.activation) is ReLU
            # Gauss–Hermite rules (Gaussian weights or offsets) need more nodes than
            # Gauss–Legendre on a window (tests/test_radon_kernel.py): for tanh with
            # offsets ~ N(0, 1.5²), 48 nodes give 8e-6, 96 give 2e-9; uniform offsets on
            # [-2, 2] are at rounding with 48.
            uniform = isinstance(density, RadonDensity) and isinstance(
                density.offsets, UniformOffsets
            )
            num_nodes = 256 if (closed_relu and dim == 2) else 48 if uniform else 96
        self.num_nodes = num_nodes

    def __check_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"`dim` must be a positive integer, got {self.dim!r}.")
        if isinstance(self.num_nodes, bool) or not isinstance(self.num_nodes, int):
            raise ValueError(f"`num_nodes` must be a positive integer, got {self.num_nodes!r}.")
        if self.num_nodes < 2:
            raise ValueError(f"`num_nodes` must be at least 2, got {self.num_nodes}.")
        if not isinstance(self.density, AbstractDensity):
            raise TypeError(
                "`density` must be `GaussianWeights(...)` or `RadonDensity(...)`, got "
                f"{type(self.density).__name__}."
            )
        if isinstance(self.density, RadonDensity):
            if self.ntk:
                raise ValueError(
                    "`ntk=True` is implemented for `density=GaussianWeights(...)` only (the "
                    "NTK of the RS parameterisation needs its own derivative terms). Drop "
                    "`ntk` or use Gaussian weights."
                )
            self._check_radon()

    def _check_radon(self):
        offsets = self.density.offsets
        name = type(self.activation).__name__
        if isinstance(offsets, UniformOffsets) and offsets.radius is None:
            spectrum = spectrum_of(self.activation)
            if spectrum is None or spectrum.autocorrelation is None:
                raise ValueError(
                    f"`density=RadonDensity(UniformOffsets())` (offsets on the whole line) "
                    f"needs a square-integrable activation with a known autocorrelation; "
                    f"{name} has none, so ∫φ(s − γ)φ(t − γ)dγ diverges. Pass a finite window, "
                    "`UniformOffsets(radius=R)` or `GaussianOffsets(scale)`, or register the "
                    "autocorrelation with `gradflow.radon.register_spectrum`."
                )
            return
        if self.dim > 2:
            raise ValueError(
                f"`dim`={self.dim}: a finite offset window is implemented for d = 1 and 2 "
                "(a tensor rule on S^{d-1} is not affordable beyond). Use "
                "`RadonDensity(UniformOffsets())` with a square-integrable activation, or "
                "`GaussianWeights()`, in higher dimension."
            )
        if not self.activation.is_smooth and type(self.activation) is not ReLU:
            raise ValueError(
                f"`activation` {name} has kinks, where the Gauss rule in the offset converges "
                "only algebraically; ReLU has a closed form and is the one kinked activation "
                "supported with finite offsets. Use `GaussianWeights()` for it."
            )

    def __call__(self, x1: Float[ArrayLike, " d"], x2: Float[ArrayLike, " d"]) -> Float[Array, ""]:
        x1 = jnp.asarray(x1)
        x2 = jnp.asarray(x2)
        if x1.shape != (self.dim,) or x2.shape != (self.dim,):
            raise ValueError(
                f"`x1` and `x2` must be single points of shape ({self.dim},), got {x1.shape} "
                f"and {x2.shape}; use `kernel.gram` for sets of points."
            )
        return _gram(self, x1[None], x2[None])[0, 0]

    def gram(
        self, x1: Float[ArrayLike, "n d"], x2: Float[ArrayLike, "p d"] | None = None
    ) -> Float[Array, "n p"]:
        """The matrix $K_{ij} = K(x^{(1)}_i, x^{(2)}_j)$ (`x2` defaults to `x1`), compiled."""
        x1 = self._check_points("x1", x1)
        x2 = x1 if x2 is None else self._check_points("x2", x2)
        return _gram_jit(self, x1, x2)

    def _check_points(self, name, x):
        x = jnp.asarray(x)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"`{name}` must have shape (n, {self.dim}) for `dim`={self.dim}, got {x.shape}."
            )
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        return x


def _gram(kernel: Kernel, x1, x2):
    if isinstance(kernel.density, GaussianWeights):
        return _gram_gaussian(kernel, x1, x2)
    offsets = kernel.density.offsets
    if isinstance(offsets, UniformOffsets) and offsets.radius is None:
        return _gram_whole_line(kernel, x1, x2)
    return _gram_finite_offsets(kernel, x1, x2)


_gram_jit = eqx.filter_jit(_gram)


def _gram_gaussian(kernel, x1, x2):
    density = kernel.density
    sw2 = density.weight_std**2
    sb2 = density.bias_std**2
    s12 = sw2 * (x1 @ x2.T) + sb2
    s11 = (sw2 * jnp.sum(x1**2, axis=1) + sb2)[:, None] * jnp.ones_like(s12)
    s22 = (sw2 * jnp.sum(x2**2, axis=1) + sb2)[None, :] * jnp.ones_like(s12)
    act = kernel.activation
    closed = _GAUSSIAN_CLOSED_FORMS.get(type(act))
    if closed is not None:
        value = closed[0](act, s11, s22, s12)
        if kernel.ntk:
            value = value + s12 * closed[1](act, s11, s22, s12)
        return value
    value = _gauss_hermite_2d(act, s11, s22, s12, kernel.num_nodes)
    if kernel.ntk:
        derivative = _elementwise(jax.grad(act))
        value = value + s12 * _gauss_hermite_2d(derivative, s11, s22, s12, kernel.num_nodes)
    return value


def _gram_whole_line(kernel, x1, x2):
    act = kernel.activation
    autocorrelation = spectrum_of(act).autocorrelation
    squared = jnp.sum(x1**2, axis=1)[:, None] + jnp.sum(x2**2, axis=1)[None, :] - 2 * (x1 @ x2.T)
    r = jnp.sqrt(jnp.maximum(squared, 0))
    if kernel.dim == 1:
        return autocorrelation(act, r)
    if kernel.dim == 2:
        # A is even, so half the circle suffices: u = cos θ at the midpoints of [0, π).
        nodes, weights = quadrature.circle(kernel.num_nodes, half=True)
        u, weights = nodes[:, 0], weights
    else:
        u, weights = quadrature.sphere_projection(kernel.dim, kernel.num_nodes)
    u = jnp.asarray(u, r.dtype)
    weights = jnp.asarray(weights, r.dtype)

    def add(j, total):
        return total + weights[j] * autocorrelation(act, r * u[j])

    return jax.lax.fori_loop(0, u.shape[0], add, jnp.zeros_like(r))


def _gram_finite_offsets(kernel, x1, x2):
    act = kernel.activation
    offsets = kernel.density.offsets
    xi, w_xi = _orientation_rule(kernel.dim, kernel.num_nodes)
    xi = xi.astype(x1.dtype)
    w_xi = w_xi.astype(x1.dtype)
    s = x1 @ xi.T  # (n, Q): ξ_q · x
    t = x2 @ xi.T
    if type(act) is ReLU:

        def add(q, total):
            g = _relu_offset_integral(s[:, q][:, None], t[:, q][None, :], offsets)
            return total + w_xi[q] * g

        init = jnp.zeros((x1.shape[0], x2.shape[0]), x1.dtype)
        return jax.lax.fori_loop(0, xi.shape[0], add, init)
    gamma, w_gamma = _offset_rule(offsets, kernel.num_nodes)
    gamma = jnp.asarray(gamma, x1.dtype)
    root = jnp.sqrt(w_xi[:, None] * jnp.asarray(w_gamma, x1.dtype)[None, :]).reshape(-1)

    def features(proj):
        values = act(proj[:, :, None] - gamma[None, None, :]).reshape(proj.shape[0], -1)
        return values * root[None, :]

    return features(s) @ features(t).T


def kernel_matrix(
    kernel: Kernel, x1: Float[ArrayLike, "n d"], x2: Float[ArrayLike, "p d"] | None = None
) -> Float[Array, "n p"]:
    """`kernel.gram(x1, x2)` as a function."""
    if not isinstance(kernel, Kernel):
        raise TypeError(f"`kernel` must be a `gradflow.radon.Kernel`, got {type(kernel).__name__}.")
    return kernel.gram(x1, x2)
