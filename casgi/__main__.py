"""`casgi APP` / `python -m casgi APP`: the command line lives in the C extension."""

import sys

from casgi import _casgi


def main() -> None:
    sys.exit(_casgi.main(sys.argv[1:]))


if __name__ == "__main__":
    main()
