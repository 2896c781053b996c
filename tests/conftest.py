import atexit
import os
import shutil
import tempfile


def _share_compiled_programs() -> None:
    """One persistent compilation cache for the session, its subprocesses (the
    multi-device checks) and the notebooks' kernels: the same solver programs are
    compiled by many test modules, and `_release_compiled_programs` drops the in-memory
    ones after each. Set before JAX is imported, as environment variables, so that JAX
    and every child process read them. A cache directory of the user's own
    (`JAX_COMPILATION_CACHE_DIR`) is used as it is, and kept."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        directory = tempfile.mkdtemp(prefix="gradflow-tests-xla-")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = directory
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _compile_quickly() -> None:
    """Compile the tests' programs with LLVM's optimisations off (XLA's backend
    optimisation level 0). The suite is compile-bound: almost every test compiles a
    solver loop and runs it for well under a second. The programs' HLO, hence what they
    compute, is the same at every level; only how fast the machine code runs differs
    (timings belong in `benchmarks/`, which run at XLA's default level). Measured on
    2 cores under load: 18 % less CPU for test_flow_properties + test_escape, 17 % for
    test_refill + test_kinks. A level set in the user's `XLA_FLAGS` is kept."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def _one_core_per_worker() -> None:
    """Each pytest-xdist worker on a core of its own (its CPU affinity, which JAX reads
    when it sizes XLA's thread pool, so set before JAX starts). XLA otherwise splits even
    a [50, 64] element-wise op across a pool of all cores, and with one worker per core
    every split waits for a core the other worker holds: the exact flows' event loops,
    thousands of small ops per event, spend most of their time in those hand-offs.
    `GRADFLOW_TEST_AFFINITY=0` keeps the affinity as it is."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if os.environ.get("GRADFLOW_TEST_AFFINITY") == "0" or not worker.startswith("gw"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if len(cpus) > 1 and workers >= len(cpus):
        os.sched_setaffinity(0, {cpus[int(worker[2:]) % len(cpus)]})


_share_compiled_programs()
_compile_quickly()
_one_core_per_worker()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxtyping  # noqa: E402
import pytest  # noqa: E402

import gradflow  # noqa: E402, F401  (enables float64)


# In case a plugin imported JAX before this file set the variables above.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes",
    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True)
def _type_checks(request):
    """The runtime shape/dtype checks of the import hook (see pyproject's `addopts`) stay
    on, except in tests marked `mistyped`: those pass ill-typed input on purpose to check
    that gradflow's own message names the argument and the fix."""
    if request.node.get_closest_marker("mistyped") is None:
        yield
        return
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", False)


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
