"""The GPU suite: run on a machine with CUDA (``pytest -m gpu tests/gpu``); skipped elsewhere.

``ATTNBENCH_GPU_LOG``: a folder where the tests write their figures as JSON (the committed
output under ``reports/``).  ``ATTNBENCH_RUN_DIR``: a finished run of the README's first command
(its ``results/``) for the tests that check a default-preset run; skipped when unset.
"""

import json
import os
from pathlib import Path

import pytest
import torch

collect_ignore_glob = [] if torch.cuda.is_available() else ["test_gpu_*.py"]


HERE = Path(__file__).resolve().parent
NO_CUDA = pytest.mark.skip(reason="no CUDA device: the GPU suite (tests/gpu) runs on a GPU machine; see README")


def pytest_collection_modifyitems(config, items):
    """Mark this folder's tests ``gpu`` (the hook sees every collected item: only ours); without
    CUDA, skip a test_gpu_*.py named on the command line (collect_ignore_glob only covers a
    folder's collection)."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if path.parent != HERE:
            continue
        item.add_marker(pytest.mark.gpu)
        if not torch.cuda.is_available() and path.name.startswith("test_gpu_"):
            item.add_marker(NO_CUDA)


@pytest.fixture(scope="session")
def gpu_log():
    """``gpu_log(name, obj)`` writes obj to $ATTNBENCH_GPU_LOG/name.json (if set)."""
    folder = os.environ.get("ATTNBENCH_GPU_LOG")

    def write(name: str, obj) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"{name}.json").write_text(json.dumps(obj, indent=1, default=str))

    return write
