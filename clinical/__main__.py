"""``python -m clinical`` is the ``clinical`` command."""

import sys

from clinical.cli import main

sys.exit(main())
