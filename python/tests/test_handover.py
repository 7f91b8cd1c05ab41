"""How a process run hands its Python functions to worker processes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import blockwise as bw

SCRIPT = textwrap.dedent(
    """
    import sys
    if {no_cloudpickle}:
        sys.modules["cloudpickle"] = None  # as if cloudpickle were not installed
    from pathlib import Path
    import blockwise as bw

    OUT = Path(sys.argv[1])
    (OUT / "imports").mkdir(exist_ok=True)
    # Runs at import: in the driver, and in every worker (imported as __mp_main__).
    (OUT / "imports" / str(__import__("os").getpid())).touch()

    def process(block):
        (OUT / f"block-{{block.block_id}}").write_text(__name__)

    if __name__ == "__main__":
        (OUT / "main-ran").open("a").write("x")
        task = bw.Task("t", bw.Roi((0,), (40,)), bw.Roi((0,), (10,)), bw.Roi((0,), (10,)),
                       process=process, num_workers=2)
        summary = bw.run_blockwise(task, runner="processes", progress=False,
                                   log_dir=OUT / "logs")
        print(summary.task("t").completed)
        assert summary.is_success(), str(summary)
    """
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("no_cloudpickle", [True, False])
def test_functions_of_the_main_script_reach_workers(tmp_path, no_cloudpickle):
    if not no_cloudpickle:
        pytest.importorskip("cloudpickle")
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT.format(no_cloudpickle=no_cloudpickle))
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True,
                       timeout=100, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"
    assert (out / "main-ran").read_text() == "x"  # the driver's main block ran once, never in workers
    ran_as = {p.read_text() for p in out.glob("block-*")}
    assert len(list(out.glob("block-*"))) == 4
    # By reference, the function runs in the imported script (__mp_main__); cloudpickle sends
    # it by value, into the worker's __main__ namespace.
    assert ran_as == ({"__mp_main__"} if no_cloudpickle else ran_as)
    assert len(list((out / "imports").iterdir())) >= 2  # the driver and at least one worker
    # The tasks file is gone after the run, and its folder is private.
    folder = out / "logs" / ".blockwise-tasks"
    assert list(folder.iterdir()) == []
    assert (folder.stat().st_mode & 0o777) == 0o700


def test_a_tasks_folder_open_to_others_is_refused(tmp_path):
    folder = tmp_path / "logs" / ".blockwise-tasks"
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    task = bw.Task("t", bw.Roi((0,), (10,)), bw.Roi((0,), (10,)), bw.Roi((0,), (10,)),
                   process=_noop)
    with pytest.raises(bw.ConfigError, match="open to other users"):
        bw.run_blockwise(task, runner="processes", progress=False, log_dir=tmp_path / "logs")


def test_a_worker_refuses_a_tasks_file_others_could_have_written(tmp_path):
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    spec = folder / "tasks.pickle"
    spec.write_bytes(b"not a pickle")
    spec.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "blockwise._worker", str(spec)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "open to other users" in r.stderr


def test_unpicklable_functions_are_a_configuration_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    task = bw.Task("t", bw.Roi((0,), (10,)), bw.Roi((0,), (10,)), bw.Roi((0,), (10,)),
                   process=lambda b: None)
    with pytest.raises(bw.ConfigError, match="install cloudpickle"):
        bw.run_blockwise(task, runner="processes", progress=False, log_dir=tmp_path / "logs")


def _noop(block):
    pass
