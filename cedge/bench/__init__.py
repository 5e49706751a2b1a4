"""Benchmarks, one module each: ``spectra`` (simulated identification, dose, anomalies), ``rase``
(identification on real base spectra, RASE-style), ``camera`` (vital signs on synthetic clips).

Every benchmark takes fixed seeds (tuning seeds kept apart), prints one JSON object with ``--json``
and writes figures with ``--out``; ``cedge bench NAME`` runs it.
"""
