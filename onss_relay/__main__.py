"""`python3 -m onss_relay …`: the same command line as `onss-relay …`."""

import sys

from onss_relay.cli import main

sys.exit(main())
