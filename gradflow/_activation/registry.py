from collections.abc import Callable

from .base import AbstractActivation
from .piecewise import Identity, LeakyReLU, ReLU
from .smooth import Erf, Gaussian, GELU, Rational, Sinc, Sinc2, Softplus, Tanh


_REGISTRY: dict[str, Callable[[], AbstractActivation]] = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "identity": Identity,
    "tanh": Tanh,
    "rational": Rational,
    "sinc": Sinc,
    "sinc2": Sinc2,
    "gaussian": Gaussian,
    "erf": Erf,
    "softplus": Softplus,
    "gelu": GELU,
}


def register_activation(name: str, factory: Callable[[], AbstractActivation]) -> None:
    """Makes `factory()` selectable as `activation=name` everywhere in gradflow."""
    if not isinstance(name, str) or not name:
        raise ValueError("`name` must be a non-empty string.")
    _REGISTRY[name] = factory


def get_activation(activation: "str | AbstractActivation") -> AbstractActivation:
    """Returns the activation named `activation` (see `register_activation`), or
    `activation` itself when it already is an `AbstractActivation`."""
    if isinstance(activation, AbstractActivation):
        return activation
    if isinstance(activation, str):
        try:
            return _REGISTRY[activation]()
        except KeyError:
            known = ", ".join(sorted(_REGISTRY))
            raise ValueError(
                f"Unknown `activation` {activation!r}. Choose one of {known}, pass an "
                "`AbstractActivation` instance, or add yours with "
                "`gradflow.register_activation`."
            ) from None
    raise TypeError(
        "`activation` must be a name or an `AbstractActivation`, got "
        f"{type(activation).__name__}. Wrap a plain function by subclassing "
        "`gradflow.AbstractActivation`."
    )
