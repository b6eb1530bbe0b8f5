"""``python -m trioxide`` = the ``trioxide`` command."""

import sys

from .cli import main

sys.exit(main())
