"""Activation patterns: which piece of a piecewise-smooth activation each pre-activation lies on.

Every pre-activation $z_{ki} = \\tilde w_k \\cdot \\tilde x_i$ (with $\\tilde w_k = (w_k, b_k)$ and
$\\tilde x_i = (x_i, 1)$ for a biased net) gets an integer *piece*. With the kinks
$c_0 < c_1 < \\dots < c_{p-1}$ of the activation, even pieces are open intervals and odd pieces
are the kinks themselves:

    piece 0: z < c_0,  piece 1: z = c_0 (pinned),  piece 2: c_0 < z < c_1,  ...,
    piece 2p: z > c_{p-1}.

So for ReLU, piece 0 is the inactive side, piece 2 the active side and piece 1 a breakplane
$\\{\\tilde w_k \\cdot \\tilde x_i = 0\\}$ pinned at the data point $x_i$. Moving to a neighbouring
piece changes the code by one, which keeps every event a one-line update.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._activation import AbstractActivation


class Breakplanes(eqx.Module):
    """The kinks of a piecewise-smooth activation and its one-sided slopes there.

    **Fields:**

    - `activation`: the activation $\\sigma$, continuous and smooth between its kinks.
    - `kinks`: $c_0 < \\dots < c_{p-1}$, from `activation.kinks`.
    - `slope_below`, `slope_above`: $\\sigma'(c_j^-)$ and $\\sigma'(c_j^+)$.
    """

    activation: AbstractActivation = eqx.field(static=True)
    kinks: tuple[float, ...] = eqx.field(static=True)
    slope_below: tuple[float, ...] = eqx.field(static=True)
    slope_above: tuple[float, ...] = eqx.field(static=True)
    values: tuple[float, ...] = eqx.field(static=True)  # σ(c_j)

    @property
    def num_pieces(self) -> int:
        return 2 * len(self.kinks) + 1

    def kink_value(self, kink: Int[Array, "..."]) -> Float[Array, "..."]:
        return jnp.asarray(self.kinks)[kink]

    def bounds(self, piece: Int[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """The interval `(lower, upper)` of an even (open) piece.

        Written as a chain of selects over the (few) kinks, not a lookup in a table of
        edges: XLA's CPU gather from a table costs 120 µs on an m·n = 10⁵ pattern, and
        cannot fuse with the element-wise work around it (a field evaluation of
        `benchmarks/relu_scaling.py` at n = 2048 calls this three times)."""
        edges = (-np.inf,) + self.kinks + (np.inf,)
        pieces = range(self.num_pieces)
        return (
            self._by_piece(piece, tuple(edges[q // 2] for q in pieces)),
            self._by_piece(piece, tuple(edges[q // 2 + 1] for q in pieces)),
        )

    def margin(self, z: Float[Array, "..."], piece: Int[Array, "..."]) -> Float[Array, "..."]:
        """How far `z` lies inside its (open) piece: negative once it has left it."""
        lower, upper = self.bounds(piece)
        return jnp.minimum(z - lower, upper - z)

    def slope(self, z: Float[Array, "..."], piece: Int[Array, "..."]) -> Float[Array, "..."]:
        """$\\sigma'(z)$ *on the side of `piece`*.

        Why clamp: a pre-activation that has just crossed a kink may still sit a rounding
        error on the old side, and autodiff of `jnp.where(z > 0, ...)` would then return the
        old side's slope. Clamping into the piece's interval evaluates the formula of the
        piece the pattern says it is on.
        """
        if self.activation.piecewise_linear:
            return self._by_piece(piece, self._slopes).astype(z.dtype)
        lower, upper = self.bounds(piece)
        inside = jnp.clip(
            z, _step_off(lower.astype(z.dtype), 1), _step_off(upper.astype(z.dtype), -1)
        )
        return jax.jvp(self.activation, (inside,), (jnp.ones_like(inside),))[1]

    def value(self, z: Float[Array, "..."], piece: Int[Array, "..."]) -> Float[Array, "..."]:
        """$\\sigma(z)$ *on the branch of `piece`*, continued past its ends by the tangent
        there: $\\sigma(\\bar z) + \\sigma'(\\bar z)(z - \\bar z)$ with $\\bar z$ `z` clamped
        into the piece ($\\sigma(z)$ itself inside it; the exact continuation for a piecewise
        linear σ).

        Why: on a fixed pattern the field must be smooth in θ for the Runge–Kutta error
        estimate and dense output; with $\\sigma(z)$ itself, a step whose stages carry a
        $z_{ki}$ past its kink (every step that holds an event) sees the kink, and its error
        estimate degrades from O(h⁵) to O(h²): rejections that only shorten the step past the
        event, which the flow discards anyway (`benchmarks/relu_scaling.py`). Its slope is
        `slope`. A pinned entry (odd piece) keeps $\\sigma(z)$: it stays on its kink.
        """
        if self.activation.piecewise_linear:
            # On each open piece σ is its line through a kink at its end, exactly.
            anchor = self._by_piece(piece, self._anchors)
            line = self._by_piece(piece, self._anchor_values) + self._by_piece(
                piece, self._slopes
            ) * (z - anchor)
            return jnp.where(is_pinned(piece), self.activation(z), line.astype(z.dtype))
        lower, upper = self.bounds(piece)
        inside = jnp.clip(
            z, _step_off(lower.astype(z.dtype), 1), _step_off(upper.astype(z.dtype), -1)
        )
        value, slope = jax.jvp(self.activation, (inside,), (jnp.ones_like(inside),))
        return jnp.where(is_pinned(piece), self.activation(z), value + slope * (z - inside))

    def linear_pieces(
        self, piece: Int[Array, "..."], dtype
    ) -> tuple[Float[Array, "..."], Float[Array, "..."] | None]:
        """For a piecewise-linear σ, the slope $s$ and intercept $c$ with $\\sigma(z) = s z + c$
        on each entry's piece; a pinned entry (odd piece) gets $s = 0$ and $c = \\sigma$ at
        its kink, its value while it slides (its slope enters through the pin system).
        The intercept is None when every piece's is 0 (ReLU, leaky ReLU)."""
        slopes = tuple(0.0 if q % 2 else v for q, v in enumerate(self._slopes))
        intercepts = tuple(
            self.values[q // 2] if q % 2 else value - slope * anchor
            for q, (slope, anchor, value) in enumerate(
                zip(self._slopes, self._anchors, self._anchor_values)
            )
        )
        slope = self._by_piece(piece, slopes).astype(dtype)
        if not any(intercepts):
            return slope, None
        return slope, self._by_piece(piece, intercepts).astype(dtype)

    # For a piecewise-linear σ, per piece (odd pieces, the kinks, take their lower side's):
    # its slope, and a kink at its end with σ there. Piece 2j lies between c_{j-1} and
    # c_j; its line is anchored at c_{j-1}, or at c_0 for j = 0.
    @property
    def _slopes(self) -> tuple[float, ...]:
        return tuple(
            self.slope_below[0] if q < 2 else self.slope_above[(q - 2) // 2]
            for q in range(self.num_pieces)
        )

    @property
    def _anchors(self) -> tuple[float, ...]:
        return tuple(self.kinks[max(q // 2 - 1, 0)] for q in range(self.num_pieces))

    @property
    def _anchor_values(self) -> tuple[float, ...]:
        return tuple(self.values[max(q // 2 - 1, 0)] for q in range(self.num_pieces))

    @staticmethod
    def _by_piece(piece: Int[Array, "..."], table: tuple[float, ...]) -> Float[Array, "..."]:
        """`table[piece]` as a chain of selects, one per change along the table (not a
        gather: see `bounds`)."""
        out = jnp.full(piece.shape, table[0])
        for q, value in enumerate(table[1:], start=1):
            if value != table[q - 1]:
                out = jnp.where(piece >= q, value, out)
        return out

    def one_sided_slopes(
        self, kink: Int[Array, "..."]
    ) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        return jnp.asarray(self.slope_below)[kink], jnp.asarray(self.slope_above)[kink]


def _step_off(edge: Float[Array, "..."], direction: int) -> Float[Array, "..."]:
    """The float just past `edge` in `direction` (±1); infinite edges stay put.

    Not `nextafter`: next to 0 it gives a subnormal, which XLA on CPU flushes to 0, where
    autodiff of ReLU returns 1/2. Four ulps, or 1e-300 at 0, stay normal."""
    finite = jnp.isfinite(edge)
    gap = jnp.maximum(4 * jnp.finfo(edge.dtype).eps * jnp.abs(edge), 1e-300)
    return jnp.where(finite, edge + direction * jnp.where(finite, gap, 0), edge)


def breakplanes_of(activation: AbstractActivation) -> Breakplanes:
    """Checks that `activation` is piecewise smooth and reads its one-sided slopes.

    Runs at trace time, outside `jit`, so the slopes are plain floats."""
    kinks = tuple(float(c) for c in activation.kinks)
    name = type(activation).__name__
    if not kinks:
        raise ValueError(
            f"`net.activation` ({name}) is smooth: it lists no `kinks`, so there are no "
            "breakplanes to track. Use `gradflow.gradient_flow` for smooth activations, "
            "or list the non-differentiable points of your activation in its `kinks`."
        )
    if any(not np.isfinite(c) for c in kinks) or any(b <= a for a, b in zip(kinks, kinks[1:])):
        raise ValueError(f"`{name}.kinks` must be finite and strictly increasing, got {kinks}.")
    below, above, values = [], [], []
    with jax.ensure_compile_time_eval():
        for c in kinks:
            c = jnp.asarray(c, jnp.float64)
            derivative = jax.grad(lambda z: activation(z))
            below.append(float(derivative(_step_off(c, -1))))
            above.append(float(derivative(_step_off(c, 1))))
            values.append(float(activation(c)))
            jump = float(activation(_step_off(c, 1)) - activation(_step_off(c, -1)))
            if abs(jump) > 1e-12 * max(1.0, abs(c)):
                raise ValueError(
                    f"`net.activation` ({name}) jumps by {jump:.3g} at its kink {c}: the "
                    "piecewise flow needs a continuous activation."
                )
    for c, lo, hi in zip(kinks, below, above):
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
            raise ValueError(
                f"`net.activation` ({name}) has one-sided slopes {lo} and {hi} at its kink "
                f"{c}: they must be finite and differ (drop {c} from `kinks` if σ is smooth there)."
            )
    return Breakplanes(activation, kinks, tuple(below), tuple(above), tuple(values))


def initial_pieces(breakplanes: Breakplanes, z: Float[Array, "m n"]) -> Int[Array, "m n"]:
    """The open piece holding each pre-activation; one lying exactly on a kink starts above
    it, and the first step decides whether it crosses, stays or slides."""
    return 2 * jnp.searchsorted(jnp.asarray(breakplanes.kinks, z.dtype), z, side="right").astype(
        jnp.int32
    )


def pin_kinks(pieces: Int[Array, "m n"], pins: Int[Array, "m D"]) -> Int[Array, "m D"]:
    """The index of the kink each pin holds its point on (-1 for unused pins: read their
    entries through `jnp.maximum(kinks, 0)`)."""
    return (jnp.take_along_axis(pieces, jnp.maximum(pins, 0), axis=1) - 1) // 2


def is_pinned(pieces: Int[Array, "..."]) -> Bool[Array, "..."]:
    """Odd pieces are kinks. The low bit, not `pieces % 2`: XLA's signed remainder is a
    chain of selects, and this runs on every pattern entry at every field evaluation."""
    return (pieces & 1) == 1
