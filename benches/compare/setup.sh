#!/usr/bin/env bash
# Creates the virtualenvs the side-by-side benchmarks need (daisy 1.x and daisy 2.0 share a
# package name, so each gets its own). Usage: bash benches/compare/setup.sh [python]
# With `python`, also .venv-blockwise for python_bench.py: the blockwise Python package (a release
# build from python/, a few minutes) with dask, zarr, numpy and scipy.
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
make_venv .venv-daisy2 "daisy==2.0.0" "zarr>=3,<4" numpy numcodecs
make_venv .venv-dask "dask[array]" distributed "zarr>=3,<4" numpy numcodecs
# pyramid.py: ngff-zarr and ome-zarr-py (0.12 and later write zarr v3 / NGFF 0.5).
make_venv .venv-pyramid ngff-zarr "ome-zarr>=0.12" "dask[array]" "zarr>=3,<4" numpy
if [ "${1:-}" = python ]; then
  make_venv .venv-blockwise maturin cloudpickle "dask[array]" "zarr>=3,<4" numpy scipy numcodecs
  (cd "$here/../../python" && VIRTUAL_ENV="$here/.venv-blockwise" "$here/.venv-blockwise/bin/maturin" develop --release -q)
fi
echo "venvs ready in $here"
