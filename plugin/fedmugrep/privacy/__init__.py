"""fedmugrep.privacy"""
