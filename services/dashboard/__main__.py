"""`python -m services.dashboard --store URL --run NAME`: the same as `paced dashboard`."""

import sys

from services.dashboard.server import main

sys.exit(main())
