"""``python -m integration_health`` runs the CLI."""

from .cli import main

main()
