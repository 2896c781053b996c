"""The vector field of the exact flow on one activation pattern, sliding included.

For a fixed pattern the loss is smooth and the flow is $\\dot\\theta = -\\nabla L(\\theta)$ with

$$\\dot a_k = -\\sum_i e_i\\,\\sigma(z_{ki}), \\qquad
\\dot{\\tilde w}_k = -a_k \\sum_i e_i\\,s_{ki}\\,\\tilde x_i, \\qquad e_i = \\omega_i r_i / Z,$$

where $r_i = f(x_i) - y_i$ and $s_{ki} = \\sigma'(z_{ki})$ on the side of the pattern. For
a net with vector outputs, $r_i, e_i$ and $\\dot a_k$ are vectors and neuron $k$ feels the
projection $a_k \\cdot e_i$: $\\dot{\\tilde w}_k = -\\sum_i (a_k \\cdot e_i)\\,s_{ki}\\,
\\tilde x_i$; below, read $a_k e_i$ as $a_k \\cdot e_i$ and $u_{ki}$ as
$(a_k \\cdot e_i) s_{ki}$. On a
breakplane $z_{ki} = c_j$ only $s_{ki}$ is discontinuous ($\\sigma$ is continuous, so $r$ and
$\\dot a$ are not), and the Filippov convex combination $f^- + \\alpha (f^+ - f^-)$ of the two
one-sided fields is the same formula with the *effective slope*
$s_{ki} = \\sigma'(c_j^-) + \\alpha_{ki} (\\sigma'(c_j^+) - \\sigma'(c_j^-))$.

Sliding keeps every pinned pre-activation on its kink: $\\dot z_{ki} = \\tilde x_i \\cdot
\\dot{\\tilde w}_k = 0$ for each pinned $i$ of neuron $k$. Writing $u_{ki} = e_i s_{ki}$, that is
the linear system

$$\\sum_{j \\text{ pinned}} (\\tilde x_i \\cdot \\tilde x_j)\\, u_{kj}
   = -\\tilde x_i \\cdot \\sum_{j \\text{ free}} e_j s_{kj} \\tilde x_j
   \\qquad (i \\text{ pinned in } k),$$

one per neuron, of the size of its pin set: neurons decouple because $\\dot z_{ki}$ involves
only neuron $k$'s slopes. Each neuron has a fixed number of *pins* (at most
$\\dim \\tilde x$ affinely independent points lie on one breakplane), so the systems are a
batch of small masked solves with identity rows for the unused pins. The sliding is valid
while every $\\alpha_{ki} \\in [0, 1]$; one that leaves it releases its pin.
"""

from functools import partial

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .pattern import Breakplanes, is_pinned, pin_kinks


State = tuple[Float[Array, " m *k"], Float[Array, "m e"]]


