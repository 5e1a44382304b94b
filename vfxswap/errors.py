"""One exception type for problems the user can fix (bad input, missing files, bad options).

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its
traceback. Messages name the file or frame they are about.
"""


class VfxSwapError(Exception):
    """A user-facing error: its message is one line that names the file, frame or option."""
