"""Source localization from moving-detector count data: Poisson ML in a yard model.

Public API (used by :mod:`controller.dispatch`, ``cedge localize`` and ``cedge bench localize``):

* :class:`MeasurementSet` - validated input rows (:mod:`.measurements`);
* :class:`Site`, :func:`load_site` - container columns that constrain and attenuate (:mod:`.site`);
* :func:`locate` - 0/1/2 sources with the no-source test, estimates and 95 % regions (:mod:`.fit`);
* :func:`localize` - the best one-source fit (legacy entry point);
* :class:`IncrementalLocalizer` - the estimate updated as samples arrive (:mod:`.incremental`);
* :func:`crlb_position` - the Cramer-Rao bound for a geometry (:mod:`.crlb`).

The model, its optimiser and the search are described in :mod:`.model`, :mod:`.optimizer`,
:mod:`.search` and :mod:`.fit`; docs/localization.md has the method and the measured numbers.
"""

from controller.localization.crlb import crlb_position
from controller.localization.fit import localize, locate
from controller.localization.incremental import IncrementalLocalizer
from controller.localization.measurements import MeasurementSet
from controller.localization.params import LocalizationParams
from controller.localization.result import Candidate, LocalizationResult, SourceEstimate
from controller.localization.site import Site, SiteError, load_site, site_from_dict

__all__ = [
    "Candidate",
    "IncrementalLocalizer",
    "LocalizationParams",
    "LocalizationResult",
    "MeasurementSet",
    "Site",
    "SiteError",
    "SourceEstimate",
    "crlb_position",
    "load_site",
    "locate",
    "localize",
    "site_from_dict",
]
