"""Output folders: checking they can be written, and the Solver's handling of earlier runs
and of temporary files a killed snapshot left (see base.py's docstring, "Run folders")."""

import os
import re
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..io import create_temporary, remove_leftover_temporaries


def check_writable_folder(folder, what="output folder"):
    """Create ``folder`` (and its parents) and write a temporary file in it: a ConfigError
    naming it when that fails (a file in the way, no permission, a read-only disk, a parent
    that cannot even be looked into)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"cannot write into the {what} {folder}: {os_reason(err, folder)}") from None


def os_reason(err, path):
    """An OSError about ``path`` in words: which part of the path is a file, else the system's
    own reason (e.g. 'Permission denied', 'No space left on device')."""
    path = Path(path)
    blocker = next((p for p in (path, *path.parents) if _is_file(p)), None)
    if blocker == path:
        return "it is a file, not a folder"
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    return err.strerror or str(err)


def _is_file(path):
    """Whether ``path`` exists and is not a folder; False when that cannot even be found out
    (a parent folder without search permission), so diagnosing never raises."""
    try:
        return path.exists() and not path.is_dir()
    except OSError:
        return False


class RunFolders:
    """The Solver's methods about its output folders (mixed into :class:`~.base.Solver`; they
    read ``output_dir``, ``snapshot_paths``, ``overwrite``, ``iter``, ``param`` and ``file``)."""

    def prepare_folders(self):
        """Check the folders and the snapshot file names, refuse (or with ``overwrite``, clear)
        an earlier run in the output folder when this run is fresh, remove leftover temporary
        files. Returns the log lines to show."""
        folders = {Path(self.output_dir): "output folder"}
        folders.setdefault(self.snapshot_paths()[0].parent, "snapshot folder")
        for folder, what in folders.items():
            check_writable_folder(folder, what)
        notes = []
        if self.iter == 0 and self.last_snapshot is None:
            if self.overwrite:
                notes += self._remove_earlier_run()
            else:
                self.check_output_reuse()
        self._check_snapshot_names()
        return notes + self._remove_leftovers()

    def _snapshot_files(self):
        """(folder, regex matching this solver's snapshot file names; group 1: the iteration)."""
        weights = self.snapshot_paths(0)[0]
        stem = weights.name[: -len("_iter_0.weights.npz")]
        return weights.parent, re.escape(stem) + r"_iter_(\d+)\.(?:weights|solverstate)\.npz"

    def _earlier_run(self):
        """The snapshot files of this prefix (by iteration) and the metrics.jsonl already in
        the output folders."""
        folder, pattern = self._snapshot_files()
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except OSError:
            names = []
        matches = [m for m in map(re.compile(pattern).fullmatch, names) if m]
        found = [folder / m.group(0) for m in sorted(matches, key=lambda m: (int(m.group(1)), m.group(0)))]
        metrics = Path(self.output_dir) / "metrics.jsonl"
        return found + ([metrics] if metrics.exists() else [])

    def check_output_reuse(self):
        """Refuse, with a ConfigError naming the output folder and the ways on, to start a fresh
        run where an earlier run's snapshots (same prefix) or metrics.jsonl are (nothing is
        checked with ``overwrite``). The command line calls this before writing anything."""
        found = [] if self.overwrite else self._earlier_run()
        if not found:
            return
        listed = ", ".join(path.name for path in found[:2]) + (f" and {len(found) - 2} more" if len(found) > 2 else "")
        states = [path for path in found if path.name.endswith(".solverstate.npz")]
        resume = f"continue it (--resume {states[-1]}), " if states else ""
        raise ConfigError(
            f"already holds an earlier run ({listed}): train into another folder "
            f"(--output), {resume}or replace it (--overwrite)",
            file=str(self.output_dir),
        )

    def _remove_earlier_run(self):
        """With ``overwrite``: delete the earlier run's snapshots of this prefix and its
        metrics.jsonl. Returns the log line to show."""
        removed = self._earlier_run()
        for path in removed:
            try:
                path.unlink()
            except OSError as err:
                raise ConfigError(
                    f"cannot remove {path} of an earlier run (overwrite): {err.strerror or err}"
                ) from None
        folders = ", ".join(sorted({str(path.parent) for path in removed}))
        return [f"Removed {len(removed)} file(s) of an earlier run from {folders} (overwrite)"] if removed else []

    def _check_snapshot_names(self):
        """Create and delete a temporary file named as the last snapshot's will be (the
        longest name), so that a name the file system refuses is found before training."""
        for path in self.snapshot_paths(max(self.param.max_iter, self.iter)):
            try:
                fd, temporary = create_temporary(path)
                os.close(fd)
                os.unlink(temporary)
            except OSError as err:
                shown = path.name if len(path.name) <= 60 else f"{path.name[:57]}..."
                raise ConfigError(
                    f"snapshot files such as {shown} ({len(os.fsencode(path.name)):,} "
                    f"bytes) cannot be created in {path.parent}: "
                    f"{os_reason(err, path.parent)}",
                    file=self.file,
                    field="solver.snapshot_prefix",
                ) from None

    def _remove_leftovers(self):
        """Delete the temporary files a killed snapshot (or metrics rewrite) left; log lines."""
        folder, pattern = self._snapshot_files()
        places = {folder: pattern.replace(r"_iter_(\d+)", r"_iter_\d+")}
        metrics = r"metrics\.jsonl"
        output = Path(self.output_dir)
        places[output] = f"(?:{places[output]}|{metrics})" if output in places else metrics
        lines = []
        for place, names in places.items():
            removed = remove_leftover_temporaries(place, names)
            if removed:
                lines.append(
                    f"Removed {len(removed)} temporary file(s) left by an interrupted "
                    f"snapshot from {place} ({', '.join(p.name for p in removed[:3])}"
                    f"{', ...' if len(removed) > 3 else ''})"
                )
        return lines
