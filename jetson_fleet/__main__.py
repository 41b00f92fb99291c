"""`python -m jetson_fleet`: the fleet CLI (jetson-fleet)."""

import sys

from jetson_fleet.cli import main

sys.exit(main())
