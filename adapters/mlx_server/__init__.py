"""The MLX backend anyclaude owns: its launcher adapter and the server itself."""
