"""``UserError``: the base of every error a user's input causes (a bad file, option, model name,
run directory). The command-line layer prints these as one line, ``error: ...``, and exits 2;
anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """An input the workbench refuses, with a message that says what and where."""
