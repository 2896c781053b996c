import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._activation import AbstractActivation, get_activation


class TwoLayerNet(eqx.Module):
    """The shallow network $f_\\theta(x) = \\sum_{k=1}^m a_k\\,\\sigma(w_k \\cdot x + b_k)$.

    **Arguments:**

    - `a`: outer weights, shape `(m,)` for a scalar output, or `(m, k)` for an output in
      $\\mathbb{R}^k$ (row $j$ is neuron $j$'s output vector $a_j$). An `(m, 1)` net is the
      scalar problem with targets of shape `(n, 1)`.
    - `W`: inner weights, shape `(m, d)`; row $k$ is $w_k$.
    - `b`: optional biases, shape `(m,)`. `None` means no bias (a bias can also be
      modelled as a constant input coordinate, as Zhao et al. do).
    - `activation`: a name such as `"relu"`, `"tanh"`, or an `AbstractActivation`.

    The trainable parameters $\\theta$ are exactly the array leaves `a`, `W`, `b`; the
    activation is static, so `jax.vmap` over a stacked `TwoLayerNet` runs an ensemble.
    """

    a: Float[Array, " m *k"]
    W: Float[Array, "m d"]
    b: Float[Array, " m"] | None
    activation: AbstractActivation = eqx.field(static=True)

    def __init__(
        self,
        a: Float[ArrayLike, " m *k"],
        W: Float[ArrayLike, "m d"],
        b: Float[ArrayLike, " m"] | None = None,
        activation: str | AbstractActivation = "relu",
    ):
        a = jnp.asarray(a)
        W = jnp.asarray(W)
        if a.ndim not in (1, 2):
            raise ValueError(
                f"`a` must have shape (m,) (scalar output) or (m, k) (k outputs), got shape "
                f"{a.shape}."
            )
        if W.ndim != 2 or W.shape[0] != a.shape[0]:
            raise ValueError(
                f"`W` must have shape (m, d) = ({a.shape[0]}, d) to match `a`, got shape {W.shape}."
            )
        if b is not None:
            b = jnp.asarray(b)
            if b.shape != a.shape[:1]:
                raise ValueError(
                    f"`b` must have shape (m,) = {a.shape[:1]} to match `a`, got {b.shape}."
                )
        dtypes = {a.dtype, W.dtype} | ({b.dtype} if b is not None else set())
        if len(dtypes) != 1:
            raise TypeError(
                f"`a`, `W` and `b` must share one dtype, got {sorted(map(str, dtypes))}. "
                "Cast them explicitly, e.g. with `.astype(jnp.float64)`."
            )
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"Network weights must be floating point, got {a.dtype}.")
        self.a = a
        self.W = W
        self.b = b
        self.activation = get_activation(activation)

    @property
    def width(self) -> int:
        return self.W.shape[-2]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """`()` for a scalar output, `(k,)` for an output in $\\mathbb{R}^k$. Read from
        `W`'s rank too, so it holds for nets stacked along leading (seed, time) axes."""
        return self.a.shape[-1:] if self.a.ndim == self.W.ndim else ()

    @property
    def dim(self) -> int:
        return self.W.shape[-1]

    @property
    def dtype(self):
        return self.a.dtype

    def preactivation(self, x: Float[ArrayLike, "n d"]) -> Float[Array, "n m"]:
        """$z_{ik} = w_k \\cdot x_i + b_k$; its sign pattern is the ReLU activation region."""
        z = jnp.asarray(x) @ self.W.T
        return z if self.b is None else z + self.b[None, :]

    def __call__(self, x: Float[ArrayLike, "n d"]) -> Float[Array, " n *k"]:
        """The outputs $f_\\theta(x_i)$, shape `(n,)` or `(n, k)`."""
        return self.activation(self.preactivation(x)) @ self.a


def imbalance(net: TwoLayerNet) -> Float[Array, "*seeds m"]:
    """Per-neuron imbalance $C_k = \\|a_k\\|^2 - \\|w_k\\|^2 - b_k^2$ ($a_k^2$ for a
    scalar output).

    It is conserved exactly by the gradient flow of positively 1-homogeneous
    activations (ReLU, leaky ReLU, identity) and approximately near the origin for
    smooth $\\sigma$ with $\\sigma(0)=0$, $\\sigma'(0)=1$. Works on stacked nets too.
    """
    outer = jnp.sum(net.a**2, axis=-1) if net.output_shape else net.a**2
    c = outer - jnp.sum(net.W**2, axis=-1)
    return c if net.b is None else c - net.b**2


def parameter_norm(net: TwoLayerNet) -> Float[Array, ""]:
    """Euclidean norm $\\|\\theta\\|$ of all trainable parameters."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_array))
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in leaves))
