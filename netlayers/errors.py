"""The errors a user of netlayers sees.

Every mistake a user can make (a config typo, a bad data file, a label out of range, a loss
that became NaN) is raised as a :class:`NetlayersError` whose message is one line naming where
the problem is (file, line, layer, field) and what was expected. The command line prints that
line and exits non-zero; it never shows a traceback for these.
"""


class NetlayersError(Exception):
    """Base class: a user-facing error with an optional location.

    ``str(err)`` gives ``file:line: layer 'conv1': field 'kernel_size': <message>``, leaving
    out the parts that are not known.
    """

    def __init__(self, message, *, file=None, line=None, layer=None, field=None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.layer = layer
        self.field = field

    def located(self, *, file=None, line=None, layer=None, field=None):
        """Fill in location parts that are still unknown; returns self for re-raising. A line
        is taken only with its own file: an error that already names another file (a data
        file) keeps that file and gets no line from the config."""
        if not self.file:
            self.file = file
        if self.file == file:
            self.line = self.line or line
        self.layer = self.layer or layer
        self.field = self.field or field
        return self

    def __str__(self):
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        if self.layer:
            parts.append(f"layer '{self.layer}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(str(self.message))
        return one_line(": ".join(parts))


def one_line(text):
    """``text`` with every control or line-breaking character shown escaped, as repr shows it
    (NUL as \\x00, a newline as \\n, ESC as \\x1b), so a message is always one line and
    cannot drive the terminal, whatever names and values a config holds."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in text)


class ConfigError(NetlayersError):
    """A net or solver definition is wrong: found before anything runs, or at layer setup."""


class DataError(NetlayersError):
    """A data source is missing, truncated, of the wrong format, or holds impossible values."""


class TrainingError(NetlayersError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class NetlayersWarning(UserWarning):
    """Something in a config is accepted but has no effect here (e.g. ``engine: CUDNN``)."""
