"""anyclaude: run Claude Code on a model on your own machine."""

__version__ = "0.1.0"
