import sys

from .cli.main import netlayers_program

sys.exit(netlayers_program())
