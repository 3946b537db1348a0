"""The guest side: a stdlib-only model of Go's arena reservation that does real mmaps.

Runs inside guests (Python >= 3.9) and never imports ``harness``.
"""

__version__ = "1.0.0"
SCHEMA = 1
