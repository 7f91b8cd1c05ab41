"""The worker side of a run for worker functions that run their own loop."""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

from blockwise import _native
from blockwise._native import Block, BlockStatus

logger = logging.getLogger(__name__)


class Client:
    """A worker's connection to its scheduler (in a worker process of a process runner).

    ``Client()`` reads the context the runner gave the process. Use it from a task's
    ``worker_function``::

        def worker():
            client = blockwise.Client()
            while True:
                with client.acquire_block() as block:
                    if block is None:
                        break
                    process(block)

    A block whose ``with`` body raises is reported failed with the traceback (and retried by
    the scheduler like any failed block); the exception is logged, not re-raised, so the loop
    goes on (daisy's behaviour). Setting ``block.status = BlockStatus.FAILED`` fails it too.
    """

    def __init__(self) -> None:
        self._native = _native.Client()

    @property
    def task_id(self) -> str:
        """The task this worker serves."""
        return self._native.task_id

    @property
    def worker_id(self) -> int:
        """The worker's id (unique within the run)."""
        return self._native.worker_id

    @contextlib.contextmanager
    def acquire_block(self) -> Iterator[Block | None]:
        """The next block (None when there are no more), released when the block exits."""
        block = self._native._acquire()
        if block is None:
            yield None
            return
        try:
            yield block
        except Exception as e:  # noqa: BLE001 - reported to the scheduler, like daisy
            logger.exception("block %s failed", block.block_id)
            self._native._fail(block, "".join(traceback.format_exception(e)).rstrip())
            return
        self.release_block(block)

    def release_block(self, block: Block, output: Any = None) -> None:
        """Reports a block acquired with ``acquire_block_unmanaged`` done (with an output for
        tasks with ``outputs=True``); a block whose status was set to ``FAILED`` fails."""
        if block.status == BlockStatus.PROCESSING:
            block.status = BlockStatus.SUCCESS
        if output is not None:
            self._native._release_with_output(block, json.dumps(output))
        else:
            self._native._release(block)

    def acquire_block_unmanaged(self) -> Block | None:
        """The next block without a context manager; release it with ``release_block`` or
        ``fail_block``."""
        return self._native._acquire()

    def fail_block(self, block: Block, error: BaseException | str) -> None:
        """Reports a block failed with an exception (its traceback is kept) or a message."""
        if isinstance(error, BaseException):
            error = "".join(traceback.format_exception(error)).rstrip()
        block.status = BlockStatus.FAILED
        self._native._fail(block, error)

    def close(self) -> None:
        """Closes the connection (the scheduler then hands this worker no more blocks)."""
        self._native.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
