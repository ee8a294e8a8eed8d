"""fedmugrep.federation"""