class PiecewiseField(eqx.Module):
    """The data of one problem and the flow's velocity on a given pattern.

    **Fields:**

    - `inputs`: $\\tilde x_i$, shape `(n, e)`: $x_i$ with a trailing 1 for a biased net.
    - `targets`: $y_i$.
    - `sample_weights`: $\\omega_i / Z$, so that $e_i$ = `sample_weights * residual`.
    - `breakplanes`: the activation's kinks and one-sided slopes.
    """

    inputs: Float[Array, "n e"]
    targets: Float[Array, " n *k"]
    sample_weights: Float[Array, " n"]
    breakplanes: Breakplanes

    def pinned_inputs(self, pins: Int[Array, "m D"]):
        """$\\tilde x$ of each pin's point `(m, D, e)`, and which pins are in use."""
        in_use = pins >= 0
        return self.inputs[jnp.maximum(pins, 0)], in_use

    def evaluate(self, state: State, pieces: Int[Array, "m n"], pins: Int[Array, "m D"]):
        """Velocity, sliding coefficients $\\alpha$ (one per pin, 1/2 for unused pins) and the
        pre-activations $z$ at `state` on the pattern `(pieces, pins)`."""
        velocity, alpha, z, _ = self.evaluate_with_error(state, pieces, pins)
        return velocity, alpha, z

    def evaluate_with_error(self, state: State, pieces, pins):
        """`evaluate`, and the weighted residuals $e_i$ besides.

        $z$ is returned for the callers that need it (events, margins); where only the
        velocity is used (a solver's stages) XLA drops it."""
        a, W = state
        z = W @ self.inputs.T
        if self.breakplanes.activation.piecewise_linear and a.ndim == 1:
            a_dot, free_pull, error = self._linear_pieces(a, W, pieces)
        else:
            hidden = self.breakplanes.value(z, pieces)
            if a.ndim == 1:
                error = self.sample_weights * (a @ hidden - self.targets)
            else:
                error = self.sample_weights[:, None] * (hidden.T @ a - self.targets)  # (n, k)
            a_dot = -(hidden @ error)
            free_pull = self._free_pull(a, z, error, pieces)
        W_dot, alpha = self._slide(a, free_pull, error, pieces, pins)
        return (a_dot, W_dot), alpha, z, error

    def _linear_pieces(self, a, W, pieces):
        """$\\dot a$, the free pull and the residuals of a one-output net with a
        piecewise-linear σ, without forming $z$: on the pattern, $\\sigma(z_{ki}) = s_{ki}
        z_{ki} + c_{ki}$ (slope and intercept of the entry's piece; a pinned entry has $s = 0$
        and $c = \\sigma$ at its kink), so with $S = (s_{ki})$

        $$f(x_i) = \\tilde x_i \\cdot \\textstyle\\sum_k s_{ki} a_k \\tilde w_k
        + \\sum_k a_k c_{ki}, \\qquad
        \\text{pull}_k = \\textstyle\\sum_i s_{ki} e_i \\tilde x_i, \\qquad
        \\dot a_k = -\\tilde w_k \\cdot \\text{pull}_k - \\sum_i c_{ki} e_i:$$

        two products with the (m, n) matrix $S$ instead of $z = \\tilde W \\tilde x^\\top$
        and the element-wise work on it (134 → 59 µs at m·n = 10⁵, e = 2;
        `benchmarks/relu_scaling.py`). Not for k outputs: the products would be k times
        wider than those through $z$ (10× the work on the digits problem, measured)."""
        x = self.inputs
        slope, intercept = self.breakplanes.linear_pieces(pieces, W.dtype)
        output = jnp.sum(_left_times(a[:, None] * W, slope).T * x, axis=1)
        if intercept is not None:
            output = output + intercept.T @ a
        error = self.sample_weights * (output - self.targets)
        pull = _times(slope, error[:, None] * x)  # (m, e)
        a_dot = -jnp.sum(pull * W, axis=1)
        if intercept is not None:
            a_dot = a_dot - intercept @ error
        return a_dot, pull, error

    def _free_pull(self, a, z, error, pieces):
        """$\\sum_{j \\text{ free}} (a_k e_j) s_{kj} \\tilde x_j$ per neuron `(m, e)` without
        the factor $a_k$ for one output (with k outputs, $a_k \\cdot e_j$ in it), from $z$."""
        pinned = is_pinned(pieces)
        free_slope = jnp.where(pinned, 0, self.breakplanes.slope(z, pieces))
        # Every neuron feels the same e_i, and a_k factors out of its ẇ_k; with k outputs,
        # neuron k feels the projection a_k · e_i instead.
        neuron_error = error[None, :] if a.ndim == 1 else a @ error.T
        return (free_slope * neuron_error) @ self.inputs

    def hidden_velocity(self, a, z, error, pieces, pins):
        """$\\dot{\\tilde w}_k$ and the pins' $\\alpha$ of the neurons given (any rows of
        `a`, `z`, `pieces`, `pins`), from the residuals `error`: each row needs only its own
        pre-activations and pins, so the field on a pattern that differs from a known one in
        one neuron costs that neuron's row (`_reach_kink`'s other side of a kink)."""
        return self._slide(a, self._free_pull(a, z, error, pieces), error, pieces, pins)

    def _slide(self, a, free_pull, error, pieces, pins):
        """$\\dot{\\tilde w}_k$ and the pins' $\\alpha$ from the free pull: the pinned
        points' slopes solve each neuron's pin system (on the leading slots that hold the
        pins, `on_leading_slots`)."""
        slots = pins.shape[1]

        def solve(size):
            if size == 0:
                outer = -a[:, None] if a.ndim == 1 else -1.0
                return outer * free_pull, jnp.full(pins.shape, 0.5, free_pull.dtype)
            W_dot, alpha = self._slide_on(a, free_pull, error, pieces, pins[:, :size])
            return W_dot, jnp.pad(alpha, ((0, 0), (0, slots - size)), constant_values=0.5)

        return on_leading_slots(pins, solve)

    def _slide_on(self, a, free_pull, error, pieces, pins):
        """`_slide` on all of `pins`' slots."""
        x_pinned, in_use = self.pinned_inputs(pins)
        rhs = -jnp.einsum("kse,ke->ks", x_pinned, free_pull)
        pinned_pull = _solve_pins(x_pinned, in_use, rhs)  # u_ks = e_i s_ki

        outer = -a[:, None] if a.ndim == 1 else -1.0
        W_dot = outer * (free_pull + jnp.einsum("ks,kse->ke", pinned_pull, x_pinned))

        # α from the effective slope s = u / e. A pinned point whose residual is exactly zero
        # leaves its slope undetermined (any α does); report 1/2, i.e. no reason to release.
        point = jnp.maximum(pins, 0)
        if a.ndim == 1:
            pinned_error = error[point]
        else:
            pinned_error = jnp.sum(a[:, None, :] * error[point], axis=-1)  # a_k · e_i
        has_error = pinned_error != 0
        slope = pinned_pull / jnp.where(has_error, pinned_error, 1)
        kink = pin_kinks(pieces, pins)
        below, above = self.breakplanes.one_sided_slopes(jnp.maximum(kink, 0))
        alpha = jnp.where(in_use & has_error, (slope - below) / (above - below), 0.5)
        return W_dot, alpha

    def margins(self, z, alpha, pieces, pins):
        """How far each free pre-activation lies inside its piece `(m, n)` and each pin's
        $\\alpha$ inside $[0, 1]$ `(m, D)`; negative means an event has happened. Points of
        weight zero never interact with the flow and get `inf`."""
        free = ~is_pinned(pieces) & (self.sample_weights > 0)[None, :]
        h_free = jnp.where(free, self.breakplanes.margin(z, pieces), jnp.inf)
        return h_free, self.pin_margins(alpha, pins)

    @staticmethod
    def pin_margins(alpha, pins):
        """How far each pin's $\\alpha$ lies inside $[0, 1]$ `(m, D)` (`inf` if unused)."""
        return jnp.where(pins >= 0, jnp.minimum(alpha, 1 - alpha), jnp.inf)

    def project(self, state: State, pins, kinks) -> State:
        """The nearest state (in each $\\tilde w_k$) with every pinned $z_{ki}$ exactly on its
        kink (`kinks`: the index of each pin's kink): removes the root finder's residual
        when a pin starts."""

        def shift(size):
            if size == 0:
                return state
            return self._project_on(state, pins[:, :size], kinks[:, :size])

        return on_leading_slots(pins, shift)

    def _project_on(self, state: State, pins, kinks) -> State:
        a, W = state
        x_pinned, in_use = self.pinned_inputs(pins)
        target = self.breakplanes.kink_value(jnp.maximum(kinks, 0)).astype(W.dtype)
        offset = jnp.einsum("kse,ke->ks", x_pinned, W) - target
        shift = _solve_pins(x_pinned, in_use, offset)
        return a, W - jnp.einsum("ks,kse->ke", shift, x_pinned)

    def __call__(self, t, state: State, args) -> State:
        """The Diffrax vector field; `args` is the pattern `(pieces, pins)`."""
        pieces, pins = args
        return self.evaluate(state, pieces, pins)[0]


