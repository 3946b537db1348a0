"""``python3 -m allocator`` (also the entry point of the zipapp the harness ships to guests)."""

import sys

from allocator.cli import main

sys.exit(main())
