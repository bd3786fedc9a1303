#!/usr/bin/env bash
# The main job on this machine: `python -m trlx_jax.cli.train`, configs/default.py unless a
# --config= is given.
#
# Needs: python with this package installed (`pip install -e .`; $PYTHON picks another
# interpreter). On a CPU that is all. On one GPU or TPU host the same command uses every local
# accelerator (the mesh's -1 axis takes all devices) once JAX for it is installed:
# `pip install -U "jax[cuda12]"` or `pip install -U "jax[tpu]"`.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/local.sh [--config=FILE[:ARG]] [--config.KEY=VALUE ...]

Runs the main job (warm-up, RL, evaluation) on this machine's devices; without --config it
runs configs/default.py. Rerunning the same command resumes an interrupted run, and reports a
finished one. Every key: python -m trlx_jax.cli.config --config=configs/default.py --help_config

Examples:
  launch/local.sh
  launch/local.sh --config=configs/arithmetic.py:clip --config.seed=1
EOF
}

has_config=0
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --config=*) has_config=1 ;;
  esac
done
config=()
if [[ $has_config -eq 0 ]]; then
  config=("--config=$(cd "$(dirname "$0")/.." && pwd)/configs/default.py")
fi
exec "${PYTHON:-python}" -m trlx_jax.cli.train "${config[@]+"${config[@]}"}" "$@"
