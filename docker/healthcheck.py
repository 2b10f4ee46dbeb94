#!/usr/bin/env python3
"""Container healthcheck: exit 0 when GET <url> answers 2xx (``/health`` of a Flower API).

Usage: maestro-healthcheck URL [CA_FILE]   (CA_FILE verifies an https URL; needs only the stdlib)
"""

import ssl
import sys
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: maestro-healthcheck URL [CA_FILE]", file=sys.stderr)
        return 2
    context = ssl.create_default_context(cafile=argv[2]) if len(argv) == 3 else None
    try:
        with urllib.request.urlopen(argv[1], timeout=4, context=context) as response:
            return 0 if 200 <= response.status < 300 else 1
    except OSError as err:
        print(f"{argv[1]}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
