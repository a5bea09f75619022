"""``netlayers schema``: the config schema as JSON Schema, for editors to complete and check configs."""

import json
import sys

from ..errors import ConfigError
from ..netspec import json_schema

HELP = "print the config schema as JSON Schema (draft 2020-12), or write it with -o"


def add_arguments(parser):
    parser.add_argument("-o", "--output", metavar="FILE", help="write the schema to FILE (default: stdout)")


def run(args):
    text = json.dumps(json_schema(), indent=1) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as err:
        raise ConfigError(f"cannot write the schema: {err.strerror}", file=args.output) from None
    print(f"wrote {args.output}")
    return 0
