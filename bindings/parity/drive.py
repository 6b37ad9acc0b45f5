"""Parity driver for the Python binding: the same two commands as drive.mjs.

    drive.py publish ROOT STEP SRC WRITER CREATED_MS
    drive.py wait ROOT STEP TIMEOUT_SECONDS        (verify=hash)

Prints the version as one JSON object; a failure exits with the CLI's code.
"""

import dataclasses
import json
import sys

import handoff


def main(cmd, *args):
    if cmd == "publish":
        root, step, src, writer, created = args
        version = handoff.publish(root, int(step), src, writer=writer, created_ms=int(created)).version
    elif cmd == "wait":
        root, step, timeout = args
        version = handoff.wait(root, int(step), verify="hash", timeout=float(timeout))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(dataclasses.asdict(version)))


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except handoff.HandoffError as e:
        print(f"handoff (python): {e}", file=sys.stderr)
        sys.exit(e.exit_code)
