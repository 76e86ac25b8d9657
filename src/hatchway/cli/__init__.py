"""The ``hatchway`` command line (typer + rich). Thin: parse, call a flow or the SDK, print."""
