"""fedmugrep.training"""
