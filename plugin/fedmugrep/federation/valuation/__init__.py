"""Valuation (C7): price distributions for properties from the trained fed-MugRep model.

Two ways to value a property:

* :class:`ValuationModel` — the *exported* model: model 1's state (its sigma calibration
  included), the released region representations ``z`` and the public artefacts. The data
  scientist values properties on their own machine, optionally with their own earlier sales
  (``history``) as event-graph neighbours. **This costs no privacy**: every part of the model is
  a DP release or public (model 1 = noised aggregates of clipped gradients, ``z`` = model 2's
  output on noised intra-region sums, encoders fitted on mocks), and the caller's own
  properties and sales are not anyone else's private data; valuing with it is post-processing
  (Dwork & Roth 2014, Prop. 2.1).
* :meth:`TransactionParty.appraise <fedmugrep.federation.parties.TransactionParty.appraise>` —
  *remote* appraisal on a transaction datasite with its private sales as neighbours, built on
  :class:`PrivateAppraisal` here: the released medians are noised and charged to the
  datasite's ledger (the privacy argument is in :class:`PrivateAppraisal`).

Neighbours follow the training graph's rule (:class:`~fedmugrep.training.prepare.GraphConfig`):
with ``rule="recent"`` (the federation's) a property's neighbours are the ``K`` most recent
earlier sales of its community, with ``rule="greedy"`` the closest ones with free slots (both
from :func:`~fedmugrep.graphs.event.build_query_edges`). Either way a property never sees a
sale of its own date or later.

The package: ``inputs`` (reading and checking properties and sales), ``predict`` (neighbours and
model 1's price distribution), ``model`` (:class:`ValuationModel`), ``private``
(:class:`PrivateAppraisal` and its bounds).
"""

from __future__ import annotations

from fedmugrep.federation.valuation.inputs import (
    MAX_PRICE,
    MAX_PROFILE_Z,
    PRICE_FACTOR,
    load_history,
    load_properties,
    validate_properties,
)
from fedmugrep.federation.valuation.model import VALUATION_SCHEMA, ValuationModel
from fedmugrep.federation.valuation.predict import OUTPUT_COLUMNS, max_influence
from fedmugrep.federation.valuation.private import (
    APPRAISAL_MECHANISM,
    AppraisalBounds,
    PrivateAppraisal,
)

__all__ = [
    "APPRAISAL_MECHANISM",
    "MAX_PRICE",
    "MAX_PROFILE_Z",
    "OUTPUT_COLUMNS",
    "PRICE_FACTOR",
    "VALUATION_SCHEMA",
    "AppraisalBounds",
    "PrivateAppraisal",
    "ValuationModel",
    "load_history",
    "load_properties",
    "max_influence",
    "validate_properties",
]
