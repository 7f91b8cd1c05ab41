from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from os import PathLike
from typing import TypeVar

from blockwise import BlockwiseError, Launcher

T = TypeVar("T")
R = TypeVar("R")

class ItemError(BlockwiseError):
    index: int
    message: str
    def __init__(self, index: int, message: str) -> None: ...

class ItemTimeoutError(ItemError):
    timeout: float
    def __init__(self, index: int, timeout: float) -> None: ...

class Executor:
    @classmethod
    def threads(cls, n: int, *, timeout: float | timedelta | None = None) -> Executor: ...
    @classmethod
    def processes(
        cls,
        n: int,
        *,
        launcher: Launcher | None = None,
        log_dir: str | PathLike[str] | None = None,
        max_worker_restarts: int | None = None,
        timeout: float | timedelta | None = None,
        idle_timeout: float | timedelta | None = None,
        requires: Mapping[str, int] | None = None,
        resources: Mapping[str, int] | None = None,
        devices: Mapping[str, Sequence[str | int]] | None = None,
    ) -> Executor: ...
    @property
    def slots(self) -> int: ...
    @property
    def timeout(self) -> float | None: ...
    # `timeout` of a map: omitted, the executor's; None, no limit.
    def map(self, fn: Callable[[T], R], iterable: Iterable[T], *, timeout: float | timedelta | None = ...) -> list[R]: ...
    def bounded_map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        *,
        window: int | None = None,
        timeout: float | timedelta | None = ...,
    ) -> Iterator[R]: ...
    def as_completed(
        self, fn: Callable[[T], R], iterable: Iterable[T], *, timeout: float | timedelta | None = ...
    ) -> Iterator[tuple[int, R]]: ...
    def shutdown(self) -> None: ...
    def cancel(self) -> None: ...
    def __enter__(self) -> Executor: ...
    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None: ...
