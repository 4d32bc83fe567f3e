"""`python -m admin`: the same as the tollgate-admin script."""

import sys

from admin.cli import main

sys.exit(main())
