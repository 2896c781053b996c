import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .base import AbstractCoordinates, LayerSizes


class ScaleFree(AbstractCoordinates):
    """Log-polar coordinates, one radius per layer: $\\theta_j = e^{\\rho_j} u_j$ for each
    layer $j$ (outer weights $a$; inner weights $W$ with biases $b$), with
    $\\rho_j = \\log \\|\\theta_j\\|_{\\mathrm{rms}}$ and $\\|u_j\\|_{\\mathrm{rms}} = 1$:

    $$\\dot\\rho_j = \\frac{u_j \\cdot g_j}{u_j \\cdot u_j}, \\qquad
    \\dot u_j = g_j - \\dot\\rho_j\\, u_j, \\qquad
    g_j = -\\nabla_{\\theta_j} L(\\theta) / e^{\\rho_j}.$$

    This is exact for any $u$ ($\\tfrac{d}{dt}(e^{\\rho_j} u_j) = -\\nabla_{\\theta_j} L$), and
    the choice of $\\dot\\rho_j$ keeps $\\|u_j\\|$ constant. Why: the controller applies a
    pure absolute tolerance to $(\\rho, u)$, which is a tolerance *relative to each
    layer's norm*: the same at $\\varepsilon = 10^{-2}$ and $10^{-20}$. Near the origin
    the flow of $u$ is a linear system independent of $\\varepsilon$, so the escape phase
    costs about the same number of steps at every scale; only the escape *time* grows,
    like $\\log(1/\\varepsilon)$.

    One radius per layer rather than one for all of $\\theta$ matters when the layers
    separate in scale: with $\\sigma(0) \\neq 0$ (sinc, Gaussian) the outer weights
    escape first while the inner ones stay near $\\varepsilon$, and a tolerance relative
    to $\\|\\theta\\|$ would leave the inner layer's digits uncontrolled.
    `layerwise=False` uses a single radius (every layer must then be non-zero only
    jointly: use it for an init with, e.g., $a = 0$).

    A plain per-coordinate relative tolerance would instead demand digits in every
    weight that crosses zero, and an absolute one (e.g. `atol=1e-6`) makes a
    $10^{-20}$ init meaningless.
    """

    layerwise: bool = eqx.field(static=True, default=True)

    def _segments(self, layer_sizes: LayerSizes):
        sizes = layer_sizes if self.layerwise else (sum(layer_sizes),)
        return np.repeat(np.arange(len(sizes)), sizes), len(sizes)

    def to_state(self, theta, layer_sizes):
        segments, num = self._segments(layer_sizes)
        sq = jax.ops.segment_sum(theta**2, segments, num_segments=num)
        counts = np.bincount(segments, minlength=num).astype(np.dtype(theta.dtype))
        scale = jnp.sqrt(sq / counts)
        return jnp.log(scale), theta / scale[segments]

    def to_params(self, state, layer_sizes):
        rho, u = state
        segments, _ = self._segments(layer_sizes)
        return jnp.exp(rho)[segments] * u

    def vector_field(self, gradient, layer_sizes):
        segments, num = self._segments(layer_sizes)

        def f(t, state, args):
            rho, u = state
            scale = jnp.exp(rho)[segments]
            g = -gradient(scale * u) / scale
            rho_dot = jax.ops.segment_sum(u * g, segments, num_segments=num) / (
                jax.ops.segment_sum(u * u, segments, num_segments=num)
            )
            return rho_dot, g - rho_dot[segments] * u

        return f

    def controller(self, rtol, dtmin):
        return dfx.PIDController(rtol=0.0, atol=rtol, dtmin=dtmin, force_dtmin=False)
