import sys

from pushscale.cli import main

sys.exit(main())
