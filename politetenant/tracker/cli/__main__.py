"""``python -m politetenant.tracker.cli``: the same as ``polite-tracker``."""

import sys

from politetenant.tracker.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
