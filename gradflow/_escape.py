"""The linear escape phase, solved exactly.

Near the origin, for a smooth activation with $\\sigma(0) = 0 \\ne \\sigma'(0)$, the
network is bilinear to leading order, $f_\\theta(x_i) \\approx \\sigma'(0) \\sum_k a_k\\,
\\tilde w_k \\cdot \\tilde x_i$ with $\\tilde w_k = (w_k, b_k)$, $\\tilde x_i = (x_i, 1)$,
and the gradient flow of $L = \\tfrac12 \\sum_i c_i (f_\\theta(x_i) - y_i)^2$ is linear:

$$\\dot a_k = \\lambda\\, u \\cdot \\tilde w_k, \\qquad \\dot{\\tilde w}_k = \\lambda\\, a_k u,
\\qquad \\lambda u = \\sigma'(0) \\sum_i c_i y_i \\tilde x_i, \\; \\|u\\| = 1.$$

Each neuron's pair $(a_k, u \\cdot \\tilde w_k)$ splits into a mode growing like
$e^{\\lambda t}$ and one decaying like $e^{-\\lambda t}$; the part of $\\tilde w_k$
orthogonal to $u$ stays put. So the whole phase has a closed form, and a solver need
only start where the nonlinearity begins to matter. Why it is worth it: however
well-scaled the coordinates, a solver steps through the linear phase, whose length
grows like $\\log(1/\\varepsilon)/\\lambda$; with the jump, every init scale below the
hand-over radius costs the same.

With $k$ outputs ($a_k \\in \\mathbb{R}^k$, loss $\\tfrac12 \\sum_i c_i \\|f_\\theta(x_i) -
y_i\\|^2$) the linear flow is $\\dot a_k = M^\\top \\tilde w_k$, $\\dot{\\tilde w}_k = M a_k$ with
$M = \\sigma'(0) \\sum_i c_i \\tilde x_i y_i^\\top$. In the singular vectors of
$M = \\sum_r s_r u_r v_r^\\top$ each neuron's pairs $(v_r \\cdot a_k, u_r \\cdot \\tilde w_k)$ split
the same way at the rates $\\pm s_r$, and the parts of $a_k$ and $\\tilde w_k$ outside the
singular subspaces stay put: the same closed form with several rates (Saxe et al.'s
linear-network modes), where the time at which $\\|\\theta\\|$ reaches a radius is found by
bisection instead of from a quadratic. A scalar output is the case $k = 1$ with $v_1 = 1$.

The neglected terms are relatively $O(\\|\\theta\\|^p)$ with $p = 2$ when
$\\sigma''(0) = 0$ (tanh, erf, odd rationals, the identity) and $p = 1$ otherwise (GELU).
The hand-over radius $r$ is chosen so that the relative defect of the linear field,
integrated over the phase ($\\approx$ defect$(r)/p$, since it grows like $e^{p\\lambda t}$),
is at most `rtol`.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._misc import ravel_net
from ._network import TwoLayerNet


def escape_order(net: TwoLayerNet) -> int:
    """The order $p$ of the neglected terms, or 0 when the flow near the origin is not
    the linear flow above (an activation with kinks, or $\\sigma(0) \\ne 0$, or
    $\\sigma'(0) = 0$). Decided at trace time from the static activation."""
    sigma = net.activation
    if not sigma.is_smooth:
        return 0
    # Constants are traced under an outer `jit`; the activation is static, so evaluate
    # it eagerly.
    with jax.ensure_compile_time_eval():
        zero = jnp.zeros((), net.dtype)
        value = float(sigma(zero))
        slope = float(jax.grad(sigma)(zero))
        curvature = float(jax.grad(jax.grad(sigma))(zero))
    if value != 0.0 or slope == 0.0:
        return 0
    return 2 if abs(curvature) <= 1e-12 * abs(slope) else 1


class LinearEscape:
    """The exact linear flow from `net` and the time at which it is handed over.

    Built inside the compiled solve (all arrays may be traced); see the module notes.
    With a scalar output there is one rate and the modes are read off the vector
    $\\lambda u$ directly; with $k$ outputs, off the SVD of $M$.
    """

    def __init__(
        self, net: TwoLayerNet, order, x, y, weights, reduction, gradient, unravel, rtol, t1
    ):
        inputs = x if net.b is None else jnp.concatenate([x, jnp.ones_like(x[:, :1])], axis=1)
        self.vector = bool(net.output_shape)
        c = jnp.ones(y.shape[:1], y.dtype) if weights is None else weights
        if reduction == "mean":
            c = c / jnp.sum(c)
        slope = jax.grad(net.activation)(jnp.zeros((), x.dtype))
        w = _extended(net)
        if self.vector:
            # M = σ'(0) Σ_i c_i x̃_i y_iᵀ: its singular triples are the modes.
            u, self.rates, vt = jnp.linalg.svd(
                slope * (inputs.T * c[None, :]) @ y, full_matrices=False
            )
            self.inner_basis, self.outer_basis = u, vt.T  # (e, r), (k, r)
            outer = net.a @ self.outer_basis
            self.outer_across = net.a - outer @ self.outer_basis.T
        else:
            v = slope * (c * y) @ inputs
            rate = jnp.linalg.norm(v)
            # A zero rate (labels orthogonal to every input) has no escape to jump.
            safe_rate = jnp.where(rate > 0, rate, 1)
            self.rates = rate[None]
            self.inner_basis = (v / safe_rate)[:, None]
            outer = net.a[:, None]
        self.has_bias = net.b is not None
        self.dtype = x.dtype
        along = w @ self.inner_basis  # (m, r)
        self.growing = (outer + along) / 2
        self.decaying = (outer - along) / 2
        self.across = w - along @ self.inner_basis.T
        self.unravel = unravel
        self.activation = net.activation

        # The defect of the linear field at a probe point on the linear path, scaled
        # to the radius where its integral is `rtol`.
        scale = jnp.max(jnp.linalg.norm(inputs, axis=1))
        probe_radius = jnp.sqrt(rtol) / scale if order == 2 else rtol / scale
        probe = self.params(self._time_at_radius(probe_radius))
        exact = -gradient(probe)
        linear = self._field(probe)
        norm = jnp.linalg.norm(probe)
        defect = jnp.linalg.norm(exact - linear) / jnp.maximum(jnp.linalg.norm(linear), 1e-300)
        # Relative defect is ~ (‖θ‖/r0)^p; solve defect(r)/p = rtol, capping the growth of
        # the radius at 10× the probe so that the estimate is used near where it holds.
        ratio = (order * rtol / jnp.maximum(defect, 1e-300)) ** (1 / order)
        radius = norm * jnp.minimum(ratio, 10.0)
        t_handover = self._time_at_radius(radius)
        ok = (self.rates[0] > 0) & jnp.isfinite(t_handover)
        self.t_handover = jnp.where(ok, jnp.clip(t_handover, 0, t1), 0)

    def _time_at_radius(self, radius):
        """Smallest $t \\ge 0$ with $\\|\\theta(t)\\| = r$ ($\\infty$ if never reached).

        $\\|\\theta(t)\\|^2 = \\sum_r (S_r q_r + D_r / q_r) + Q$ with $q_r = e^{2 s_r t}$,
        $S_r$, $D_r$ twice the squared growing and decaying amplitudes of mode $r$, $Q$ the
        part that stays put. One mode: the larger root of a quadratic in $q$. Several:
        bisection, as that sum is convex in $t$."""
        S = 2 * jnp.sum(self.growing**2, axis=0)
        D = 2 * jnp.sum(self.decaying**2, axis=0)
        Q = jnp.sum(self.across**2)
        if self.vector:
            Q = Q + jnp.sum(self.outer_across**2)
        if self.rates.shape[0] > 1:
            return self._bisect_time(radius, S, D, Q)
        S, D, rate = S[0], D[0], self.rates[0]
        excess = radius**2 - Q
        discriminant = excess**2 - 4 * S * D
        q = (excess + jnp.sqrt(jnp.maximum(discriminant, 0))) / (2 * jnp.where(S > 0, S, 1))
        reachable = (S > 0) & (excess > 0) & (discriminant >= 0)
        safe_rate = jnp.where(rate > 0, rate, 1)
        t = jnp.log(jnp.where(reachable, q, 1)) / (2 * safe_rate)
        return jnp.where(reachable, jnp.maximum(t, 0), jnp.inf)

    def _bisect_time(self, radius, S, D, Q):
        """The time at `radius` with several rates: 0 if ‖θ(0)‖ ≥ r (nothing to jump),
        else the one root of the convex $\\|\\theta(t)\\|^2 - r^2 < 0$ at $t = 0$ in
        $(0, t_{hi}]$, where $t_{hi}$ is when a single growing mode alone reaches $r$."""

        def excess(t):
            q = jnp.exp(2 * self.rates * t)
            return jnp.sum(S * q + D / q) + Q - radius**2

        grows = (S > 0) & (self.rates > 0)
        alone = jnp.log(radius**2 / jnp.where(grows, S, 1)) / (2 * jnp.where(grows, self.rates, 1))
        t_hi = jnp.min(jnp.where(grows, jnp.maximum(alone, 0), jnp.inf))
        reachable = jnp.isfinite(t_hi)
        t_hi = jnp.where(reachable, t_hi, 1)

        def halve(_, bracket):
            lo, hi = bracket
            mid = (lo + hi) / 2
            below = excess(mid) < 0
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

        # 64 halvings shrink the bracket below an ulp of t_hi for any t_hi < 2^11.
        _, t = jax.lax.fori_loop(0, 64, halve, (jnp.zeros_like(t_hi), t_hi))
        t = jnp.where(excess(0.0) >= 0, 0.0, t)
        return jnp.where(reachable, t, jnp.inf)

    def _field(self, theta):
        net = self.unravel(theta)
        w = _extended(net)
        outer = net.a @ self.outer_basis if self.vector else net.a[:, None]
        inner_dot = self.rates[None, :] * (w @ self.inner_basis)  # (m, r): d/dt of a's mode parts
        w_dot = (self.rates[None, :] * outer) @ self.inner_basis.T
        if self.vector:
            a_dot = inner_dot @ self.outer_basis.T
        else:
            a_dot = inner_dot[:, 0]
        return self._flatten(a_dot, w_dot)

    def _flatten(self, a, w):
        W, b = (w, None) if not self.has_bias else (w[:, :-1], w[:, -1])
        return ravel_net(TwoLayerNet(a, W, b, self.activation))[0]

    def params(self, t: Float[Array, ""]) -> Float[Array, " P"]:
        """θ(t) of the linear flow, flattened like `ravel_net`."""
        growth = jnp.exp(self.rates * t)[None, :]
        decay = jnp.exp(-self.rates * t)[None, :]
        outer = self.growing * growth + self.decaying * decay
        along = self.growing * growth - self.decaying * decay
        w = self.across + along @ self.inner_basis.T
        if self.vector:
            a = self.outer_across + outer @ self.outer_basis.T
        else:
            a = outer[:, 0]
        return self._flatten(a, w)


def _extended(net: TwoLayerNet):
    """$\\tilde w_k = (w_k, b_k)$ as the rows of one matrix."""
    return net.W if net.b is None else jnp.concatenate([net.W, net.b[:, None]], axis=1)
