"""`python -m adapter` is `pushscale adapter`."""

import sys

from adapter.cli import main

sys.exit(main())
