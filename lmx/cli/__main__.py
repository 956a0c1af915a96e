"""``python -m lmx.cli``: the `lmx` command."""

import sys

from lmx.cli import run

sys.exit(run())
