"""Errors a user sees as one line (the CLI prints them without a traceback)."""


class UserError(Exception):
    """Bad input or an environment problem the user can fix; the message is one line."""
