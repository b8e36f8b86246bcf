"""``python -m tconv bench``: see :mod:`tconv.cli`."""

import sys

from .cli import main

sys.exit(main())
