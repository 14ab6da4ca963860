"""`python -m adapter.controller` is `pushscale controller`."""

import sys

from adapter.controller.cli import main

sys.exit(main())
