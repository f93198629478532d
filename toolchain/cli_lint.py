"""CLI commands: lint."""
COMMANDS: list = []
