import sys

from blazedistill.cli.main import main

sys.exit(main())
