"""Error types. Every message names the offending input and says how to fix it."""


class OneStoryError(ValueError):
    """Base class for user-facing errors raised by the OneStory core."""


class ShapeError(OneStoryError):
    """A tensor has the wrong rank, channel count or spatial size."""


class FileFormatError(OneStoryError):
    """A story or adapter file is truncated, foreign or of an unknown version."""


class AdapterMismatch(OneStoryError):
    """An adapter's metadata does not match the backbone it is applied to."""


class Interrupted(OneStoryError):
    """Sampling was stopped by the caller's interrupt hook; no state was changed."""
