"""User-facing errors: the CLI prints the message as one line and exits non-zero, never a traceback."""


class UserError(Exception):
    """A mistake in what the user handed us (file, option, manifest row). The message names the culprit."""


class BackendUnavailable(UserError):
    """A backend that cannot run here; the message says why and which extra to install."""
