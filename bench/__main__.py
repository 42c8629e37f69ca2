"""`python -m bench`: the pipeline against the hand-written floor and the seed's design."""

import sys

from bench.pipeline import main

sys.exit(main())
