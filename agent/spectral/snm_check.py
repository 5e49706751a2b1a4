"""Special nuclear material is named only on its own lines.

Why: naming U-235 or Pu-239 sends a response team; ANSI N42.34 asks that SNM identification rest
on the material's characteristic lines. A full-spectrum fit can reach for an SNM template to soak
up the misfit of another source's template (a Cs-137 backscatter shoulder "is" Pu-239; a Th-232
chain with a slightly wrong continuum "is" U-235). So an SNM candidate must show, in the spectrum
*minus the best model without it*, a net line at one of its distinctive lines (strong lines no
other reported nuclide has within 1.5 FWHM), at ``min_z`` with the model's relative uncertainty
counted (agent.spectral.residual_lines). An SNM whose every line coincides with another source's
cannot be confirmed this way and is not named: a wrong SNM alarm costs more than a late one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.spectral.detector import DetectorModel
from agent.spectral.library import NuclideLibrary
from agent.spectral.line_check import distinctive_lines_kev
from agent.spectral.residual_lines import line_z_at

SNM_NAMES = frozenset({"U-233", "U-235", "Pu-239", "Np-237"})


def snm_confirmed(name: str, others: Sequence[str], counts_binned: np.ndarray, mu_without: np.ndarray,
                  centers_kev: np.ndarray, library: NuclideLibrary, model: DetectorModel, rel_sigma: float,
                  min_z: float, e_min_kev: float, e_max_kev: float) -> bool:
    """True when one of ``name``'s distinctive lines stands out over the model without it."""
    lines = distinctive_lines_kev(name, list(others), library, model, e_min_kev, e_max_kev,
                                  min_rel_yield=0.1, separation_fwhm=1.5)
    if lines.size == 0:
        return False
    return bool(np.any(line_z_at(counts_binned, mu_without, centers_kev, rel_sigma, lines) >= min_z))
