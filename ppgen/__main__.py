"""``python -m ppgen ...``: the same command line as ``ppgen ...``."""
import sys

from .cli import main

sys.exit(main())
