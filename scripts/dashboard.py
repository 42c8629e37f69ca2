"""`python -m scripts.dashboard`: the former command of `python -m dashboard`, kept for units."""

import sys

from dashboard.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
