"""Kernels shared by several attention variants.

``sdpa`` (PyTorch SDPA: dispatch, pinning, backend names), ``flex`` (FlexAttention block
masks, the compiled kernel, and the body shared by mask-mod variants) and ``flash_attn``
(the Dao-AILab package, when it imports).  A variant file imports only ``attention.base``
and these modules, never another variant.
"""
