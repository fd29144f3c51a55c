"""``python -m gpt2_simple_plus ...``: the same command line as ``gpt2_simple_plus ...``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
