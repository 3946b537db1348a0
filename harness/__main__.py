"""``python3 -m harness``: the command line, as ``arena-harness``."""

import sys

from harness.cli import main

sys.exit(main())
