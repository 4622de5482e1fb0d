"""python -m rplb.bench: the same as rplb-bench."""

import sys

from rplb.bench.cli import main

sys.exit(main())
