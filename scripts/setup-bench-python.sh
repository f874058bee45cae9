#!/usr/bin/env bash
# Creates the Python virtual environment of the benchmark's Python peers (bench/peers.py: torch.save/torch.load,
# safetensors.torch and safetensors.numpy), outside git and cached: a second run with everything installed does
# nothing. Installs from this machine's local wheel folders and index only (--no-index --find-links), so a missing
# dependency fails at once instead of retrying the public index for minutes.
#
#   scripts/setup-bench-python.sh            # or: npm run setup:bench-python
#   TFJS_CHECKPOINT_BENCH_VENV=DIR ...       # another location (default ~/.cache/tfjs-checkpoint/bench-venv)
#
# The bench finds the venv at the same place (bench/peers.ts); BENCH_PYTHON=/path/to/python overrides both.
set -euo pipefail
VENV="${TFJS_CHECKPOINT_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tfjs-checkpoint/bench-venv}"
PACKAGES=(torch==2.13.0 safetensors numpy)
PY="$VENV/bin/python"

if [ -x "$PY" ] && "$PY" -c 'import torch, safetensors.torch, safetensors.numpy, numpy' 2>/dev/null; then
  echo "bench venv ready: $VENV ($("$PY" -c 'import torch, safetensors; print("torch", torch.__version__, "safetensors", safetensors.__version__)'))"
  exit 0
fi

mkdir -p "$(dirname "$VENV")"
[ -x "$PY" ] || python3 -m venv "$VENV"

# The local sources pip is configured with (pip config list): wheel folders and file:// simple indexes.
LINKS=()
for key in global.find-links :env:.find-links global.extra-index-url global.index-url; do
  value=$(pip config get "$key" 2>/dev/null || true)
  for v in $value; do
    v="${v#file://}"
    [ -d "$v" ] && LINKS+=(--find-links "$v")
  done
done
# A flat --find-links over a simple index's root does not see its per-project folders: add those.
for root in /opt/pypi/simple /opt/pypi-more/simple; do
  [ -d "$root" ] || continue
  for p in torch safetensors numpy filelock typing-extensions typing_extensions sympy mpmath networkx jinja2 markupsafe fsspec setuptools; do
    [ -d "$root/$p" ] && LINKS+=(--find-links "$root/$p")
  done
done
if [ ${#LINKS[@]} -eq 0 ]; then
  echo "no local package folders configured (pip config list); install ${PACKAGES[*]} into $VENV by hand" >&2
  exit 1
fi
"$PY" -m pip install --no-index "${LINKS[@]}" "${PACKAGES[@]}"
"$PY" -c 'import torch, safetensors, numpy; print("bench venv ready:", torch.__version__, safetensors.__version__, numpy.__version__)'
