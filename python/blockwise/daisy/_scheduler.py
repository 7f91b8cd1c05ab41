"""``daisy.Scheduler`` and ``daisy.BlockwiseDependencyGraph`` over the engine's."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import blockwise
from blockwise import _native
from blockwise._native import BlockStatus

from blockwise.daisy._block import Block, TaskState, native_block, states
from blockwise.daisy._task import Pipeline, Task, to_native, to_pipeline


class Scheduler:
    """daisy's scheduler interface over ``blockwise.Scheduler`` (the same state machine the
    runs use): ``acquire_block(task_id)``, ``release_block(block)``, ``get_ready_tasks()``,
    ``task_states``."""

    def __init__(self, tasks: Pipeline | Task | Iterable[Task], count_all_orphans: bool = True) -> None:
        pipeline = to_pipeline(tasks if isinstance(tasks, (Pipeline, Task)) else list(tasks))
        self.task_map: dict[str, Task] = {t.task_id: t for t in pipeline.tasks}
        self._s = blockwise.Scheduler(to_native(pipeline, budget=False))

    def acquire_block(self, task_id: str) -> Block | None:
        """The next ready block of the task (its check function already consulted), or None."""
        native = self._s.acquire_block(task_id)
        if native is None:
            return None
        block = Block._wrap(native)
        block.status = BlockStatus.PROCESSING
        return block

    def release_block(self, block: Block) -> None:
        """Takes a block back; its status (SUCCESS or FAILED) says how it went."""
        native = native_block(block)
        if native.status not in (BlockStatus.SUCCESS, BlockStatus.FAILED):
            raise RuntimeError(f"unexpected status {native.status} of released block {block.block_id}")
        self._s.release_block(native)

    def get_ready_tasks(self) -> list[Task]:
        """The tasks with ready blocks."""
        return [self.task_map[t] for t in self._s.ready_tasks()]

    @property
    def task_states(self) -> dict[str, TaskState]:
        """``{task_id: TaskState}`` (a snapshot)."""
        return states(self._s.task_states())


def _noop(block) -> None:
    """The process function of a graph-only task."""


class BlockwiseDependencyGraph:
    """One task's block graph (daisy's ``BlockwiseDependencyGraph``): its levels, roots,
    read/write-conflict neighbours and the blocks under a ROI. Give exactly one of
    ``total_read_roi`` and ``total_write_roi``."""

    def __init__(
        self,
        task_id: str,
        block_read_roi,
        block_write_roi,
        read_write_conflict: bool,
        fit: str,
        total_read_roi=None,
        total_write_roi=None,
    ) -> None:
        if (total_read_roi is None) == (total_write_roi is None):
            raise blockwise.ConfigError("give exactly one of total_read_roi and total_write_roi")
        read = blockwise.Roi(block_read_roi)
        write = blockwise.Roi(block_write_roi)
        self._ctx_lo = [w - r for w, r in zip(write.offset, read.offset, strict=True)]
        self._ctx_hi = [re - we for re, we in zip(read.end, write.end, strict=True)]
        if total_read_roi is not None:
            total = blockwise.Roi(total_read_roi)
        else:
            tw = blockwise.Roi(total_write_roi)
            total = blockwise.Roi(
                [o - c for o, c in zip(tw.offset, self._ctx_lo, strict=True)],
                [s + a + b for s, a, b in zip(tw.shape, self._ctx_lo, self._ctx_hi, strict=True)],
            )
        self.task_id = task_id
        task = blockwise.Task(
            task_id, total, read, write, process=_noop, fit=fit, read_write_conflict=read_write_conflict
        )
        self._g = _native._BlockGraph(task)

    @property
    def num_blocks(self) -> int:
        """The number of blocks."""
        return self._g.num_blocks

    @property
    def num_levels(self) -> int:
        """The number of levels."""
        return self._g.num_levels

    def num_roots(self) -> int:
        """The number of level-0 blocks."""
        return self._g.num_roots()

    def level_blocks(self, level: int) -> Iterator[Block]:
        """The blocks of a level, lazily, in the order they are handed out."""
        return (Block._wrap(b) for b in self._g.level_blocks(level))

    def root_gen(self) -> Iterator[Block]:
        """The roots (level 0), lazily."""
        return self.level_blocks(0)

    def upstream(self, block: Block) -> list[Block]:
        """The blocks ``block`` waits for, sorted by id."""
        return [Block._wrap(b) for b in self._g.upstream(native_block(block))]

    def downstream(self, block: Block) -> list[Block]:
        """The blocks waiting for ``block``, sorted by id."""
        return [Block._wrap(b) for b in self._g.downstream(native_block(block))]

    def get_subgraph_blocks(self, sub_roi, read_roi: bool = False) -> list[Block]:
        """The blocks whose write ROI (``read_roi=True``: read ROI) meets ``sub_roi``."""
        sub = blockwise.Roi(sub_roi)
        if read_roi:
            # A read ROI is the write ROI grown by the context: grow the query the other way.
            sub = sub.grow(self._ctx_hi, self._ctx_lo)
        return [Block._wrap(b) for b in self._g.blocks_in(sub)]

    def enumerate_all_dependencies(self) -> list[tuple[Block, list[Block]]]:
        """Every block, level by level, with the blocks it waits for."""
        return [(b, self.upstream(b)) for level in range(self.num_levels) for b in self.level_blocks(level)]


__all__ = ["BlockwiseDependencyGraph", "Scheduler"]
