"""`python -m jetson_fleet.report`: build and render benchmark reports."""

import sys

from jetson_fleet.report.cli import main

sys.exit(main())
