import sys

try:
    from .cli.main import netlayers_program
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line: one line, as later
    print("netlayers: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(netlayers_program())
