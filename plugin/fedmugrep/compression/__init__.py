"""fedmugrep.compression"""