def on_leading_slots(pins: Int[Array, "m D"], solve):
    """`solve(size)` for the fewest leading pin slots, from (0, 2, 4, 8, 16, 32, D), that
    hold every neuron's pins, with `pins` kept in each neuron's leading slots
    (`piecewise_flow` compacts them at a release); the size is one for all seeds of a
    `vmap` (the largest).

    A neuron has D = dim x̃ pin slots (65 for 8×8 digits with a bias): solving the pin systems
    on all of them meant 32 batched 65×65 Gram products and factorisations per field
    evaluation on the digits problem (2.3 ms while one pin was held anywhere; its exact
    flow 423 s → 24 s with these sizes, 30–36 s with (0, 4, 16, D) or (0, 8, 32, D)). Each
    size is a branch compiled into every field evaluation (a flow at d = 8 compiled in 17 s
    with these sizes against 9 s with one), so D ≤ 16 is solved whole."""
    slots = pins.shape[1]
    if slots <= _WHOLE_PINS:
        return solve(slots)
    sizes = tuple(size for size in (0, 2, 4, 8, 16, 32) if size < slots) + (slots,)
    held = eqxi.unvmap_max(jnp.max(jnp.sum(pins >= 0, axis=1)))
    index = jnp.searchsorted(jnp.asarray(sizes, held.dtype), held).astype(jnp.int32)
    return jax.lax.switch(index, [partial(solve, size) for size in sizes])


