"""fedmugrep: federated multi-granular real-estate appraisal (fed-MugRep) for PySyft.

See ``docs/ARCHITECTURE.md`` for the capabilities C1..C9, the flow of a training round and the threat model.
"""

from __future__ import annotations

__version__ = "0.1.0"

from fedmugrep.errors import FedMugRepError

__all__ = ["FedMugRepError", "__version__"]
