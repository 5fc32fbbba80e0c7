"""The command line: one table from command to function (``main``), the options the commands share declared
once (``args``), one module per family of commands. It calls the Python API (``gradwise.api``), nothing more."""

from gradwise.cli.commands import main

__all__ = ["main"]
