from collections.abc import Callable
from typing import ClassVar, TYPE_CHECKING

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree


if TYPE_CHECKING:
    from typing import ClassVar as AbstractClassVar
else:
    from equinox import AbstractClassVar


class RosenbrockTableau(eqx.Module):
    """Coefficients of an $s$-stage Rosenbrock method in the form of Hairer & Wanner
    (*Solving ODEs II*, §IV.7, eq. (7.25) and the code RODAS), which needs no matrix
    product with the Jacobian: with $W = I/(h\\gamma) - J$, $J = \\partial_y f(t_0, y_0)$,

    $$W k_i = f\\Big(t_0 + c_i h,\\; y_0 + \\sum_{j<i} a_{ij} k_j\\Big)
    + \\sum_{j<i} \\frac{C_{ij}}{h} k_j + d_i\\, h\\, \\partial_t f(t_0, y_0),$$

    $y_1 = y_0 + \\sum_i b_i k_i$, and the embedded solution
    $\\hat y_1 = y_0 + \\sum_i \\hat b_i k_i$. Dense output on $\\theta \\in [0, 1]$ is

    $$y(\\theta) = (1 - \\theta)\\, y_0 + \\theta\\big(y_1 + (1 - \\theta)
    \\textstyle\\sum_l \\theta^l\\, q_l\\big), \\qquad q_l = \\sum_i H_{li} k_i.$$

    `c` holds the nodes of stages 2…s only and `fsal` is always false, as in
    `diffrax.ButcherTableau`, so code that counts stages as `len(c) + 1` counts right.
    Like Diffrax's tableaus it is a class variable of its solver, never a traced value:
    the coefficients enter the step as Python floats.
    """

    order: int = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    a: np.ndarray  # (s, s), strictly lower triangular
    C: np.ndarray  # (s, s), strictly lower triangular
    b: np.ndarray  # (s,)
    b_embedded: np.ndarray  # (s,)
    c: np.ndarray  # (s - 1,): nodes of stages 2..s
    d: np.ndarray  # (s,)
    dense: np.ndarray  # (L, s)
    fsal: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        s = len(self.b)
        shapes = dict(
            a=(s, s), C=(s, s), b_embedded=(s,), c=(s - 1,), d=(s,), dense=(len(self.dense), s)
        )
        for name, shape in shapes.items():
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(
                    f"`{name}` must have shape {shape}, got {np.shape(getattr(self, name))}."
                )
        if np.any(np.triu(self.a) != 0) or np.any(np.triu(self.C) != 0):
            raise ValueError("`a` and `C` must be strictly lower triangular.")
        if self.fsal:
            raise ValueError("Rosenbrock methods here are never FSAL.")

    @property
    def num_stages(self) -> int:
        return len(self.b)


class RosenbrockInterpolation(dfx.AbstractLocalInterpolation):
    """The dense output of a Rosenbrock step (see `RosenbrockTableau`)."""

    t0: Array
    t1: Array
    y0: PyTree[Array]
    y1: PyTree[Array]
    q: PyTree[Array]  # each leaf with a leading axis of length L

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jax.tree_util.tree_map(lambda a, b: a - b, self.evaluate(t1), self.evaluate(t0))
        # (t - t0)/(t1 - t0), with a zero-length step read as θ = 0 (as diffrax does).
        same = self.t0 == self.t1
        theta = jnp.where(same, 0, t0 - self.t0) / jnp.where(same, 1, self.t1 - self.t0)

        def leaf(y0, y1, q):
            th = theta.astype(y0.dtype)
            poly = q[-1]
            for ql in q[-2::-1]:
                poly = ql + th * poly
            return (1 - th) * y0 + th * (y1 + (1 - th) * poly)

        return jax.tree_util.tree_map(leaf, self.y0, self.y1, self.q)