_WHOLE_PINS = 16


# XLA's CPU dot (XNNPACK) runs the products with S, (m, n) @ (n, c), ~2.5x faster with c = 4
# than with c = 2 or 3 (measured at m·n = 10⁵; c = 4 … 8 alike): a narrower operand is padded.
_DOT_WIDTH = 4


def _widened(U: Float[Array, "r c"]) -> Float[Array, "r _"]:
    """`U` with zero columns added up to `_DOT_WIDTH`."""
    return jnp.pad(U, ((0, 0), (0, max(_DOT_WIDTH - U.shape[1], 0))))


def _times(S: Float[Array, "m n"], U: Float[Array, "n c"]) -> Float[Array, "m c"]:
    return (S @ _widened(U))[:, : U.shape[1]]


def _left_times(V: Float[Array, "m c"], S: Float[Array, "m n"]) -> Float[Array, "c n"]:
    """$V^\\top S$."""
    return (_widened(V).T @ S)[: V.shape[1]]


def _solve_pins(
    x_pinned: Float[Array, "m D e"], in_use: Bool[Array, "m D"], rhs: Float[Array, "m D"]
) -> Float[Array, "m D"]:
    """Each neuron's pin system $\\sum_{j} (\\tilde x_i \\cdot \\tilde x_j) u_j = r_i$ over the
    pins in use ($u = 0$ for the unused ones, whose rows are made the identity's)."""
    both = in_use[:, :, None] & in_use[:, None, :]
    gram = jnp.where(both, x_pinned @ jnp.swapaxes(x_pinned, 1, 2), jnp.eye(in_use.shape[1])[None])
    return jnp.where(in_use, solve_gram(gram, jnp.where(in_use, rhs, 0)), 0)


# Pin sets up to this size are solved by elimination written out in array operations.
_ELIMINATED_PINS = 4


def solve_gram(gram: Float[Array, "m D D"], rhs: Float[Array, "m D"]) -> Float[Array, "m D"]:
    """Solves each neuron's pin system: a Gram matrix of affinely independent pinned
    inputs (identity rows for unused pins), so symmetric positive definite.

    For D ≤ 4 (ReLU nets on inputs of dimension ≤ 3 with a bias) by Gauss–Jordan
    elimination without pivoting, unrolled into element-wise array operations — stable for
    a positive definite matrix, as Cholesky is. Not `jnp.linalg.solve`: on CPU that is a
    batched LAPACK call per field evaluation (a custom call the runtime cannot fuse), and
    batched LAPACK calls can deadlock XLA:CPU's thread pool when several host devices run
    at once, so `flow_ensemble` refused exact flows on more than one. Larger pin sets use
    `jnp.linalg.solve`."""
    size = gram.shape[-1]
    if size > _ELIMINATED_PINS:
        return jnp.linalg.solve(gram, rhs[..., None])[..., 0]
    A, b = gram, rhs
    for j in range(size):
        pivot = A[:, j, j]
        row, b_j = A[:, j, :] / pivot[:, None], b[:, j] / pivot
        column = A[:, :, j].at[:, j].set(0)  # what row j is subtracted from the others with
        A = (A - column[:, :, None] * row[:, None, :]).at[:, j, :].set(row)
        b = (b - column * b_j[:, None]).at[:, j].set(b_j)
    return b
