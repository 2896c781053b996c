from jaxtyping import Array, ArrayLike, Float


# Names follow the maths: n data points of dimension d, m neurons, k outputs (none for a
# scalar output), T save times.
Inputs = Float[Array, "n d"]
Targets = Float[Array, " n *k"]
Weights = Float[Array, " n"]
Times = Float[Array, " T"]
ScalarLike = float | Float[ArrayLike, ""]
