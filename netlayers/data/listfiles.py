"""Finding the files Caffe's file-based data layers name: list files and what they list.

Caffe opens every path as it is written, so a relative path is relative to the working
folder. netlayers does the same first, then tries one more folder: the config's folder for
the files a config names (``source``, ``mean_file``), the list file's folder for the files a
list names (a list and its files can then move together).
"""

from pathlib import Path

from netlayers.errors import DataError


def locate(name, *folders):
    """The first existing file among ``name`` as written (relative to the working folder) and
    ``folder / name`` for each folder given (None entries skipped); None when there is none.
    An absolute ``name`` is looked at only as it is."""
    path = Path(name)
    candidates = [path]
    if not path.is_absolute():
        candidates += [Path(folder) / path for folder in folders if folder is not None]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name too long, a folder we may not look in: not found there
            continue
    return None


def where_looked(name, *folders):
    """Words naming the places :func:`locate` looked in, for a not-found message."""
    if Path(name).is_absolute():
        return "as written"
    places = ["the working folder"] + [str(folder) for folder in folders if folder is not None]
    return "looked in " + ", ".join(places)


def find_config_file(name, base_dir, what):
    """A file a config names (a list file, a mean file): ``name`` relative to the working
    folder, then to the config's folder ``base_dir``; a DataError saying where it looked."""
    found = locate(name, base_dir)
    if found is None:
        raise DataError(f"no such {what} '{name}' ({where_looked(name, base_dir)})")
    return found


def read_lines(path, what):
    """The lines of a text list file as ``(line number, text without the line end)``, blank
    lines left out; a DataError naming the file when it cannot be read as text."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise DataError(f"cannot read the {what}: {err.strerror or err}", file=str(path)) from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
