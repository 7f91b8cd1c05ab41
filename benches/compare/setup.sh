#!/usr/bin/env bash
# Creates the three virtualenvs the side-by-side benchmark needs (daisy 1.x and daisy 2.0 share a
# package name, so each gets its own). Usage: bash benches/compare/setup.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
make_venv() {
  local dir="$here/$1"; shift
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  "$dir/bin/pip" install -q --upgrade pip >/dev/null
  "$dir/bin/pip" install -q "$@"
}
make_venv .venv-daisy1 "daisy<2" "zarr>=3,<4" numpy numcodecs
make_venv .venv-daisy2 "daisy>=2,<3" "zarr>=3,<4" numpy numcodecs
make_venv .venv-dask "dask[array]" distributed "zarr>=3,<4" numpy numcodecs
echo "venvs ready in $here"
