"""fedmugrep.graphs"""
