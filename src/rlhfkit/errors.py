"""The one exception type that means "the user gave us something we cannot use".

The CLI turns it into a single line on stderr and exit status 2; every other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message names the file, line or field, what was found and what was expected."""
