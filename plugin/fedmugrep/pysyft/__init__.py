"""The PySyft adapter: datasites, their remote functions, the data scientist's proxies and the run.

``fedmugrep.federation`` holds the runtime-independent protocol (plan, artefacts, releasing
parties, coordinator, wire format); this package puts it on PySyft 0.9.5 datasites. Importing
the package itself imports nothing from PySyft; its modules that need it say so.
"""
