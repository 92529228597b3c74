"""``python -m mmemb.cli`` = the ``mmemb`` command."""

import sys

from . import main

sys.exit(main())
