"""Pull one reference into a project layout from Python.

Usage: .venv/bin/python examples/pull_library.py REF LAYOUT_DIR [--plain-http]
(any interpreter where hybridstore is installed: the venv `make venv` creates, or after
`pip install .`).
"""

from __future__ import annotations

import sys

from hybridstore import TransportOptions, pull


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    ref, layout = argv[0], argv[1]
    result = pull(
        ref,
        layout=layout,
        transport=TransportOptions(plain_http="--plain-http" in argv),
    )
    print(f"{result.ref_name} -> {result.digest}")
    print(
        f"fetched {result.fetched} blobs ({result.bytes_transferred} bytes), "
        f"reused {result.reused}, link modes {result.link_modes}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
