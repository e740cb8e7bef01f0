"""Errors a user can fix. The CLI prints them as one line and exits 1."""


class MlmctlError(Exception):
    """A problem the user can fix: the message says what, where, and how."""


class ConfigError(MlmctlError):
    """A config file or `--set` value that is malformed, unknown or out of range."""


class InputError(MlmctlError):
    """An input directory or file that is missing, unfinished or damaged."""


class Interrupted(MlmctlError):
    """A run stopped on request (SIGINT/SIGTERM) after saving its state; `exit_code` is 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
