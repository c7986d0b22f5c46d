"""`python -m gptkit.cli ...` (and `torchrun ... -m gptkit.cli ...`): the same as `gptkit ...`."""

import sys

from . import main

sys.exit(main())
