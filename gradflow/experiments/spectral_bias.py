"""The spectral bias of shallow networks: Sahs, Pyle, Anselmi & Patel, *The spectral bias
of shallow neural network learning is shaped by the choice of non-linearity*
([arXiv:2503.10587](https://arxiv.org/abs/2503.10587)).

A configuration (`SpectralBiasConfig`) → `spectra` (φ and ρ_φ of every activation: the
paper's Figure 1), `frozen_regime` and `lazy_regime` (the flow against the kernel's
minimum-norm interpolant as the width grows; `fit_rate`), `designs` (activations built
from a target ρ by `gradflow.radon.design_activation`) → labelled `xarray.Dataset`s →
figures. `reproduce` does all of it, each figure beside its numbers; so does
`gradflow reproduce spectral-bias [--quick]`.
"""

from ._spectral_bias.config import (
    ACTIVATIONS as ACTIVATIONS,
    bandpass_target as bandpass_target,
    power_law_target as power_law_target,
    quick_config as quick_config,
    SpectralBiasConfig as SpectralBiasConfig,
)
from ._spectral_bias.figures import (
    design_figure as design_figure,
    ntk_figure as ntk_figure,
    spectra_figure as spectra_figure,
    spline_figure as spline_figure,
    width_gap_figure as width_gap_figure,
)
from ._spectral_bias.reproduce import reproduce as reproduce, summary_text as summary_text
from ._spectral_bias.run import (
    centred_nets as centred_nets,
    cubic_residuals as cubic_residuals,
    designed_activation as designed_activation,
    designs as designs,
    fit_rate as fit_rate,
    frozen_regime as frozen_regime,
    lazy_regime as lazy_regime,
    spectra as spectra,
    tangent_features as tangent_features,
)
