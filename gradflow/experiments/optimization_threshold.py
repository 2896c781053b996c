"""Optimization threshold and early alignment: Boursier & Flammarion, *Simplicity bias and
optimization threshold in two-layer ReLU networks*
([arXiv:2410.02348](https://arxiv.org/abs/2410.02348)).

A configuration (`ThresholdConfig`) → `run_block` (the exact ReLU flows of every
(sample size, seed) of one dimension and width through `gradflow.flow_ensemble`,
checkpointed by chunk) → a labelled `xarray.Dataset` of measures (train and population
loss, the least-squares fit and the distance to it, interpolation, the extremal
directions of $G_n$ and the neurons' alignment with them, clusters) → the threshold $n^*$
per dimension with a bootstrap, its growth law, figures. `reproduce` does all of it; so
does `gradflow reproduce optimization-threshold [--quick]`.
"""

from ._optimization_threshold.config import (
    quick_config as quick_config,
    ThresholdConfig as ThresholdConfig,
)
from ._optimization_threshold.figures import (
    alignment_figure as alignment_figure,
    directions_figure as directions_figure,
    loss_figure as loss_figure,
    methods_figure as methods_figure,
    threshold_figure as threshold_figure,
    threshold_growth_figure as threshold_growth_figure,
)
from ._optimization_threshold.measures import (
    bootstrap_threshold as bootstrap_threshold,
    cosines as cosines,
    count_clusters as count_clusters,
    direction_field as direction_field,
    extremal_directions as extremal_directions,
    fit_power_law as fit_power_law,
    function_distance as function_distance,
    interpolating_fraction_crossing as interpolating_fraction_crossing,
    is_interpolating as is_interpolating,
    ols_fit as ols_fit,
    relu_kernel as relu_kernel,
    relu_net as relu_net,
    sample_inputs as sample_inputs,
    second_moment as second_moment,
    train_mse as train_mse,
)
from ._optimization_threshold.reproduce import (
    reproduce as reproduce,
    run_table as run_table,
    summary_text as summary_text,
)
from ._optimization_threshold.run import (
    blocks as blocks,
    compare_methods as compare_methods,
    initial_nets as initial_nets,
    measure_runs as measure_runs,
    run_all as run_all,
    run_group as run_group,
    threshold as threshold,
)
