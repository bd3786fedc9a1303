#!/usr/bin/env bash
# A run on a Cloud TPU VM pod slice: create / setup / run / copy / delete, multi-controller JAX.
#
# Needs: the gcloud CLI, logged in (`gcloud auth login`) with a project that has TPU quota in
# the zone; git (setup ships this checkout's tracked and untracked-not-ignored files). No
# Pathways, no GKE: every worker of the slice runs the same `python -m trlx_jax.cli.train`, with
# TRLX_DISTRIBUTED=tpu, so trlx_jax.distributed calls jax.distributed.initialize(), which reads
# the slice's workers from the TPU metadata server (process 0 on worker 0).
# --dry-run prints every command (one per line, shell-quoted) instead of running it.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/tpu_pod.sh [OPTIONS] STEP [TRAIN_ARGS...]

Steps (each prints its commands; --dry-run prints without running):
  create   gcloud compute tpus tpu-vm create NAME (--accelerator, --version, --spot)
  setup    ship this checkout to every worker (~/trlx_jax) and pip install it with jax[tpu]
  run      python -m trlx_jax.cli.train TRAIN_ARGS --config.run_dir=RUN_DIR on every worker
  copy     copy RUN_DIR from worker 0 (process 0 writes the run's files) to DEST
  delete   delete the TPU VM
  all      create, setup, run, copy, delete (copy and delete also after a failed run)

Options:
  --name=NAME            TPU VM name (required)
  --zone=ZONE            zone (required), e.g. europe-west4-b
  --project=PROJECT      project (default: gcloud's configured one)
  --accelerator=TYPE     accelerator type for create (default v5litepod-32)
  --version=RUNTIME      TPU software version for create (default v2-alpha-tpuv5-lite)
  --spot                 create a Spot TPU (cheaper, preemptible; rerun `run` to resume)
  --jax=SPEC             pip requirement for JAX on TPU (default jax[tpu])
  --run_dir=DIR          run directory on the workers, relative to ~/trlx_jax
                         (default runs/NAME); multi-host checkpoints need it on a filesystem
                         every worker mounts at the same path (see docs/launching.md)
  --dest=DIR             local destination of copy (default runs/)
  --env=KEY=VALUE        extra environment for every worker's process (repeatable)
  --dry-run              print the commands, run nothing
  -h, --help             this help

Example:
  launch/tpu_pod.sh --name=trlx --zone=europe-west4-b --dry-run all \
      --config=configs/default.py --config.train.steps=200
EOF
}

name=""
zone=""
project=""
accelerator="v5litepod-32"
version="v2-alpha-tpuv5-lite"
spot=0
jax_spec="jax[tpu]"
run_dir=""
dest="runs/"
dry_run=0
extra_env=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator=*) accelerator="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --spot) spot=1 ;;
    --jax=*) jax_spec="${1#*=}" ;;
    --run_dir=*) run_dir="${1#*=}" ;;
    --dest=*) dest="${1#*=}" ;;
    --env=*)
      kv="${1#*=}"
      if [[ ! "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; then
        echo "error: --env=$kv must be KEY=VALUE" >&2; exit 2
      fi
      extra_env+=("$kv") ;;
    --dry-run) dry_run=1 ;;
    --*) echo "error: unknown option $1 (options come before STEP; see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
step="${1:-}"
[[ $# -gt 0 ]] && shift
case "$step" in
  create|setup|run|copy|delete|all) ;;
  "") echo "error: give a STEP (create, setup, run, copy, delete or all); see --help" >&2; exit 2 ;;
  *) echo "error: unknown STEP '$step' (create, setup, run, copy, delete or all)" >&2; exit 2 ;;
esac
if [[ -z "$name" || -z "$zone" ]]; then
  echo "error: --name=NAME and --zone=ZONE are required; see --help" >&2
  exit 2
fi
run_dir="${run_dir:-runs/$name}"
train_args=("$@")
remote_dir="trlx_jax"  # on every worker, relative to the home directory
archive="/tmp/trlx_jax-$name.tar.gz"

where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")

# q WORD: WORD shell-quoted as Python's shlex.quote does (plain words stay plain).
q() {
  if [[ "$1" =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\"\'\"\'}"
  fi
}

# run CMD...: print it shell-quoted on one line, then run it unless --dry-run.
run() {
  local word line="+"
  for word in "$@"; do line+=" $(q "$word")"; done
  echo "$line"
  if [[ $dry_run -eq 0 ]]; then "$@"; fi
}

# The command line of every worker's process: its environment, then the trainer.
worker_command() {
  local words=("cd ~/$remote_dir &&" env) word
  for word in TRLX_DISTRIBUTED=tpu PYTHONUNBUFFERED=1 "${extra_env[@]+"${extra_env[@]}"}" \
      python3 -m trlx_jax.cli.train "${train_args[@]+"${train_args[@]}"}" \
      "--config.run_dir=$run_dir"; do
    words+=("$(q "$word")")
  done
  echo "${words[*]}"
}

step_create() {
  local flags=(--accelerator-type="$accelerator" --version="$version")
  [[ $spot -eq 1 ]] && flags+=(--spot)
  run gcloud compute tpus tpu-vm create "$name" "${where[@]}" "${flags[@]}"
}

step_setup() {
  local root
  root="$(cd "$(dirname "$0")/.." && pwd)"
  # The working tree as the workers should see it: tracked files plus untracked ones git does
  # not ignore (so runs/, caches and virtual environments stay home).
  run bash -c "cd $(q "$root") && git ls-files -z --cached --others --exclude-standard \
| tar --null -czf $(q "$archive") -T -"
  run gcloud compute tpus tpu-vm scp "$archive" "$name:~/" "${where[@]}" --worker=all
  run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all --command="mkdir -p \
~/$remote_dir && tar -xzf ~/$(basename "$archive") -C ~/$remote_dir && cd ~/$remote_dir \
&& python3 -m pip install -U $(q "$jax_spec") && python3 -m pip install -e ."
}

step_run() {
  run gcloud compute tpus tpu-vm ssh "$name" "${where[@]}" --worker=all \
    --command="$(worker_command)"
}

step_copy() {
  run mkdir -p "$dest"
  run gcloud compute tpus tpu-vm scp --recurse "$name:~/$remote_dir/$run_dir" "$dest" \
    "${where[@]}" --worker=0
}

step_delete() {
  run gcloud compute tpus tpu-vm delete "$name" "${where[@]}" --quiet
}

if [[ "$step" == all ]]; then
  step_create
  step_setup
  status=0
  step_run || status=$?
  step_copy || status=$((status ? status : $?))
  step_delete
  exit "$status"
fi
"step_$step"
