"""The one exception type of the data layer, so callers can catch bad data without catching bugs."""


class DatasetError(ValueError):
    """Bad or missing data: the message names the folder, file (and line) and what is wrong."""
