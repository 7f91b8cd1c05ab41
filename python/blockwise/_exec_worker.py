"""A worker process of a process executor: ``python -m blockwise._exec_worker <handoff file>``.

It restores the driver's ``sys.path``, working directory and main script (as
``blockwise._worker`` does for block runs), then serves the executor's items through the
engine: each item names the function it runs (pickled once, scattered to every worker) and
carries the pickled item; the pickled result goes back. It exits with 0 when the executor lets
it go, 1 with the error on stderr (the worker's log) if it cannot serve.
"""

from __future__ import annotations

import base64
import pickle
import sys
import traceback
from typing import Any

_functions: dict[str, Any] = {}


def _dumps(obj: object) -> str:
    from blockwise._run import _pickler

    dumper, _ = _pickler()
    return base64.b64encode(dumper.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def _loads(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def _handle(key: str, item: str) -> str:
    """Runs the function scattered under ``key`` on the pickled ``item``; the pickled result."""
    fn = _functions.get(key)
    if fn is None:
        from blockwise import _native

        text = _native._exec_scattered(key)
        if text is None:
            raise RuntimeError(f"the executor's function {key!r} did not reach this process")
        fn = _functions[key] = _loads(text)
    return _dumps(fn(_loads(item)))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m blockwise._exec_worker <handoff file>", file=sys.stderr)
        return 2
    from blockwise._worker import load_handoff

    spec = load_handoff(argv[1])
    from blockwise import _native

    if _native._exec_serve(spec["name"]) is None:
        print("blockwise executor worker: not started by this executor (no BLOCKWISE_CONTEXT for it)", file=sys.stderr)
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