class AbstractRosenbrock(dfx.AbstractAdaptiveSolver):
    """A linearly implicit (Rosenbrock) method with the exact Jacobian.

    Each step evaluates the Jacobian of the vector field at the start of the step
    with forward-mode autodiff (`jax.linearize`, one pass for $f(y_0)$ and all $P$
    columns), factorises $I/(h\\gamma) - J$ once by LU, and solves one linear system
    per stage: no Newton iteration, so nothing can fail to converge, and the cost of a
    step is fixed. The state may be any PyTree of arrays; it is flattened into one
    vector of size $P$ inside the step, so the LU is dense $P \\times P$ — meant for the
    small parameter vectors of gradflow, not for large systems.

    With the exact Jacobian the order conditions of Rosenbrock methods hold exactly;
    an approximate Jacobian (a W-method) would lose order.

    Counting cost per step, rejected steps included: `tableau.num_stages` evaluations
    of the vector field (the first is the primal of the Jacobian computation), one
    Jacobian (a batch of $P$ Jacobian–vector products) and one LU factorisation.
    """

    tableau: AbstractClassVar[RosenbrockTableau]

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., RosenbrockInterpolation]] = RosenbrockInterpolation

    def order(self, terms):
        del terms
        return self.tableau.order

    def init(self, terms, t0, t1, y0, args):
        del terms, t0, t1, y0, args
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump

        def dense_solver(jvp, y0_flat):
            identity = jnp.eye(y0_flat.size, dtype=y0_flat.dtype)
            jacobian = jax.vmap(jvp, out_axes=1)(identity)
            # One inverse per step, so that each of the s stages costs a matrix-vector
            # product. Batched under `vmap` on CPU, s separate triangular solves cost
            # about as much as everything else in the step together; the inverse is as
            # accurate here (the forward error of both is bounded by cond(W)·ε·‖x‖) and
            # twice as fast.
            inverse = inverse_matrix(identity / self.tableau.gamma - jacobian)
            return lambda state, rhs: (inverse @ rhs, state), None

        y1, error, dense_info, _ = rosenbrock_step(
            self.tableau, terms, t0, t1, y0, args, dense_solver
        )
        return y1, error, dense_info, None, dfx.RESULTS.successful


def rosenbrock_step(tab: RosenbrockTableau, terms, t0, t1, y0, args, linear_solver):
    """One step of the Rosenbrock method `tab` (see `RosenbrockTableau`), whatever solves
    its linear systems: shared by the dense `AbstractRosenbrock` and the matrix-free
    `Krylov`.

    `linear_solver(jvp, y0_flat)` receives the Jacobian–vector product
    $v \\mapsto \\partial_y F\\, v$ of $F = h f$ at the start of the step (from one
    `jax.linearize`) and returns `(solve, state)`, with `solve(state, rhs) -> (k, state)`
    solving $(I/\\gamma - \\partial_y F)\\, k = $ `rhs`; `state` is threaded through the
    stages in order (a Krylov basis that grows, say) and returned last.

    **Returns:** `(y1, error, dense_info, state)`.
    """
    s = tab.num_stages
    y0_flat, unravel = ravel_pytree(y0)
    dtype = y0_flat.dtype
    control = terms.contr(t0, t1)
    h = t1 - t0
    nodes = (0.0,) + tuple(float(ci) for ci in tab.c)

    # Work with F(t, y) = h·f(t, y) (Diffrax's `vf_prod`), which also carries the
    # direction of integration. Multiplying the stage equation by h gives
    #   (I/γ − ∂_y F) k_i = F(U_i) + Σ_j C_ij k_j + d_i·h·∂_t F.
    def increment(t, y_flat):
        out = terms.vf_prod(t, unravel(y_flat), args, control)
        return ravel_pytree(out)[0].astype(dtype)

    F0, jvp = jax.linearize(lambda z: increment(t0, z), y0_flat)
    solve, state = linear_solver(jvp, y0_flat)
    if np.any(tab.d != 0):
        # Symbolically zero for an autonomous field: then XLA computes nothing here.
        _, time_derivative = jax.jvp(lambda t: increment(t, y0_flat), (t0,), (h,))
    else:
        time_derivative = None

    ks = []
    for i in range(s):
        if i == 0:
            rhs = F0
        else:
            stage = y0_flat
            for j in range(i):
                if tab.a[i, j] != 0:
                    stage = stage + float(tab.a[i, j]) * ks[j]
            rhs = increment(t0 + nodes[i] * h, stage)
        for j in range(i):
            if tab.C[i, j] != 0:
                rhs = rhs + float(tab.C[i, j]) * ks[j]
        if time_derivative is not None and tab.d[i] != 0:
            rhs = rhs + float(tab.d[i]) * time_derivative
        k, state = solve(state, rhs)
        ks.append(k)

    def combine(weights):
        total = jnp.zeros_like(y0_flat)
        for w, k in zip(weights, ks):
            if w != 0:
                total = total + float(w) * k
        return total

    y1_flat = y0_flat + combine(tab.b)
    error_flat = combine(tab.b - tab.b_embedded)
    # A step that produced inf/NaN (the field overflowed, or W was singular because
    # 1/(hγ) hit an eigenvalue of J) reports an infinite error: the controller then
    # rejects it and shrinks the step, as for a failed implicit solve in Diffrax. A
    # NaN error would instead turn the next step size into NaN.
    finite = jnp.all(jnp.isfinite(y1_flat)) & jnp.all(jnp.isfinite(error_flat))
    error_flat = jnp.where(finite, error_flat, jnp.inf)
    q_flat = jnp.stack([combine(row) for row in tab.dense])
    y1 = unravel(y1_flat)
    dense_info = dict(y0=y0, y1=y1, q=jax.vmap(unravel)(q_flat))
    return y1, unravel(error_flat), dense_info, state


