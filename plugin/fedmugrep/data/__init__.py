"""fedmugrep.data"""
