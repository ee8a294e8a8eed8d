"""fedmugrep.commands"""
