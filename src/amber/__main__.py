"""`python -m amber` is the `amber` command."""

from amber.cli.main import run

run()
