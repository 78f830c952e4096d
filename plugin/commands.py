"""The commands the plugin core adds to ``fairy`` (the ``fairy.commands`` entry point group).

Kept light: the ``fairy`` command reads this module's docstrings for its help
listing; the work is imported only when a command runs.
"""

from __future__ import annotations


def timeline(argv: list[str]) -> int:
    """edit clips of an OTIO timeline through a Fairy server"""
    from .timeline import main

    return main(argv)
