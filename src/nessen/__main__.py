"""``python -m nessen``: the same as the ``nessen`` command."""

import sys

from nessen.cli import main

sys.exit(main())
