import diffrax as dfx
import jax.numpy as jnp

from .._misc import rms
from .base import AbstractCoordinates


class ScaleFree(AbstractCoordinates):
    """Log-polar coordinates $\\theta = e^{\\rho} u$, $\\rho = \\log \\|\\theta\\|_{\\mathrm{rms}}$.

    The state is $(\\rho, u)$ with $\\|u\\|_{\\mathrm{rms}} = 1$, and

    $$\\dot\\rho = \\frac{u \\cdot g}{u \\cdot u}, \\qquad \\dot u = g - \\dot\\rho\\, u,
    \\qquad g = -\\nabla L(e^{\\rho} u) / e^{\\rho}.$$

    This is exact for any $u$ ($\\tfrac{d}{dt}(e^\\rho u) = -\\nabla L$), and the choice of
    $\\dot\\rho$ keeps $\\|u\\|$ constant. Why: the controller applies a pure absolute
    tolerance to $(\\rho, u)$, which is a tolerance *relative to $\\|\\theta\\|$*: the same
    at $\\varepsilon = 10^{-2}$ and $10^{-20}$. Near the origin $g \\approx -H u$ with
    $H$ the Hessian at 0, so the escape phase is the linear system
    $\\dot u = -Hu + (u^\\top H u)u$, independent of $\\varepsilon$; its cost no longer
    grows as the scale shrinks, only the escape *time* does, like $\\log(1/\\varepsilon)$.

    A plain elementwise relative tolerance would instead demand digits in every
    coordinate that crosses zero, and an absolute one (e.g. `atol=1e-6`) makes a
    $10^{-20}$ init meaningless.
    """

    def to_state(self, theta):
        scale = rms(theta)
        return jnp.log(scale), theta / scale

    def to_params(self, state):
        rho, u = state
        return jnp.exp(rho) * u

    def vector_field(self, gradient):
        def f(t, state, args):
            rho, u = state
            scale = jnp.exp(rho)
            g = -gradient(scale * u) / scale
            rho_dot = jnp.dot(u, g) / jnp.dot(u, u)
            return rho_dot, g - rho_dot * u

        return f

    def controller(self, rtol):
        return dfx.PIDController(rtol=0.0, atol=rtol)
