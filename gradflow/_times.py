import jax.numpy as jnp
from jaxtyping import Array, Float


def log_times(t1: float, num: int = 100, *, t_min: float | None = None) -> Float[Array, " T"]:
    """Save times `[0, t_min, ..., t1]`, log-spaced after 0: tiny-init runs spend a
    time $\\propto \\log(1/\\varepsilon)$ on a plateau and then move fast, so linear
    spacing wastes most points. `t_min` defaults to `t1 / 10**4`."""
    if not t1 > 0:
        raise ValueError(f"`t1` must be positive, got {t1!r}.")
    if num < 2:
        raise ValueError(f"`num` must be at least 2, got {num}.")
    t_min = t1 * 1e-4 if t_min is None else t_min
    if not 0 < t_min < t1:
        raise ValueError(f"`t_min` must lie in (0, t1), got {t_min!r}.")
    times = jnp.logspace(jnp.log10(t_min), jnp.log10(t1), num - 1)
    return jnp.concatenate([jnp.zeros(1), times.at[-1].set(t1)])
