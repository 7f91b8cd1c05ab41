"""The worker process of ``blockwise.ops`` operations run on processes:
``python -m blockwise._ops_worker <spec>``. The engine rebuilds the operation's tasks from the
spec and serves this worker's task (no Python code runs per block)."""

from __future__ import annotations

import sys
import traceback


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m blockwise._ops_worker <spec>", file=sys.stderr)
        return 2
    from blockwise import _native

    if _native._cc_serve_worker(argv[1]) is None:
        print("blockwise ops worker: not started by a process runner (no BLOCKWISE_CONTEXT)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
