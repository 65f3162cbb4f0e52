"""pytest configuration of the test suite.

The tiny training runs of the suite compile the same few programs (a train step, an eval step)
over and over, in this process and in the scripts it starts: a persistent compilation cache,
shared by every process of the session through the environment (pytest-xdist's workers
included), compiles each once. A cache hit loads the same executable, so results are bit for
bit those of a fresh compile. Set ``JAX_COMPILATION_CACHE_DIR`` to keep a cache of your own
across sessions.
"""

from __future__ import annotations

import os
import shutil
import tempfile

# The fixture generator needs torch (the PyTorch reference BERT), which is never installed by
# README's commands: it is a script to run by hand (see its docstring), not a test module, so
# --doctest-modules must not import it.
collect_ignore = ["fixtures/make_tiny_bert.py"]

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="optax-dice-jax-cache-")
# Cache every program, however small or quick to compile (the defaults skip those under 1 s).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The GPU tests run cuDNN's attention in this process: the script's XLA flag, before jax.
from examples.bert.xla_flags import keep_cudnn_out_of_cuda_graphs  # noqa: E402

keep_cudnn_out_of_cuda_graphs(os.environ)

import jax  # noqa: E402  (after the environment: jax reads it when imported)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_persistent_cache_min_entry_size_bytes",
    int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
)


def pytest_sessionfinish(session, exitstatus):
    """Removes the session's own compilation cache."""
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
