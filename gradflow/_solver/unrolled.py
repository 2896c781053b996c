from typing import ClassVar

import diffrax as dfx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree


class Unrolled(dfx.AbstractAdaptiveSolver):
    """An explicit Runge–Kutta method of Diffrax, its stages written out one after the
    other instead of looped over.

    The same method as `method` (its Butcher tableau, error estimate and dense output;
    it takes the same steps, and its answers agree with `method`'s to rounding): only
    how the step is compiled differs. Diffrax runs the stages of a step in an inner
    loop that writes each stage into a buffer and takes a masked product with all of
    them, so that a large vector field is traced once. gradflow's fields are small and
    its batches wide (a thousand seeds of a few parameters, `vmap`ped), and then that
    loop's bookkeeping costs more than the vector field. Written out, each stage's
    combination is one fused kernel. Measured on workload W1's field (1000 seeds,
    $P = 6$, `ScaleFree` coordinates, 2-core CPU): 0.80 ms per Tsit5 step against
    Diffrax's 1.17 ms (a whole `TwoPhase` run of W1 at rtol 1e-8, `benchmarks/w1.py`:
    1.22x faster); on W2's (64 seeds, $P = 1100$) no faster (36 vs 35 ms), so gradflow
    unrolls only the explicit phase of `TwoPhase`, its solver for small nets.

    ```python
    solver = gf.TwoPhase(explicit=gf.Unrolled(diffrax.Dopri8()))
    ```

    The price is compile time, which grows with the number of stages (each one traces
    the vector field).

    **Arguments:**

    - `method`: an explicit Runge–Kutta solver of Diffrax (`diffrax.Tsit5()`,
      `diffrax.Dopri5()`, `diffrax.Dopri8()`, ...).
    """

    method: dfx.AbstractERK = dfx.Tsit5()

    term_structure: ClassVar = dfx.AbstractTerm

    def __check_init__(self):
        tableau = getattr(self.method, "tableau", None)
        if not isinstance(self.method, dfx.AbstractERK) or not isinstance(
            tableau, dfx.ButcherTableau
        ):
            raise TypeError(
                "`Unrolled(method)` takes an explicit Runge–Kutta solver of Diffrax with one "
                f"Butcher tableau, such as `diffrax.Tsit5()`; got {type(self.method).__name__}."
            )

    @property
    def tableau(self) -> dfx.ButcherTableau:
        return self.method.tableau

    @property
    def interpolation_cls(self):
        return self.method.interpolation_cls

    def order(self, terms):
        return self.method.order(terms)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def init(self, terms, t0, t1, y0, args) -> PyTree | None:
        # An FSAL method carries f(t, y) at the start of the step from one step to the
        # next (the last stage of an accepted step); its first value costs one evaluation.
        del t1
        return self.func(terms, t0, y0, args) if self.tableau.fsal else None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        tab = self.tableau
        control = terms.contr(t0, t1)
        h = t1 - t0
        nodes = (0.0,) + tuple(float(c) for c in tab.c)

        def combine(weights, ks, base=None):
            """`base + Σ_i weights[i]·ks[i]` leaf by leaf, skipping zero weights (no
            `base`: the sum alone)."""

            def leaf(start, stages):
                total = start
                for w, k in zip(weights, stages):
                    if w != 0:
                        total = float(w) * k if total is None else total + float(w) * k
                return jnp.zeros_like(stages[0]) if total is None else total

            if base is None:
                return jax.tree_util.tree_map(lambda *stages: leaf(None, stages), *ks)
            return jax.tree_util.tree_map(lambda b, *stages: leaf(b, stages), base, *ks)

        if tab.fsal:
            f0 = solver_state
            if made_jump is not False:
                # After a jump the carried value belongs to the old state. The test is
                # unbatched, so under `vmap` the re-evaluation runs only if some seed jumped.
                f0 = jax.lax.cond(
                    eqxi.unvmap_any(made_jump),
                    lambda: self.func(terms, t0, y0, args),
                    lambda: f0,
                )
            k0 = terms.prod(f0, control)
        else:
            k0 = terms.vf_prod(t0, y0, args, control)
        ks = [k0]
        f_last = None
        for i, row in enumerate(tab.a_lower, start=1):
            stage = combine(np.asarray(row), ks, base=y0)
            f_last = terms.vf(t0 + nodes[i] * h, stage, args)
            ks.append(terms.prod(f_last, control))
        num_stages = len(ks)
        b_sol = np.asarray(tab.b_sol)
        b_error = np.asarray(tab.b_error)
        if tab.ssal:
            y1 = stage
        else:
            y1 = combine(b_sol[:num_stages], ks, base=y0)
        y_error = combine(b_error[:num_stages], ks)
        dense_info = dict(y0=y0, y1=y1, k=jax.tree_util.tree_map(lambda *k: jnp.stack(k), *ks))
        # FSAL: the last stage is f(t1, y1), the next step's first.
        new_state = f_last if tab.fsal else None
        return y1, y_error, dense_info, new_state, dfx.RESULTS.successful
