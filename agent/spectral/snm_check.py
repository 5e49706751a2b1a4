"""Special nuclear material is named only on its own lines, and never from a spectrum not understood.

Why: naming U-235 or Pu-239 sends a response team; ANSI N42.34 asks that SNM identification rest
on the material's characteristic lines. A full-spectrum fit can reach for an SNM template to soak
up the misfit of another source's template (a Cs-137 backscatter shoulder "is" Pu-239; a Th-232
chain with a slightly wrong continuum "is" U-235), or to stand in for a source the library does
not hold (Yb-169's lines near Np-237's). So the identifier (agent.spectral.identify) names an SNM
only when

* one of its distinctive lines stands out as a net line over the best model without it, at
  ``IdentifierSettings.snm_min_z`` with the model's relative uncertainty counted
  (:func:`agent.spectral.residual_lines.own_line_seen`), whether it is alone or not; and
* the final model leaves no unexplained line (the "unknown" test): lines the library cannot
  explain mean the spectrum is not understood, and the outcome is "unknown", not SNM.

An SNM whose every line coincides with another source's cannot be confirmed and is not named:
a wrong SNM alarm costs more than a late one (the operator still sees "unknown" or the other source).
"""

from __future__ import annotations

SNM_NAMES = frozenset({"U-233", "U-235", "Pu-239", "Np-237"})
