"""An exact-ReLU ensemble against a Python loop over `gradient_flow` (issue 16: an
ensemble must never be slower than a loop). 8 seeds, m = 10 ReLU neurons on inputs
(s, 1) at 20 points of [-1, 1], target |s| - 0.3, eps = 1e-4, t1 = 200. Both are timed
twice: the first call includes compilation, the second does not (the ensemble's second
call uses other targets of the same shapes, so nothing is cached but the program).
The step counts are checked equal before any time is printed.

    python benchmarks/relu_ensemble.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import gradflow as gf


def main() -> None:
    s = jnp.linspace(-1.0, 1.0, 20)
    x, y = jnp.stack([s, jnp.ones_like(s)], 1), jnp.abs(s) - 0.3
    keys = jax.random.split(jax.random.key(0), 8)
    nets = jax.vmap(lambda k: gf.random_net(k, width=10, dim=2, scale=1e-4))(keys)

    def ensemble(targets):
        start = time.perf_counter()
        out = jax.block_until_ready(gf.flow_ensemble(nets, x, targets, t1=200.0, progress=False))
        return out, time.perf_counter() - start

    def loop(targets):
        start = time.perf_counter()
        out = [
            gf.gradient_flow(jax.tree_util.tree_map(lambda v: v[i], nets), x, targets, t1=200.0)
            for i in range(8)
        ]
        jax.block_until_ready([sol.net for sol in out])
        return out, time.perf_counter() - start

    ens, ens_first = ensemble(y)
    sols, loop_first = loop(y)
    np.testing.assert_array_equal(ens.num_steps, [int(sol.num_steps) for sol in sols])
    _, ens_second = ensemble(1.01 * y)
    _, loop_second = loop(1.01 * y)
    print(f"events per seed: {np.asarray(ens.observables['events'].num_events).tolist()}")
    print(f"first call (compile + run): ensemble {ens_first:.1f} s, loop {loop_first:.1f} s")
    print(f"second call: ensemble {ens_second:.1f} s, loop {loop_second:.1f} s, "
          f"ratio loop/ensemble {loop_second / ens_second:.2f}")


if __name__ == "__main__":
    main()
