"""fedmugrep.models"""
