"""XLA flags the BERT example sets before jax starts its backend.

jax 0.11.2's XLA aborts the process ("Check failed: local_device_ordinal.has_value()" in
cuda_dnn.cc) when it records cuDNN's fused attention into a CUDA graph (seen on an H200,
2026-11-30), and cuDNN's attention is what the training script asks for on a GPU. XLA reads
``XLA_FLAGS`` once, when the backend starts, so the training script (and the test suite's
conftest) call :func:`keep_cudnn_out_of_cuda_graphs` before anything touches a device. This
module imports nothing but the standard library, so that it can run before jax is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import MutableMapping

CUDNN_OUT_OF_CUDA_GRAPHS = "--xla_gpu_enable_command_buffer=-CUDNN"
CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def keep_cudnn_out_of_cuda_graphs(environ: MutableMapping[str, str]) -> None:
    """Adds :data:`CUDNN_OUT_OF_CUDA_GRAPHS` to ``environ["XLA_FLAGS"]`` where jax has a CUDA
    plugin and the flags do not already say what XLA's command buffers hold.

    Args:
      environ: the environment to change (``os.environ`` in the script).

    Example:
      >>> env = {"XLA_FLAGS": "--xla_gpu_enable_command_buffer="}  # the user's choice stands
      >>> keep_cudnn_out_of_cuda_graphs(env); env
      {'XLA_FLAGS': '--xla_gpu_enable_command_buffer='}
    """
    flags = environ.get("XLA_FLAGS", "")
    if "xla_gpu_enable_command_buffer" in flags:
        return
    if any(importlib.util.find_spec(name) is not None for name in CUDA_PLUGINS):
        environ["XLA_FLAGS"] = f"{flags} {CUDNN_OUT_OF_CUDA_GRAPHS}".strip()
