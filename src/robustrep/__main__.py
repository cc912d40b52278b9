"""`python -m robustrep ...` (and `torchrun ... -m robustrep ...`): the command line."""

import sys

from .cli import main

sys.exit(main())
