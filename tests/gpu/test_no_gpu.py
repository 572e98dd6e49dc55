"""Without CUDA every GPU test is skipped, and says so (pytest exit code 5 must not hide it)."""

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: the real GPU tests run instead")
def test_gpu_suite_needs_cuda():
    pytest.skip("no CUDA device: the GPU suite (tests/gpu) runs on a GPU machine; see README")
