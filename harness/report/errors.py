"""The one error the report raises for input it cannot use: one line, meant for the terminal."""


class BadInput(Exception):
    """A results.json, a baseline or an output directory the report cannot use; str() is the line to print."""
