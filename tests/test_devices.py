import os
import subprocess
import sys
import textwrap

import pytest


# The host-platform device count must be set before JAX initialises, so the check runs
# in a fresh interpreter with four simulated CPU devices.
_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import gradflow as gf

    assert len(jax.devices()) == 4, jax.devices()
    s = jnp.linspace(-2.0, 2.0, 6)
    x = jnp.stack([s, jnp.ones(6)], 1)
    y = jnp.tanh(s + 1)
    keys = jax.random.split(jax.random.key(0), 10)
    nets = jax.vmap(
        lambda k: gf.random_net(k, width=2, dim=2, scale=1e-8, activation="tanh")
    )(keys)
    kwargs = dict(t1=50.0, reduction="sum", chunk_size=6, progress=False)
    sharded = gf.flow_ensemble(nets, x, y, **kwargs)
    single = gf.flow_ensemble(nets, x, y, devices=jax.devices()[:1], **kwargs)
    # Same steps, same decisions; values agree to the ulps by which XLA's batched
    # reductions differ between a batch of 2 seeds per device and of 8 on one.
    np.testing.assert_array_equal(sharded.status, single.status)
    np.testing.assert_array_equal(sharded.num_steps, single.num_steps)
    np.testing.assert_allclose(sharded.net.W, single.net.W, rtol=1e-12)
    np.testing.assert_allclose(sharded.loss, single.loss, rtol=1e-12)
    assert sharded.status.shape == (10,) and np.all(sharded.status == 0)

    # A second sharded ensemble of the same structure (other data values) reuses the
    # compiled program: XLA compiles nothing more.
    y_other = jax.block_until_ready(2.0 * y)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None
    )
    gf.flow_ensemble(nets, x, y_other, **kwargs)
    assert not compiles, compiles
    print("OK")
    """
)


# A child process may use every CPU of the machine, not only its test worker's one (see
# conftest): several host devices need threads to run side by side. Set in the child, before
# JAX starts (a pre-exec function would fork this multithreaded process, which JAX warns
# about).
_ALL_CPUS = "import os; os.sched_setaffinity(0, range(os.cpu_count()))\n"


def _xla_flags(flag: str) -> str:
    """The session's XLA flags (see conftest) with `flag` added, for a child process."""
    return f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


# Slow: test_implicit_phase_on_two_host_devices_does_not_hang runs sharded ensembles fast.
@pytest.mark.slow
def test_sharded_ensemble_equals_single_device():
    env = os.environ | {"XLA_FLAGS": _xla_flags("--xla_force_host_platform_device_count=4")}
    result = subprocess.run(
        [sys.executable, "-c", _ALL_CPUS + _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")


# Issue 16: with two host devices, the implicit phase hung (every thread waiting on a
# futex) once a device's slots held more than about 64 seeds. The late phase's 14 x 14
# systems (P = 12 with bias, plus two log-radii) go through LAPACK's LU; batched over the
# slots, jaxlib splits each LU over XLA:CPU's thread pool and blocks a pool thread until
# the pieces finish, and the two devices' calls waited for each other's pieces. Here 136
# seeds per device (more than its 128 slots), every one past the switch to the implicit
# phase; before the fix this run never returned.
_HANG_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import gradflow as gf

    assert len(jax.devices()) == 2, jax.devices()
    keys = jax.random.split(jax.random.key(0), 272)
    nets = jax.vmap(
        lambda k: gf.random_net(k, width=4, dim=1, scale=1e-6, activation="tanh", bias=True)
    )(keys)
    s = jnp.linspace(-1.0, 1.0, 10)
    x, y = s[:, None], jnp.tanh(2.0 * s)
    ens = gf.flow_ensemble(nets, x, y, t1=100.0, num_slots=128, progress=False)
    assert np.all(ens.status == 0), ens.summary()

    def stationarity(net):
        theta, unravel = jax.flatten_util.ravel_pytree(net)
        gradient = jax.grad(lambda th: gf.squared_loss(unravel(th), x, y))(theta)
        return jnp.linalg.norm(gradient) / jnp.linalg.norm(theta)

    # Every seed ended below the switch tolerance, so every one ran the implicit phase.
    assert np.all(jax.vmap(stationarity)(ens.net) <= gf.TwoPhase().switch_tol)

    # A batched LAPACK call of the user's own (here an observable) is refused with a
    # message, not run into the same deadlock.
    try:
        gf.flow_ensemble(
            jax.tree_util.tree_map(lambda v: v[:4], nets), x, y, t1=1.0, progress=False,
            observables={"sv": lambda net: jnp.linalg.svd(net.W, compute_uv=False)},
        )
    except ValueError as error:
        assert "`svd`" in str(error) and "devices=" in str(error), error
    else:
        raise AssertionError("a batched svd on two host devices was not refused")

    # Exact ReLU flows (pins held: each field evaluation solves the pins' systems) on both
    # devices, the same as on one.
    x2 = jnp.array([[-1.0, 0.0], [1.0, 0.2], [0.1, 1.0]])
    y2 = jnp.array([0.5, -0.3, 1.0])
    relu = jax.vmap(lambda k: gf.random_net(k, width=6, dim=2, scale=1e-3, bias=True))(
        jax.random.split(jax.random.key(1), 6)
    )
    both = gf.flow_ensemble(relu, x2, y2, t1=50.0, progress=False)
    one = gf.flow_ensemble(relu, x2, y2, t1=50.0, progress=False, devices=jax.devices()[:1])
    assert np.all(both.status == 0) and np.sum(both.observables["events"].num_pins) > 0
    np.testing.assert_array_equal(both.num_steps, one.num_steps)
    np.testing.assert_allclose(both.net.W, one.net.W, rtol=1e-12, atol=1e-15)
    print("OK")
    """
)


def test_implicit_phase_on_two_host_devices_does_not_hang():
    env = os.environ | {"XLA_FLAGS": _xla_flags("--xla_force_host_platform_device_count=2")}
    result = subprocess.run(
        [sys.executable, "-c", _ALL_CPUS + _HANG_SCRIPT], env=env, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK")
