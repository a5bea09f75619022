"""YAML loading that remembers where every mapping, list and key came from.

``load_yaml(path_or_text)`` returns plain dicts and lists of subclasses :class:`LineDict` and
:class:`LineList` that carry ``line`` (1-based, where the node starts) and, for dicts,
``key_lines`` (key -> line of that key). Config checking uses them to say *where* a mistake is.
"""

import stat
from pathlib import Path

import yaml

from ..errors import ConfigError

MAX_DEPTH = 100
"""Deepest nesting of mappings and lists a config may have (real ones stay under 10)."""


class LineDict(dict):
    """A dict with ``line`` (where it starts) and ``key_lines`` (key -> line)."""

    line = None
    key_lines = None

    def line_of(self, key):
        return (self.key_lines or {}).get(key, self.line)


class LineList(list):
    """A list with ``line`` (where it starts) and ``item_lines`` (index -> line)."""

    line = None
    item_lines = None

    def line_of(self, index):
        lines = self.item_lines or []
        return lines[index] if index < len(lines) else self.line


def plain(value):
    """A deep copy of loaded data as plain dicts and lists (the line-keeping types dropped), as
    ``yaml.safe_dump`` and a changed copy need."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class _LineLoader(yaml.SafeLoader):
    depth = 0

    def compose_node(self, parent, index):
        """PyYAML composes recursively: refuse nesting past MAX_DEPTH before Python's stack ends."""
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"nested too deeply (more than {MAX_DEPTH} levels of mappings and lists)", line=mark.line + 1
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node, deep=False):
        """A scalar PyYAML cannot convert (a date such as 2020-02-30, ``!!float abc``) is a
        located error, not a ValueError from deep inside PyYAML."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as err:
            raise ConfigError(
                f"malformed YAML: cannot read the value {node.value!r}: {err}"
                if isinstance(node, yaml.ScalarNode)
                else f"malformed YAML: {err}",
                line=node.start_mark.line + 1,
            ) from None

    def construct_yaml_int(self, node):
        """An integer too long for Python's int() (over 4,300 digits) is a located error."""
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise ConfigError(
                f"an integer of {len(str(node.value))} characters is too long", line=node.start_mark.line + 1
            ) from None

    def construct_mapping(self, node, deep=False):
        mapping = LineDict()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        # Keys written in this mapping may override keys merged in with ``<<: *anchor`` (YAML's
        # merge rule); a key written twice is a mistake.
        written = {id(key_node) for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge"}
        written_keys = set()
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError("mapping keys must be plain names", line=key_node.start_mark.line + 1)
            if id(key_node) in written:
                if key in written_keys:
                    raise ConfigError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
                written_keys.add(key)
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping

    def construct_sequence(self, node, deep=False):
        seq = LineList(self.construct_object(child, deep=True) for child in node.value)
        seq.line = node.start_mark.line + 1
        seq.item_lines = [child.start_mark.line + 1 for child in node.value]
        return seq


_LineLoader.add_constructor("tag:yaml.org,2002:map", _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _LineLoader.construct_sequence)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _LineLoader.construct_yaml_int)


def load_yaml_text(text, filename="<string>"):
    """Parse YAML text; a syntax error becomes a one-line ConfigError with its line."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except ConfigError as err:
        if err.message.startswith("duplicate key"):
            err.layer = err.layer or _layer_at_line(text, err.line)
        raise err.located(file=filename) from None
    except RecursionError:  # a deep structure inside one value PyYAML builds recursively
        raise ConfigError(f"nested too deeply (more than {MAX_DEPTH} levels)", file=filename) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        problem = err.problem or err.context or "malformed YAML"
        raise ConfigError(f"malformed YAML: {problem}", file=filename, line=line) from None
    except yaml.reader.ReaderError as err:  # a control character: no mark, only a position
        character = chr(err.character) if isinstance(err.character, int) else str(err.character)
        raise ConfigError(
            f"malformed YAML: the character {character!r} is not allowed in YAML text (inside double "
            f'quotes write it as the escape "\\x{ord(character[:1] or " "):02x}")',
            file=filename,
            line=text.count("\n", 0, err.position) + 1,
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML: {err}", file=filename) from None


def _layer_at_line(text, line):
    """The name of the layer whose mapping spans ``line`` (1-based), or None: composes the
    document again (nodes only, so a duplicate key does not stop it) and looks in its
    ``layers:`` (or ``layer:``) list."""
    try:
        root = yaml.compose(text, Loader=_LineLoader)
    except (yaml.YAMLError, ConfigError, RecursionError):
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value in ("layers", "layer") and isinstance(value, yaml.SequenceNode):
            for item in value.value:
                if isinstance(item, yaml.MappingNode) and item.start_mark.line + 1 <= line <= item.end_mark.line + 1:
                    names = [v.value for k, v in item.value if k.value == "name" and isinstance(v, yaml.ScalarNode)]
                    return names[0] if names else None
    return None


def load_yaml_file(path):
    """Read and parse a YAML file; a missing file is a ConfigError naming it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        mode = None  # missing, unreachable or unnamable: reading it below says which
    if mode is not None and not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"cannot read config: it is {kind}", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror or err}", file=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not a text file in UTF-8 (byte {err.start}: "
            f"{err.object[err.start : err.start + 1]!r}); a config is YAML text",
            file=str(path),
        ) from None
    except ValueError:  # a NUL character in the path
        raise ConfigError("cannot read config: a file name cannot hold a NUL character", file=str(path)) from None
    return load_yaml_text(text, str(path))
