"""Single-neuron target recovery: Zhao, Bai & Zhang, *Disentangle sample size and
initialization effect on perfect generalization for single-neuron target*
([arXiv:2405.13787](https://arxiv.org/abs/2405.13787)).

A configuration (`SingleNeuronConfig`) → `run` / `run_many` (the gradient flow of every
point of the grid n × ε × seed through `gradflow.flow_ensemble`) → a labelled
`xarray.Dataset` of measures → summaries (the numbers) → figures. `reproduce` does all of
it for every figure of the paper; so does `gradflow reproduce single-neuron [--quick]`.
"""

from ._single_neuron.config import SingleNeuronConfig as SingleNeuronConfig
from ._single_neuron.figures import (
    basin_figure as basin_figure,
    boundary_figure as boundary_figure,
    gaussian_tiny_init_figure as gaussian_tiny_init_figure,
    generalisation_error_figure as generalisation_error_figure,
    thresholds_figure as thresholds_figure,
    time_shift_figure as time_shift_figure,
    wide_rational_figure as wide_rational_figure,
)
from ._single_neuron.measures import (
    basin_boundaries as basin_boundaries,
    end_point_class as end_point_class,
    escape_time as escape_time,
    generalisation_error as generalisation_error,
    growing_mode as growing_mode,
    growth_rate as growth_rate,
    held_out_set as held_out_set,
    misplaced_runs as misplaced_runs,
    neuron_outputs as neuron_outputs,
    normalised_imbalance as normalised_imbalance,
    NOT_RECOVERED as NOT_RECOVERED,
    onset_of_class as onset_of_class,
    optimistic_sample_size as optimistic_sample_size,
    SHARED as SHARED,
    tangent_rank as tangent_rank,
    target_point as target_point,
    threshold_size as threshold_size,
    time_shift_fit as time_shift_fit,
)
from ._single_neuron.reproduce import (
    basin_summary as basin_summary,
    basin_table as basin_table,
    boundary_summary as boundary_summary,
    error_table as error_table,
    mode_ratio_grid as mode_ratio_grid,
    reproduce as reproduce,
    Reproduction as Reproduction,
    reproduction as reproduction,
    run_table as run_table,
    time_shift_summary as time_shift_summary,
)
from ._single_neuron.run import (
    growing_mode_net as growing_mode_net,
    initial_net as initial_net,
    run as run,
    run_many as run_many,
)
