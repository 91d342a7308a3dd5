"""Exit codes of the `teaprint` command and the error that means "used wrongly".

Its own module so that every command's module (`pipeline.cli`,
`pipeline.evaluation.cli`, ...) can raise `UsageError` without importing the
command line that dispatches to it.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command used wrongly (a missing file, an ambiguous id, a bad option); exits 2."""
