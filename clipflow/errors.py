"""User-facing errors: each carries one line that says what went wrong and what to do.

The CLIs catch :class:`ClipflowError` and print its message without a traceback, then exit
with a non-zero code. Library code raises the most specific subclass.
"""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first non-empty line of ``err``'s message (its type name when it has none), cut to
    ``limit`` characters: the reason part of a one-line error."""
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = text or type(err).__name__
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


class ClipflowError(Exception):
    """Base class of every error a user should see as one clear line."""

    exit_code = 2


class DataError(ClipflowError):
    """A missing, empty or mis-laid data folder."""


class UnreadableImageError(ClipflowError):
    """One image file could not be decoded; callers skip it and record the reason."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class CheckpointError(ClipflowError):
    """A checkpoint that is missing, corrupt, of another version or of another feature size."""


class BackboneError(ClipflowError):
    """CLIP weights that cannot be found or loaded (e.g. offline without a local file)."""


class TrainingDivergedError(ClipflowError):
    """A non-finite loss or score during training."""

    exit_code = 3


class SomeFilesUnreadableError(ClipflowError):
    """A batch finished, but some inputs could not be scored (they are listed with a reason)."""

    exit_code = 4


class DiskFullError(ClipflowError, OSError):
    """A write that ran out of room: a full disk, a full quota, or a file-size limit (ulimit -f).

    Its message names the file, what to free and what was left as it was. It is an OSError too
    (with the original errno), so code that carries on without a file it cannot write (the
    feature cache) still catches it as before.
    """

    def __init__(
        self,
        message: str,
        errno: int | None = None,
        filename: str | None = None,
        reason: str | None = None,
    ):
        # strerror keeps the system's short reason ("No space left on device") for callers
        # that print only that; str() is the whole one-line message.
        OSError.__init__(self, errno, reason or message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message
