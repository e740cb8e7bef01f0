"""`python -m mlmctl` is the same as the `mlmctl` console script."""

import sys

from mlmctl.cli import main

sys.exit(main())
