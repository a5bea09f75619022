"""YAML loading that remembers where every mapping, list and key came from.

``load_yaml(path_or_text)`` returns plain dicts and lists of subclasses :class:`LineDict` and
:class:`LineList` that carry ``line`` (1-based, where the node starts) and, for dicts,
``key_lines`` (key -> line of that key). Config checking uses them to say *where* a mistake is.
"""
from pathlib import Path

import yaml

from ..errors import ConfigError


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


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        mapping = LineDict()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        self.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError("mapping keys must be plain names", line=key_node.start_mark.line + 1)
            if key in mapping:
                raise ConfigError(f"duplicate key '{key}'", line=key_node.start_mark.line + 1)
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


def load_yaml_text(text, filename="<string>"):
    """Parse YAML text; a syntax error becomes a one-line ConfigError with its line."""
    try:
        return yaml.load(text, Loader=_LineLoader)
    except ConfigError as err:
        raise err.located(file=filename)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        problem = err.problem or err.context or "malformed YAML"
        raise ConfigError(f"malformed YAML: {problem}", file=filename, line=line) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed YAML: {err}", file=filename) from None


def load_yaml_file(path):
    """Read and parse a YAML file; a missing file is a ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror}", file=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not a text file in UTF-8 (byte {err.start}: "
                          f"{err.object[err.start:err.start + 1]!r}); a config is YAML text",
                          file=str(path)) from None
    return load_yaml_text(text, str(path))
