"""`python -m pushserver` is `pushscale server`."""

import sys

from pushserver.cli import main

sys.exit(main())
