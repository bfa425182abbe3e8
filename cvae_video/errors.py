"""Errors a user can act on. Console scripts print them as one line and exit non-zero."""


class CvaeError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(CvaeError):
    """A config file or flag is wrong (unknown key, wrong type, impossible value)."""


class DataError(CvaeError):
    """A data set file is missing or malformed; the message names the file."""


class CheckpointError(CvaeError):
    """A checkpoint cannot be loaded or does not match the model asked for."""
