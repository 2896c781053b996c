from typing import ClassVar

import numpy as np

from .base import AbstractRosenbrock, RosenbrockTableau


def _lower(rows: list[list[float]]) -> np.ndarray:
    """A strictly lower-triangular (s, s) matrix from its rows 2..s."""
    s = len(rows) + 1
    out = np.zeros((s, s))
    for i, row in enumerate(rows, start=1):
        out[i, : len(row)] = row
    return out


def _stiffly_accurate(
    *,
    order: int,
    gamma: float,
    a: list[list[float]],
    C: list[list[float]],
    c: list[float],
    d: list[float],
    dense: list[list[float]],
) -> RosenbrockTableau:
    """A RODAS-type tableau: `a` holds rows 2..m of the stage matrix; the remaining
    stages each add the previous stage's increment, $U_{i+1} = U_i + k_i$, the embedded
    solution is the last stage's argument and the solution adds the last increment, so
    the error estimate is the last increment itself. Stages past `c`, `d` and `dense`
    have node 1, no time-derivative term, and no dense-output weight."""
    s = len(C) + 1
    a_full = np.zeros((s, s))
    for i, row in enumerate(a, start=1):
        a_full[i, : len(row)] = row
    for i in range(len(a) + 1, s):
        a_full[i, :i] = a_full[i - 1, :i]
        a_full[i, i - 1] += 1.0
    b_embedded = a_full[s - 1].copy()
    b = b_embedded.copy()
    b[s - 1] += 1.0

    def pad(values, length, fill=0.0):
        return np.concatenate([np.asarray(values, float), np.full(length - len(values), fill)])

    return RosenbrockTableau(
        order=order,
        gamma=gamma,
        a=a_full,
        C=_lower(C),
        b=b,
        b_embedded=b_embedded,
        c=pad(c, s - 1, fill=1.0),
        d=pad(d, s),
        dense=np.stack([pad(row, s) for row in dense]),
    )


# Rodas5P: G. Steinebach, "Construction of Rosenbrock–Wanner method Rodas5P and numerical
# benchmarks within the Julia Differential Equations package", BIT Numer. Math. 63, 27
# (2023). Coefficients as published there and in OrdinaryDiffEq.jl (`Rodas5PTableau`), in
# the transformed form of Hairer & Wanner; order 5 with an embedded order-4 solution, both
# stiffly accurate and L-stable, with a 4th-order dense output.
_RODAS5P = _stiffly_accurate(
    order=5,
    gamma=0.21193756319429014,
    a=[
        [3.0],
        [2.849394379747939, 0.45842242204463923],
        [-6.954028509809101, 2.489845061869568, -10.358996098473584],
        [2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641],
        [
            -7.502846399306121,
            2.561846144803919,
            -11.627539656261098,
            -0.18268767659942256,
            0.030198172008377946,
        ],
    ],
    C=[
        [-14.155112264123755],
        [-17.97296035885952, -2.859693295451294],
        [147.12150275711716, -1.41221402718213, 71.68940251302358],
        [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
        [
            24.854864614690072,
            -3.0009227002832186,
            47.4931110020768,
            5.5814197821558125,
            -0.6610691825249471,
        ],
        [
            30.91273214028599,
            -3.1208243349937974,
            77.79954646070892,
            34.28646028294783,
            -19.097331116725623,
            -28.087943162872662,
        ],
        [
            37.80277123390563,
            -3.2571969029072276,
            112.26918849496327,
            66.9347231244047,
            -40.06618937091002,
            -54.66780262877968,
            -9.48861652309627,
        ],
    ],
    c=[0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664],
    d=[
        0.21193756319429014,
        -0.42387512638858027,
        -0.3384627126235924,
        1.8046452872882734,
        2.325825639765069,
    ],
    dense=[
        [
            25.948786856663858,
            -2.5579724845846235,
            10.433815404888879,
            -2.3679251022685204,
            0.524948541321073,
            1.1241088310450404,
            0.4272876194431874,
            -0.17202221070155493,
        ],
        [
            -9.91568850695171,
            -0.9689944594115154,
            3.0438037242978453,
            -24.495224566215796,
            20.176138334709044,
            15.98066361424651,
            -6.789040303419874,
            -6.710236069923372,
        ],
        [
            11.419903575922262,
            2.8879645146136994,
            72.92137995996029,
            80.12511834622643,
            -52.072871366152654,
            -59.78993625266729,
            -0.15582684282751913,
            4.883087185713722,
        ],
    ],
)

# Rodas4: E. Hairer and G. Wanner, Solving Ordinary Differential Equations II, 2nd ed.,
# Springer (1996), §VI.4, Table 4.2 ("RODAS"), transformed coefficients as in their code
# RODAS (ROCOEF, METH=1). Order 4 with an embedded order-3 solution, stiffly accurate and
# L-stable, with a 3rd-order dense output.
_RODAS4 = _stiffly_accurate(
    order=4,
    gamma=0.25,
    a=[
        [1.544],
        [0.9466785280815826, 0.2557011698983284],
        [3.314825187068521, 2.896124015972201, 0.9986419139977817],
        [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.687886036105895],
    ],
    C=[
        [-5.6688],
        [-2.430093356833875, -0.2063599157091915],
        [-0.1073529058151375, -9.594562251023355, -20.47028614809616],
        [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.7089089320616],
        [
            8.083246795921522,
            -7.981132988064893,
            -31.52159432874371,
            16.31930543123136,
            -6.058818238834054,
        ],
    ],
    c=[0.386, 0.21, 0.63],
    d=[0.25, -0.1043, 0.1035, -0.03620000000000023],
    dense=[
        [
            10.12623508344586,
            -7.487995877610167,
            -34.80091861555747,
            -7.992771707568823,
            1.025137723295662,
        ],
        [
            -0.6762803392801253,
            6.087714651680015,
            16.43084320892478,
            24.76722511418386,
            -6.594389125716872,
        ],
    ],
)


class Rodas5P(AbstractRosenbrock):
    """Rodas5P (Steinebach 2023): an 8-stage Rosenbrock method of order 5 with an
    embedded order-4 error estimate, stiffly accurate and L-stable, with a 4th-order
    dense output, using the exact Jacobian.

    For gradient flows that become stiff: after a network has fitted its data the
    Hessian has eigenvalues of order one next to directions that hardly move, and an
    explicit method is held to steps of the size of its stability limit for ever, while
    an L-stable method takes steps that grow with the time scale of the slow motion.

    ```python
    sol = gf.gradient_flow(net, x, y, t1=1e8, solver=gf.Rodas5P())
    ```

    Per step: 8 evaluations of the vector field, one Jacobian by forward-mode autodiff,
    one LU factorisation of a $P \\times P$ matrix (with $P$ the size of the state).
    """

    tableau: ClassVar[RosenbrockTableau] = _RODAS5P


class Rodas4(AbstractRosenbrock):
    """Rodas4 (Hairer & Wanner): a 6-stage Rosenbrock method of order 4 with an
    embedded order-3 error estimate, stiffly accurate and L-stable, with a 3rd-order
    dense output, using the exact Jacobian. Per step: 6 evaluations of the vector field,
    one Jacobian and one LU factorisation. See `Rodas5P`, usually the better choice at
    tight tolerances."""

    tableau: ClassVar[RosenbrockTableau] = _RODAS4
