"""`python -m tfzoo ...` is the `zoo` command."""

import sys

from tfzoo.cli import main

sys.exit(main())
