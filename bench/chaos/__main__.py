"""`python -m bench.chaos`: kills of consumers and Redis under load lose nothing."""

import sys

from bench.chaos.run import main

sys.exit(main())
