import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def is_traced(x) -> bool:
    """True inside `jit`/`vmap`, where values cannot be inspected at trace time."""
    return isinstance(x, jax.core.Tracer)


def all_concrete(*xs) -> bool:
    return not any(is_traced(leaf) for x in xs for leaf in jax.tree_util.tree_leaves(x))


def ravel_net(net):
    """Splits a network into its flat parameter vector θ and a function θ ↦ network."""
    params, static = eqx.partition(net, eqx.is_array)
    theta, unravel = ravel_pytree(params)
    return theta, lambda th: eqx.combine(unravel(th), static)


def layer_sizes(net) -> tuple[int, int]:
    """Sizes of the outer (`a`: m, or m·k for k outputs) and inner (`W`, `b`) blocks of
    `ravel_net`'s θ, which follows the field order of `TwoLayerNet`."""
    inner = net.W.size + (0 if net.b is None else net.b.size)
    return net.a.size, inner


def rms(v):
    return jnp.sqrt(jnp.mean(v**2))


def check_finite(name: str, value) -> None:
    """Raises if a concrete array holds NaN or inf; silently skips traced values."""
    if value is None or is_traced(value):
        return
    if not np.all(np.isfinite(np.asarray(value))):
        raise ValueError(f"`{name}` contains NaN or inf. {_NONFINITE_ADVICE.get(name, '')}")


_NONFINITE_ADVICE = {
    "x": "Remove or impute those samples first.",
    "y": "Remove those samples, or give them weight 0 (and a finite placeholder target).",
    "weights": "Weights must be finite and non-negative; 0 drops a sample.",
    "nets": "Check the initialisation: its scale or the key that drew it.",
    "net": "Check the initialisation: its scale or the key that drew it.",
}


def check_positive(name: str, value, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or (not is_traced(value) and not (np.isfinite(value) and value > 0)):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


def check_positive_int(name: str, value) -> None:
    """Refuses anything but a positive integer (a `bool` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_reduction(reduction) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}.")


def select(pred, on_true, on_false):
    """`jnp.where(pred, ·, ·)` leaf by leaf over two PyTrees of the same structure."""
    return jax.tree_util.tree_map(lambda u, v: jnp.where(pred, u, v), on_true, on_false)
