"""fedmugrep: federated multi-granular real-estate appraisal (fed-MugRep) for PySyft.

See ``DESIGN.md`` (shared) for the capabilities C1..C9 and the flow of a training round.
"""

from __future__ import annotations

__version__ = "0.1.0"

from fedmugrep.errors import FedMugRepError

__all__ = ["FedMugRepError", "__version__"]
