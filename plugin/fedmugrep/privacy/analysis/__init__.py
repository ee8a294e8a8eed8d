"""fedmugrep.privacy.analysis: pure functions — RDP curves, RDP→(ε, δ), composition of events."""
