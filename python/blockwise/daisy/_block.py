"""``daisy.Block``, ``daisy.BlockStatus`` and ``daisy.TaskState`` over blockwise's."""

from __future__ import annotations

from blockwise import _native
from blockwise._native import BlockStatus

from blockwise.daisy._geometry import Roi, to_roi


class Block:
    """A block as daisy has it: ``block_id`` is ``(task_id, id)``, the ROIs are ``daisy.Roi``
    and ``status`` may be set (to ``BlockStatus.FAILED`` to fail the block).

    Blocks handed out by a run or a ``Scheduler`` wrap the engine's block; ``Block(total_roi,
    read_roi, write_roi, block_id=None, task_id=None)`` builds one by hand, with daisy's id
    (the Cantor number of the write ROI's position in the grid) when ``block_id`` is None.
    """

    __slots__ = ("_native", "_status", "block_id", "read_roi", "requested_write_roi", "task_id", "write_roi")

    def __init__(self, total_roi, read_roi, write_roi, block_id=None, task_id=None) -> None:
        self._native = None
        self.read_roi = read_roi
        self.write_roi = write_roi
        self.requested_write_roi = write_roi
        self.task_id = task_id
        if block_id is None:
            index = [
                int((w - t) / s)
                for w, t, s in zip(write_roi.offset, total_roi.offset, write_roi.shape, strict=True)
            ]
            block_id = _native._cantor_number(index)
        self.block_id = (task_id, block_id)
        self._status = BlockStatus.CREATED

    @classmethod
    def _wrap(cls, native: _native.Block) -> Block:
        b = cls.__new__(cls)
        b._native = native
        b.read_roi = to_roi(native.read_roi)
        b.write_roi = to_roi(native.write_roi)
        b.requested_write_roi = b.write_roi
        b.task_id = native.task_id
        b.block_id = (native.task_id, native.block_id)
        b._status = None
        return b

    @property
    def status(self) -> BlockStatus:
        """CREATED, PROCESSING, SUCCESS or FAILED."""
        return self._native.status if self._native is not None else self._status

    @status.setter
    def status(self, value: BlockStatus) -> None:
        if self._native is not None:
            self._native.status = value
        else:
            self._status = value

    def copy(self) -> Block:
        """A copy (a block handed out by the engine shares its status with its copies)."""
        if self._native is None:
            b = Block.__new__(Block)
            for k in Block.__slots__:
                setattr(b, k, getattr(self, k))
            return b
        return Block._wrap(self._native)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and other.block_id == self.block_id

    def __hash__(self) -> int:
        return hash(self.block_id)

    def __repr__(self) -> str:
        return f"{self.task_id}/{self.block_id[1]} with read ROI {self.read_roi} and write ROI {self.write_roi}"


def native_block(block) -> _native.Block:
    """The engine's block behind a daisy block (or an engine block as is)."""
    if isinstance(block, Block):
        if block._native is None:
            raise _native.ConfigError(
                f"block {block!r} was built by hand; give the scheduler the blocks it handed out"
            )
        return block._native
    return block


class TaskState:
    """A task's counters under daisy's names. ``str()`` is daisy's nine-line form."""

    __slots__ = ("_s",)

    def __init__(self, state: _native.TaskState) -> None:
        self._s = state

    started = property(lambda self: self._s.started, doc="Whether a block was handed out.")
    total_block_count = property(lambda self: self._s.total, doc="The number of blocks.")
    ready_count = property(lambda self: self._s.ready, doc="Blocks ready to run.")
    pending_count = property(lambda self: self._s.pending, doc="Blocks waiting for others.")
    processing_count = property(lambda self: self._s.processing, doc="Blocks being processed.")
    completed_count = property(lambda self: self._s.completed, doc="Blocks done (skipped ones included).")
    skipped_count = property(lambda self: self._s.skipped, doc="Blocks skipped as already done.")
    failed_count = property(lambda self: self._s.failed, doc="Blocks failed for good.")
    orphaned_count = property(lambda self: self._s.orphaned, doc="Blocks that cannot run: an upstream block failed.")

    def is_done(self) -> bool:
        """Whether every block reached a final state (failed and orphaned ones included)."""
        return self._s.is_done()

    def __str__(self) -> str:
        return str(self._s)

    def __repr__(self) -> str:
        return repr(self._s).replace("TaskState(", "daisy.TaskState(", 1)


class RunStates(dict):
    """``{task_id: TaskState}``, true when every block of every task completed or was skipped:
    what the serial mode returns, for daisy 1.x's programs (which index it) and daisy 2.0's
    (which test it as a bool) alike."""

    def __bool__(self) -> bool:
        return all(s.completed_count == s.total_block_count for s in self.values())


def states(pairs) -> RunStates:
    """``{task_id: TaskState}`` from the engine's ``[(task_id, TaskState)]``."""
    return RunStates((k, TaskState(v)) for k, v in pairs)


__all__ = ["Block", "BlockStatus", "Roi", "RunStates", "TaskState"]
