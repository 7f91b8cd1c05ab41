"""``daisy.Client`` and ``daisy.Context``: a worker's side of a run, over ``blockwise.Client``."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import blockwise
from blockwise._native import BlockStatus, WorkerContext

from blockwise.daisy import logging as daisy_logging
from blockwise.daisy._block import Block, native_block

logger = logging.getLogger(__name__)


class Context:
    """daisy's worker context: string keys and values, ``logdir`` first. ``Context.from_env()``
    reads what the engine gives its worker processes (``task_id``, ``worker_id``)."""

    ENV_VARIABLE = "DAISY_CONTEXT"

    def __init__(self, **kwargs: Any) -> None:
        base = daisy_logging.get_log_basedir()
        self._d: dict[str, str] = {"logdir": str(base)}
        for k, v in kwargs.items():
            self[k] = v

    def __setitem__(self, key: str, value: Any) -> None:
        key, value = str(key), str(value)
        for s in (key, value):
            if "=" in s or ":" in s:
                raise ValueError(f"context entries cannot contain '=' or ':': {s!r}")
        self._d[key] = value

    def __getitem__(self, key: str) -> str:
        return self._d[key]

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._d.get(key, default)

    def items(self) -> list[tuple[str, str]]:
        """The entries."""
        return list(self._d.items())

    def copy(self) -> Context:
        """A copy."""
        c = Context.__new__(Context)
        c._d = dict(self._d)
        return c

    def to_env(self) -> str:
        """daisy's ``k=v:k=v`` encoding."""
        return ":".join(f"{k}={v}" for k, v in self._d.items())

    @staticmethod
    def from_env() -> Context:
        """This worker process's context; ``KeyError`` outside a worker process (like daisy)."""
        ctx = WorkerContext.from_env()
        if ctx is not None:
            return Context(task_id=ctx.task_id, worker_id=ctx.worker_id)
        text = os.environ.get(Context.ENV_VARIABLE)
        if text is None:
            raise KeyError(
                "not in a worker process: neither BLOCKWISE_CONTEXT nor DAISY_CONTEXT is set"
            )
        c = Context.__new__(Context)
        c._d = dict(kv.split("=", 1) for kv in text.split(":") if kv)
        return c

    def __repr__(self) -> str:
        return self.to_env()


class Client:
    """A worker's connection to its run (daisy's ``Client``), for worker functions::

        client = daisy.Client()
        while True:
            with client.acquire_block() as block:
                if block is None:
                    break
                process(block)

    A ``with`` body that raises fails the block (logged, not re-raised: the loop goes on);
    setting ``block.status = daisy.BlockStatus.FAILED`` fails it too.
    """

    def __init__(self, context: Context | None = None) -> None:
        self.context = context if context is not None else Context.from_env()
        self._client = blockwise.Client()
        self.worker_id = self._client.worker_id
        self.task_id = self._client.task_id

    @contextlib.contextmanager
    def acquire_block(self) -> Iterator[Block | None]:
        """The next block (None when there are none left), released when the ``with`` ends."""
        native = self._client.acquire_block_unmanaged()
        if native is None:
            yield None
            return
        block = Block._wrap(native)
        block.status = BlockStatus.PROCESSING
        try:
            yield block
        except Exception as e:  # noqa: BLE001 - reported to the run, like daisy
            logger.exception("block %s failed", block.block_id)
            self._client.fail_block(native, e)
            return
        self.release_block(block)

    def release_block(self, block: Block) -> None:
        """Reports a block done (failed if its status is FAILED)."""
        native = native_block(block)
        if native.status == BlockStatus.PROCESSING:
            native.status = BlockStatus.SUCCESS
        self._client.release_block(native)

    def close(self) -> None:
        """Closes the connection."""
        self._client.close()


__all__ = ["Client", "Context"]
