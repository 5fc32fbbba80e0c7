import sys

from gradwise.cli.commands import main

sys.exit(main())
