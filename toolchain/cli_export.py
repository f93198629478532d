"""CLI commands: export."""
COMMANDS: list = []
