"""`python -m launcher` runs the `anyclaude` command."""

from launcher.cli import main

main()
