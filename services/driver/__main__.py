"""`python -m services.driver`: the `ray job submit` entrypoint (see services.launch)."""

import sys

from services.launch import main

if __name__ == "__main__":
    sys.exit(main())
