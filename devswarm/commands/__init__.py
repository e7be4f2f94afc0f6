"""CLI command groups, each in its own module with a `register(app)` function."""
