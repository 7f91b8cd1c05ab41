"""The failure budget: a task whose blocks keep failing is abandoned, its downstream orphaned."""

import blockwise as bw


def _failing(calls):
    def process(block):
        calls.append(block.block_id)
        raise RuntimeError(f"block {block.block_id} cannot be processed")

    return process


def test_a_task_is_abandoned_after_its_budget_and_downstream_orphaned():
    calls = []
    a = bw.Task("a", bw.Roi((0,), (100,)), bw.Roi((0,), (1,)), bw.Roi((0,), (1,)),
                process=_failing(calls), max_retries=0, max_consecutive_failures=3)
    b = bw.Task("b", bw.Roi((0,), (100,)), bw.Roi((0,), (1,)), bw.Roi((0,), (1,)),
                process=lambda block: None, upstream=a)
    assert a.max_consecutive_failures == 3
    summary = bw.run_blockwise([b], progress=False, prefetch=1)
    assert not summary.is_success()
    assert len(calls) == 3  # one worker, one block at a time: exactly the budget
    sa, sb = summary.task("a"), summary.task("b")
    assert sa.failed == 3 and sa.orphaned == 97 and sa.is_done()
    assert sb.orphaned == 100 and sb.completed == 0
    assert "3 consecutive failed blocks" in sa.abandoned
    assert "cannot be processed" in sa.abandoned
    assert sb.abandoned == 'upstream task "a" was abandoned' or "a" in sb.abandoned
    assert set(summary.abandoned) == {"a", "b"}
    assert "abandoned" in str(summary)


def test_zero_is_a_configuration_error():
    import pytest

    with pytest.raises(bw.ConfigError, match="max_consecutive_failures"):
        bw.Task("t", bw.Roi((0,), (10,)), bw.Roi((0,), (1,)), bw.Roi((0,), (1,)),
                process=lambda b: None, max_consecutive_failures=0)
