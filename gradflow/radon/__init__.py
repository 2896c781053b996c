"""The Radon toolkit: RS coordinates, spectral penalty factors, penalty kernels, Radon-domain
penalties and minimum-norm interpolants (Sahs et al., "The spectral bias of shallow neural
network learning is shaped by the choice of non-linearity", arXiv 2503.10587).

Pure functions of activations, data and networks; nothing here imports the drivers.
"""

from ._density import (
    AbstractDensity as AbstractDensity,
    AbstractOffsets as AbstractOffsets,
    GaussianOffsets as GaussianOffsets,
    GaussianWeights as GaussianWeights,
    RadonDensity as RadonDensity,
    UniformOffsets as UniformOffsets,
)
from ._design import (
    design_activation as design_activation,
    design_on_grid as design_on_grid,
    DesignedActivation as DesignedActivation,
)
from ._interpolant import (
    minimum_norm_interpolant as minimum_norm_interpolant,
    MinimumNormInterpolant as MinimumNormInterpolant,
)
from ._kernel import Kernel as Kernel, kernel_matrix as kernel_matrix
from ._penalty import network_penalty as network_penalty, radon_tv_norm as radon_tv_norm
from ._spectrum import (
    fourier_magnitude as fourier_magnitude,
    numerical_fourier_magnitude as numerical_fourier_magnitude,
    register_spectrum as register_spectrum,
    spectral_penalty as spectral_penalty,
    Spectrum as Spectrum,
)
from ._spline import (
    breakplane_offsets as breakplane_offsets,
    is_homogeneous as is_homogeneous,
    network_of as network_of,
    radon_spline as radon_spline,
    RadonSpline as RadonSpline,
    register_homogeneous as register_homogeneous,
    rs_observables as rs_observables,
)
from ._transform import (
    radon_transform as radon_transform,
    seminorm_constant as seminorm_constant,
    spectral_seminorm as spectral_seminorm,
    sphere_area as sphere_area,
)
