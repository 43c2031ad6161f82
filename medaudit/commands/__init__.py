"""One module per command group; ``medaudit.cli`` attaches them to the app."""
