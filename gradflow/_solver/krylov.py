from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .base import AbstractRosenbrock, rosenbrock_step, RosenbrockInterpolation, RosenbrockTableau
from .rosenbrock import Rodas5P


class Krylov(dfx.AbstractAdaptiveSolver):
    """A Rosenbrock method whose linear systems are solved matrix-free, by Krylov
    iterations on Jacobian–vector products: the implicit late phase for wide nets.

    `method`'s steps (its tableau, error estimate and dense output: the same method,
    order and L-stability) with each stage's system $(I/\\gamma - h J)\\,k = r$ solved
    by a generalised conjugate residual (GCR) iteration whose search directions are
    **shared by the stages of a step**. The $P \\times P$ Jacobian is never formed:
    $J v$ is one forward-mode pass through the gradient (`jax.linearize` of the vector
    field, once per step), so the memory is $O(P \\cdot$ `max_directions`$)$ and the cost
    of a step is (directions + stages) passes instead of a $P$-column Jacobian and an
    $O(P^3)$ factorisation.

    Why it needs few directions: once a net has fitted its $n$ data points, the
    Hessian of the squared loss is the Gauss–Newton matrix $J_f^\\top J_f$ (rank at most
    $n$ times the outputs: the stiff part) plus residual terms that vanish with the
    residual. On W3 (the width-1000 rational student, $P = 3000$, $n = 6$,
    `benchmarks/w3.py`) at t = 400, H has 6 eigenvalues from 4e-4 to 6.8, about 2000 in
    the narrow bands $\\pm[3 \\cdot 10^{-6}, 1.2 \\cdot 10^{-5}]$ (the neurons still near
    zero) and the rest at 0, so $I/\\gamma + hH$ has a handful of large eigenvalues next
    to tight clusters, and a Krylov space of a few dozen dimensions solves it to
    rounding. Each direction found for one stage serves the later ones (GCR keeps the
    pairs $p_i$, $W p_i$ with the $W p_i$ orthonormal, and projects every new right-hand
    side on them first): there a whole 8-stage step takes 11 directions at h = 0.1, 17
    at h = 10, 29 at h = 1e3 and 44 at h = 1e4, the first stage 5 to 12 of them.

    Measured on W3 (2-core CPU, `benchmarks/RESULTS.md`): the default
    `TwoPhase(implicit=Krylov(), switch_tol=1e-3)` reaches t = 1e8 (stationary,
    $\\|\\nabla L\\| \\le 10^{-10}\\|\\theta\\|$, at t ≈ 5e4) in 1.3-1.7x its steps to
    t = 400, within 4e-10 of `solve_ivp` DOP853 at rtol 1e-12, where Tsit5 needs 24-27
    thousand steps to t = 1e4 alone. A step costs 7.6 explicit Tsit5 steps for one seed
    (22.6 vs 3.0 ms), 15-19 per loop iteration of two vmapped seeds; a dense Rodas5P
    step, 7-16 s.
    Against dense Rodas5P on W1's problem at growing width
    (`benchmarks/krylov_crossover.py`) it is slower up to P = 24 and 8.9x faster at
    P = 96.

    Bounded work per step: at most `max_directions` products with $W$. A step whose
    systems are not solved to `tol` within them (or whose $W$ is singular or
    indefinite enough to stall GCR: the Hessian is indefinite before the fit, and
    $I/\\gamma + hH$ loses definiteness once $h\\gamma\\lambda_{\\min}(H) < -1$) reports
    an infinite error, so the controller rejects it and retries with a smaller step, for
    which $W$ is closer to $I/\\gamma$ and the iteration converges faster. Under `vmap`
    the loop runs until the slowest seed of the batch has converged.

    ```python
    sol = gf.gradient_flow(net, x, y, t1=1e8, solver=gf.TwoPhase(implicit=gf.Krylov()))
    ```

    **Arguments:**

    - `method`: a Rosenbrock method with the exact Jacobian, `gradflow.Rodas5P()` (the
      default) or `gradflow.Rodas4()`.
    - `max_directions`: the most GCR directions (products with $W$) per step, shared by
      its stages; also the size of the stored basis, `max_directions` × $P$. Every
      direction stored costs in each product with the basis: on W3 (2 seeds to the
      limit) 24, 32 and 48 take the very same steps (no step needed more than 24) in
      13.4, 15.8 and 19.5 s. Problems with more data points need more (the stiff part
      has rank up to $n$); a budget too small shows as rejected steps.
    - `tol`: each stage's system $W k = r$ is solved to $\\|r - W k\\| \\le$ `tol`
      $\\cdot \\|k\\| / \\gamma$, which bounds the error of $k$ by `tol` $\\cdot \\|k\\|$
      where the Hessian is positive semi-definite ($\\|W^{-1}\\| \\le \\gamma$). The
      default 1e-12 keeps the linear-solve error two orders below the per-step error of
      the flow's default `rtol=1e-10`.

    Counts: `gradient_flow`'s `num_evaluations` counts the vector-field evaluations of
    the stages, as for `Rodas5P`, not the Jacobian–vector products; the solver's state
    holds the number of directions the last step used.
    """

    method: AbstractRosenbrock = Rodas5P()
    max_directions: int = eqx.field(static=True, default=32)
    tol: float = eqx.field(static=True, default=1e-12)

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar = RosenbrockInterpolation

    def __check_init__(self):
        if not isinstance(self.method, AbstractRosenbrock):
            raise TypeError(
                "`Krylov(method)` takes a Rosenbrock method of gradflow, such as "
                f"`gradflow.Rodas5P()`; got {type(self.method).__name__}."
            )
        if (
            isinstance(self.max_directions, bool)
            or not isinstance(self.max_directions, int)
            or self.max_directions < 1
        ):
            raise ValueError(
                f"`max_directions` must be a positive integer, got {self.max_directions!r}."
            )
        if not 0 < self.tol < 1:
            raise ValueError(f"`tol` must lie in (0, 1), got {self.tol!r}.")

    @property
    def tableau(self) -> RosenbrockTableau:
        return self.method.tableau

    def order(self, terms):
        del terms
        return self.tableau.order

    def init(self, terms, t0, t1, y0, args) -> Int[Array, ""]:
        del terms, t0, t1, y0, args
        return jnp.zeros((), jnp.int32)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        gamma = self.tableau.gamma

        def krylov_solver(jvp, y0_flat):
            def apply_w(v):
                return v / gamma - jvp(v)

            size = (self.max_directions, y0_flat.size)
            basis = _Basis(
                p=jnp.zeros(size, y0_flat.dtype),
                q=jnp.zeros(size, y0_flat.dtype),
                count=jnp.zeros((), jnp.int32),
                converged=jnp.asarray(True),
            )
            return lambda b, rhs: _gcr(apply_w, b, rhs, self.tol, gamma), basis

        y1, error, dense_info, basis = rosenbrock_step(
            self.tableau, terms, t0, t1, y0, args, krylov_solver
        )
        error = jax.tree_util.tree_map(lambda e: jnp.where(basis.converged, e, jnp.inf), error)
        return y1, error, dense_info, basis.count, dfx.RESULTS.successful


