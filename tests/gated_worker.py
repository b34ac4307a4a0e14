"""`python -m tests.gated_worker -A nlaweb worker …`: the Celery command line, with every worker
process held at the gates of tests.gates (installed in each process after the fork; it imports
nothing heavy, as a pool process that is slow to start is killed by Celery)."""

from __future__ import annotations

import sys

from celery.__main__ import main
from celery.signals import worker_process_init

from tests.gates import install


@worker_process_init.connect
def _install_gates(**_: object) -> None:
    install()


if __name__ == "__main__":
    sys.argv[0] = "celery"
    sys.exit(main())
