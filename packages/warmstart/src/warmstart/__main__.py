"""`python -m warmstart` runs the umbrella CLI (the same as the `warmstart` console script)."""

from warmstart.cli.main import main

if __name__ == "__main__":
    main()
