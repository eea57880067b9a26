"""`python -m edgenlp.cli`: the same command as `edgenlp`."""

from . import main

main()
