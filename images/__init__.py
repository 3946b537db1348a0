"""Guest recipes (init scripts, Dockerfiles), installed as the package data ``harness.recipes``."""