# Up to this size the unrolled Gauss–Jordan elimination of `inverse_matrix` is faster
# than LU: for 1000 vmapped matrices on a 2-core CPU, 0.33 vs 0.96 ms at P = 6, 1.8 vs
# 2.7 ms at P = 12, but 23 vs 11 ms at P = 24 (its P² fused updates of size 2P² each
# outgrow the O(P³) work of LU's library kernel).
GAUSS_JORDAN_MAX_SIZE = 12


def inverse_matrix(matrix: Array) -> Array:
    """The inverse of a small square matrix.

    Up to `GAUSS_JORDAN_MAX_SIZE`, by Gauss–Jordan elimination with partial pivoting,
    unrolled over the columns and with the row swaps written as rank-one updates
    instead of indexed reads and writes: under `vmap` every operation is then an
    elementwise one that XLA fuses, where a batched LU calls a library kernel per tiny
    matrix. Partial pivoting gives it the backward stability of LU with pivoting
    (Higham, *Accuracy and Stability of Numerical Algorithms*, §14.4). Larger matrices
    go through LU (`jax.scipy.linalg.lu_factor`) and a solve with the identity.
    """
    size = matrix.shape[-1]
    identity = jnp.eye(size, dtype=matrix.dtype)
    if size > GAUSS_JORDAN_MAX_SIZE:
        return _lu_inverse(matrix)
    augmented = jnp.concatenate([matrix, identity], axis=1)
    rows = np.arange(size)
    for k in range(size):
        # The pivot: the largest entry of column k on or below the diagonal.
        candidates = jnp.where(rows >= k, jnp.abs(augmented[:, k]), -1.0)
        e_pivot = (rows == jnp.argmax(candidates)).astype(matrix.dtype)
        e_k = (rows == k).astype(matrix.dtype)
        pivot_row = e_pivot @ augmented
        # Swap rows k and pivot (a no-op when they are the same row).
        augmented = augmented + jnp.outer(e_k - e_pivot, pivot_row - augmented[k])
        # Scale row k to a unit pivot and clear column k in every other row.
        unit_row = augmented[k] / augmented[k, k]
        augmented = augmented - jnp.outer(augmented[:, k] - e_k, unit_row)
    return augmented[:, size:]


# `sequential_vmap`: under `vmap` the LU runs in a loop, one matrix per LAPACK call,
# never as one batched call. jaxlib's batched CPU kernels split their batch over
# XLA:CPU's intra-op thread pool and block a pool thread until the pieces finish; with
# several host devices (`--xla_force_host_platform_device_count`) each device's program
# runs on that same pool, so two devices each inside a batched LU wait for pieces queued
# behind each other and the run deadlocks (issue 16: 256 seeds on two devices hung from
# P = 14). A single matrix is factorised inline. The loop costs nothing measurable: for
# 1000 matrices on 2 cores, 20 vs 22 ms at P = 24, 33 vs 36 ms at P = 32, 139 vs 134 ms
# at P = 64 (looped vs batched; 12 vs 6 ms at P = 14, below which Gauss-Jordan is used).
@jax.custom_batching.sequential_vmap
def _lu_inverse(matrix: Array) -> Array:
    identity = jnp.eye(matrix.shape[-1], dtype=matrix.dtype)
    return jsl.lu_solve(jsl.lu_factor(matrix), identity)
