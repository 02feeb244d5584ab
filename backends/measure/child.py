"""Entry of the measurement process: ``python -m backends.measure.child FD``.

FD is the child's end of a socket pair; see ``backends.measure.isolation``."""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from backends.measure.isolation import serve


def main(argv: list[str]) -> int:
    serve(Connection(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
