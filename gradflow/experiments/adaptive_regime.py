"""The adaptive regime of shallow networks: Sahs, Pyle, Anselmi & Patel, *The spectral bias
of shallow neural network learning is shaped by the choice of non-linearity*
([arXiv:2503.10587](https://arxiv.org/abs/2503.10587)), its adaptive part: with small init
and every weight trained, breakplanes gather into clusters and data points pin them.

A configuration (`AdaptiveRegimeConfig`) → `example` (the 3-point 2-D example and its 1-D
analogue: one `gradflow.flow_ensemble` of the exact Filippov flow, breakplanes in RS
coordinates at the save times, every crossing and pin from the event log) and `sweep`
(init scale × width × activation) → labelled `xarray.Dataset`s of clusters and pins →
`gd_check` (gradient descent against the pins), `loss_slices` (valley, ridge and crease
about a pin) → figures. `reproduce` does all of it; so does
`gradflow reproduce adaptive-regime [--quick]`. The measures (`clusters`, `pins_at`,
`pins_from_state`, ...) are plain NumPy functions of a run's arrays.
"""

from ._adaptive_regime.config import (
    AdaptiveRegimeConfig as AdaptiveRegimeConfig,
    quick_config as quick_config,
)
from ._adaptive_regime.figures import (
    example_figure as example_figure,
    gd_figure as gd_figure,
    slice_figure as slice_figure,
    statistics_figure as statistics_figure,
    sweep_figure as sweep_figure,
)
from ._adaptive_regime.measures import (
    breakplane_distance as breakplane_distance,
    cluster_counts as cluster_counts,
    cluster_sizes as cluster_sizes,
    clusters as clusters,
    crease_kind as crease_kind,
    data_ball as data_ball,
    formation_times as formation_times,
    grown as grown,
    grown_alignment as grown_alignment,
    neuron_sizes as neuron_sizes,
    pin_durations as pin_durations,
    pin_table as pin_table,
    pins_at as pins_at,
    pins_from_state as pins_from_state,
    pins_over_time as pins_over_time,
    point_distances as point_distances,
    probe_points as probe_points,
    response_alignment as response_alignment,
    unit_responses as unit_responses,
)
from ._adaptive_regime.reproduce import reproduce as reproduce, summary_text as summary_text
from ._adaptive_regime.run import (
    ensemble_dataset as ensemble_dataset,
    example as example,
    gd_check as gd_check,
    initial_nets as initial_nets,
    is_kinked as is_kinked,
    loss_slices as loss_slices,
    pinned_configuration as pinned_configuration,
    run_ensemble as run_ensemble,
    slice_loss as slice_loss,
    sweep as sweep,
)
