"""The minimum-norm interpolant of a kernel: $f = \\sum_i \\alpha_i K(\\cdot, x_i)$ with
$K\\alpha = y$, whose squared RKHS norm is $y^\\top K^{-1} y$."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float

from ._kernel import Kernel


# Default largest condition number accepted: the coefficients then carry a relative error
# up to cond·ε ≈ 1e-4 in float64 (the interpolation residual stays at rounding level,
# Cholesky being backward stable, but α and yᵀK⁻¹y lose that many digits).
MAX_CONDITION = 1e12
# Power and inverse-power iterations for the condition estimate.
_ITERATIONS = 40


class MinimumNormInterpolant(eqx.Module):
    """The result of `minimum_norm_interpolant`; call it on points to evaluate $f$.

    **Fields:**

    - `kernel`, `x`: the kernel and the data points $x_i$, shape `(n, d)`.
    - `coefficients`: $\\alpha = (K + \\lambda I)^{-1} y$.
    - `seminorm`: $y^\\top\\alpha$, the squared RKHS norm of $f$ (for $\\lambda = 0$):
      its spectral seminorm, see `gradflow.radon.spectral_seminorm`.
    - `condition_number`: an estimate of $\\kappa(K + \\lambda I)$ from 40 power and
      inverse-power iterations (Rayleigh quotients): a lower bound, within a few percent
      of `numpy.linalg.cond` on the tests' matrices.
    - `residual`: $\\max_i |f(x_i) - y_i| / \\max_i |y_i|$.
    """

    kernel: Kernel
    x: Float[Array, "n d"]
    coefficients: Float[Array, " n"]
    seminorm: Float[Array, ""]
    condition_number: Float[Array, ""]
    residual: Float[Array, ""]

    def __call__(self, points: Float[ArrayLike, "p d"]) -> Float[Array, " p"]:
        return self.kernel.gram(points, self.x) @ self.coefficients


def _condition_estimate(matrix, solve, key_vector):
    def power(v, apply):
        def step(v, _):
            w = apply(v)
            return w / jnp.linalg.norm(w), None

        v, _ = jax.lax.scan(step, v / jnp.linalg.norm(v), None, length=_ITERATIONS)
        return v @ apply(v)

    largest = power(key_vector, lambda v: matrix @ v)
    inverse_largest = power(key_vector, solve)
    return largest * inverse_largest


def minimum_norm_interpolant(
    kernel: Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n"],
    *,
    ridge: float = 0.0,
    max_condition: float = MAX_CONDITION,
    throw: bool = True,
) -> MinimumNormInterpolant:
    """The interpolant of $(x_i, y_i)$ of least RKHS norm for `kernel` (a Cholesky solve
    with Lineax), with its norm $y^\\top K^{-1}y$ and a condition estimate.

    **Arguments:**

    - `ridge`: $\\lambda \\ge 0$ added to the diagonal (kernel ridge regression; 0 interpolates).
    - `max_condition`: with `throw=True`, a condition estimate above it, or a
      factorisation that fails (a singular Gram matrix: repeated points, or more points
      than the kernel's feature space has dimensions), raises an error (inside `jit`
      too, via `equinox.error_if`) naming the fix. With `throw=False` the result reports
      the estimate and the caller decides.
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(f"`kernel` must be a `gradflow.radon.Kernel`, got {type(kernel).__name__}.")
    x = kernel._check_points("x", x)
    y = jnp.asarray(y, x.dtype)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"`y` must have shape (n,) = ({x.shape[0]},) to match `x`, got {y.shape}. "
            "Vector targets: solve one column at a time."
        )
    if isinstance(ridge, bool) or not (isinstance(ridge, int | float) and ridge >= 0):
        raise ValueError(f"`ridge` must be a number >= 0, got {ridge!r}.")
    if not max_condition > 1:
        raise ValueError(f"`max_condition` must exceed 1, got {max_condition!r}.")
    return _solve(kernel, x, y, ridge, max_condition, throw)


@eqx.filter_jit
def _solve(kernel, x, y, ridge, max_condition, throw):
    gram = kernel.gram(x)
    matrix = gram + ridge * jnp.eye(x.shape[0], dtype=x.dtype)
    operator = lx.MatrixLinearOperator(matrix, lx.positive_semidefinite_tag)
    solver = lx.Cholesky()
    state = solver.init(operator, {})

    def solve(v):
        return lx.linear_solve(operator, v, solver, state=state, throw=False).value

    alpha = solve(y)
    start = jnp.cos(jnp.arange(1, x.shape[0] + 1, dtype=x.dtype))  # fixed, generic vector
    condition = _condition_estimate(matrix, solve, start)
    condition = jnp.where(jnp.isfinite(condition) & (condition > 0), condition, jnp.inf)
    scale = jnp.maximum(jnp.max(jnp.abs(y)), jnp.finfo(x.dtype).tiny)
    residual = jnp.max(jnp.abs(gram @ alpha - y)) / scale
    if throw:
        bad = ~jnp.all(jnp.isfinite(alpha)) | (condition > max_condition)
        alpha = eqx.error_if(
            alpha,
            bad,
            "The Gram matrix is singular or too ill-conditioned to interpolate (condition "
            "estimate above `max_condition`). Remove repeated or near-repeated points, pass "
            "`ridge=` > 0 to regularise, or `throw=False` to get the result and its "
            "`condition_number` anyway.",
        )
    return MinimumNormInterpolant(kernel, x, alpha, y @ alpha, condition, residual)
