import sys

from s4c.cli import main

sys.exit(main())
