"""`python -m kseg.cli`: the `kseg` command."""

from kseg.cli import main

# Documentation tools import every module; only `python -m` runs the command.
if __name__ == "__main__":
    main()
