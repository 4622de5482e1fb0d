import sys

from rplb.cli import main

sys.exit(main())
