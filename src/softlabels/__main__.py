"""``python -m softlabels``: the command line, also under ``torchrun``.

    torchrun --standalone --nproc-per-node 2 -m softlabels train --device cpu ...
"""

import sys

from .cli import main

sys.exit(main())
