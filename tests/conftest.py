import jax
import jax.numpy as jnp
import pytest

import gradflow  # noqa: F401  (enables float64)


jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """Fresh PRNG keys on each call, reproducible per test."""
    key = jax.random.key(0)

    def _getkey():
        nonlocal key
        key, sub = jax.random.split(key)
        return sub

    return _getkey


@pytest.fixture
def w1_data():
    """Workload W1's data: inputs (x, 1) at 6 points on [-2, 2], target tanh(x + 1)."""
    s = jnp.linspace(-2.0, 2.0, 6)
    x = jnp.stack([s, jnp.ones_like(s)], axis=1)
    return x, jnp.tanh(s + 1.0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program after each test module: one process runs the whole
    suite, and thousands of cached executables (the solver loops are large) would
    otherwise accumulate in memory."""
    yield
    jax.clear_caches()
