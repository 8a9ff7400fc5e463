"""The command line (``golf``) and the configuration's schema check. May import everything.

- :mod:`golf.cli.main`: ``golf inspect | import | export | optimize | ...``.
- :mod:`golf.cli.config`: the config against ``config/schema/config.schema.yaml``.
"""

from golf.cli.main import main

__all__ = ["main"]
