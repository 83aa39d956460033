"""loclab's own error types: the problems a user can cause and fix.

Every error that loclab raises on purpose for a person to read derives from :class:`LoclabError`. The command
line prints such an error as one paragraph and exits with code 2 (``loclab --debug ...`` shows the traceback
too); any other exception is a bug in loclab or in a caller and keeps its traceback.

The task-specific errors live beside the code that raises them and derive from :class:`LoclabError`:
``loclab.data.errors.DataError`` (bad input data), ``loclab.engine.checkpoint.CheckpointError``,
``loclab.engine.rundir.RunDirError``, ``loclab.engine.train.NonFiniteLossError``,
``loclab.study.ray_grid.RayMissingError``, ``loclab.export.dependencies.ExportDependencyError``,
``loclab.report.compare.NotARunError`` and ``loclab.cli.UsageError``.
:class:`ConfigError` is here, at the bottom of the layers, because config values are checked in every layer
(models, datasets, engine).
"""

from __future__ import annotations


class LoclabError(Exception):
    """A problem the user can fix (bad data, config, checkpoint, output directory...); the message says what."""


class ConfigError(LoclabError, ValueError):
    """A config value, override, recipe, preset or model name that loclab cannot use."""


class LoclabWarning(UserWarning):
    """Input loclab can use but that is probably not what was meant (an empty prediction file, coordinates that look
    normalised to [0, 1]); the message says what to check. The command line prints it as one ``loclab: warning:``
    line on stderr and carries on."""
