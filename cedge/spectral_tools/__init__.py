"""Offline tools that fit the agent's embedded spectral data (they may import the simulator, hal_sim).

* ``fit_detector_response``: physics response tables (``agent/spectral/data/detector_response.csv``)
  from the simulator's monoenergetic responses;
* ``fit_dose_weighting``: G(E) spectrum-to-dose functions (``data/dose_weighting.csv``);
* ``fit_presets``: detector presets fitted to measured spectra (``data/detector_presets.yaml``) and
  their figures and figures of merit (docs/detector_presets.md).

Kept out of ``agent`` so the on-device package never imports the simulator.
"""
