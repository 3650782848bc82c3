"""`python -m kseg.cli`: the `kseg` command."""

from kseg.cli import main

main()
