import sys

from golf.cli.main import main

sys.exit(main())