class _Basis(eqx.Module):
    """GCR's search directions `p[:count]` and their images `q = W p`, orthonormal;
    rows from `count` on are zero. `converged`: every system so far was solved."""

    p: Float[Array, "M P"]
    q: Float[Array, "M P"]
    count: Int[Array, ""]
    converged: Array


def _project(basis: _Basis, k, r):
    """The best update of `k` in the span of the directions: `k + p^T c`, `r - q^T c`
    with `c = q r`. The projection of `r` runs twice (classical Gram–Schmidt twice is
    as accurate as the modified one, with two matrix products instead of a loop over
    the directions), and `k` takes the summed coefficients once."""
    c1 = basis.q @ r
    r = r - c1 @ basis.q
    c2 = basis.q @ r
    return k + (c1 + c2) @ basis.p, r - c2 @ basis.q


def _gcr(apply_w, basis: _Basis, rhs, tol: float, gamma: float):
    """Solves $W k = $ `rhs` by GCR, starting from the directions already in `basis` and
    adding the current residual as a new direction while the residual is above
    `tol`·‖k‖/γ (or the rounding floor) and the basis has room. **Returns:**
    `(k, basis)`."""
    max_directions = basis.p.shape[0]
    eps = float(jnp.finfo(rhs.dtype).eps)
    # Projecting `rhs` on the directions leaves a residual of a few ulps of ‖rhs‖
    # whatever the basis: below that nothing more is gained (the dense LU solve is no
    # better), and a direction taken from rounding noise would be garbage.
    floor = 64 * eps * jnp.linalg.norm(rhs)
    k, r = _project(basis, jnp.zeros_like(rhs), rhs)

    def unsolved(k, r):
        # ‖δk‖ ≤ ‖W⁻¹‖‖r‖ ≤ γ‖r‖ where W's symmetric part is at least I/γ (a positive
        # semi-definite Hessian): this bounds the error of k relative to k itself. A test
        # relative to ‖rhs‖ instead would let the components of k along the flat
        # directions drown in the large stiff components of rhs.
        return jnp.linalg.norm(r) > jnp.maximum(tol * jnp.linalg.norm(k) / gamma, floor)

    def going(carry):
        k, r, b, stalled = carry
        # A NaN residual compares false: the loop ends and the solve counts as failed.
        return unsolved(k, r) & (b.count < max_directions) & ~stalled

    def extend(carry):
        k, r, b, _ = carry
        p = r / jnp.linalg.norm(r)
        w_p = apply_w(p)
        # Orthogonalise W p against the earlier W p_i, twice, and p alike.
        c1 = b.q @ w_p
        q = w_p - c1 @ b.q
        c2 = b.q @ q
        q = q - c2 @ b.q
        p = p - (c1 + c2) @ b.p
        norm = jnp.linalg.norm(q)
        # W p (numerically) in the span of the earlier W p_i: GCR has stalled (W is
        # singular or indefinite along r, or the basis spans the space). The direction
        # is not kept and the solve ends, failed unless r is already small enough.
        stalled = ~(norm > 1e-10 * jnp.linalg.norm(w_p))
        # A stalled direction enters as zero (rows from `count` on are zero anyway).
        keep = jnp.where(stalled, 0.0, 1.0 / norm)
        p, q = keep * p, keep * q
        alpha = q @ r
        # The new row by a one-hot product, not an indexed write: under `vmap` the row
        # differs per seed, and a batched scatter on CPU costs far more than this
        # (8 seeds of W3: ~10x the whole step).
        row = jnp.arange(max_directions, dtype=b.count.dtype) == b.count
        row = row.astype(p.dtype)[:, None]
        grown = eqx.tree_at(
            lambda b: (b.p, b.q, b.count),
            b,
            (
                b.p + row * p[None, :],
                b.q + row * q[None, :],
                b.count + (~stalled).astype(b.count.dtype),
            ),
        )
        return k + alpha * p, r - alpha * q, grown, stalled

    k, r, basis, _ = jax.lax.while_loop(going, extend, (k, r, basis, jnp.asarray(False)))
    solved = ~unsolved(k, r) & jnp.all(jnp.isfinite(k))
    return k, eqx.tree_at(lambda b: b.converged, basis, basis.converged & solved)
