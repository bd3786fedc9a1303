#!/usr/bin/env bash
# N processes of one multi-controller JAX program on this machine, talking over 127.0.0.1.
#
# Needs: bash, python with this package installed (`pip install -e .`; $PYTHON picks another
# interpreter), a free local TCP port. Nothing else: the processes run on simulated CPU
# devices, so this is how a laptop or CI checks what a TPU pod or a Slurm job will do.
#
# Each process gets TRLX_COORDINATOR=127.0.0.1:PORT, TRLX_NUM_PROCESSES=N and
# TRLX_PROCESS_ID=i (read by trlx_jax.distributed.initialize, which cli.train calls first),
# JAX_PLATFORMS=cpu and XLA_FLAGS=--xla_force_host_platform_device_count=D (its own D
# devices; the job sees N x D). CPU collectives go through gloo, JAX's default.
# Every process logs to LOG_DIR/process_<i>.log; process 0's log is also shown here. When one
# process fails the others are stopped (they would wait for it forever) and this script exits
# with its status; Ctrl-C / SIGTERM are passed on, so trainers save a checkpoint first.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/multiprocess_local.sh [OPTIONS] N [ARGS...]

Runs N local processes of `python -m trlx_jax.cli.train ARGS` (or of --module / --script) as
one multi-controller JAX job on 127.0.0.1, each with D simulated CPU devices.

Options:
  --devices_per_process=D  simulated CPU devices per process (default 2)
  --port=PORT              coordinator port on 127.0.0.1 (default: a free one)
  --log_dir=DIR            per-process logs DIR/process_<i>.log
                           (default runs/multiprocess_logs/<date>-<pid>)
  --module=M               run `python -m M ARGS` (default trlx_jax.cli.train)
  --script=FILE            run `python FILE ARGS` instead
  -h, --help               this help

Example (2 processes x 2 devices, the same run as 1 process x 4 devices):
  launch/multiprocess_local.sh 2 --config=configs/default.py --config.run_dir=runs/mp2
EOF
}

devices=2
port=""
log_dir=""
entry=(-m trlx_jax.cli.train)
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --devices_per_process=*) devices="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --log_dir=*) log_dir="${1#*=}" ;;
    --module=*) entry=(-m "${1#*=}") ;;
    --script=*) entry=("${1#*=}") ;;
    --*) echo "error: unknown option $1 (options come before N; see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: give the number of processes N (a positive integer) before the program's" \
    "arguments; see --help" >&2
  exit 2
fi
if [[ ! "$devices" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: --devices_per_process=$devices must be a positive integer" >&2
  exit 2
fi
n="$1"
shift
python="${PYTHON:-python}"
if [[ -z "$port" ]]; then
  port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
log_dir="${log_dir:-runs/multiprocess_logs/$(date +%Y%m%d-%H%M%S)-$$}"
mkdir -p "$log_dir"

# Keep the caller's XLA flags except a device count of its own.
xla_flags="$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[^ ]*//g')"
xla_flags="${xla_flags} --xla_force_host_platform_device_count=${devices}"

echo "multiprocess_local: $n processes x $devices CPU devices, coordinator 127.0.0.1:$port," \
  "logs in $log_dir" >&2
pids=()
for ((i = 0; i < n; i++)); do
  TRLX_COORDINATOR="127.0.0.1:$port" TRLX_NUM_PROCESSES="$n" TRLX_PROCESS_ID="$i" \
    JAX_PLATFORMS=cpu XLA_FLAGS="$xla_flags" \
    "$python" -u "${entry[@]}" "$@" >"$log_dir/process_$i.log" 2>&1 &
  pids+=("$!")
done
tail -n +1 -f --pid="${pids[0]}" "$log_dir/process_0.log" &
tail_pid=$!

stop_all() {  # stop_all SIGNAL: signal every process still running, then SIGKILL after 20 s
  local pid
  for pid in "${pids[@]}"; do kill "-$1" "$pid" 2>/dev/null || true; done
  for _ in $(seq 40); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && return
    sleep 0.5
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'echo "multiprocess_local: interrupted, stopping all processes" >&2; stop_all TERM;
      kill "$tail_pid" 2>/dev/null || true; exit 130' INT TERM

status=0
failed=""
running=("${!pids[@]}")
while [[ ${#running[@]} -gt 0 && -z "$failed" ]]; do
  still=()
  for i in "${running[@]}"; do
    if kill -0 "${pids[$i]}" 2>/dev/null; then
      still+=("$i")
    else
      rc=0
      wait "${pids[$i]}" || rc=$?
      if [[ $rc -ne 0 && -z "$failed" ]]; then
        failed="$i"
        status=$rc
      fi
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  [[ ${#running[@]} -gt 0 && -z "$failed" ]] && sleep 0.2
done

if [[ -n "$failed" ]]; then
  echo "multiprocess_local: process $failed failed (exit $status); stopping the others." \
    "Its log, $log_dir/process_$failed.log, ends with:" >&2
  tail -n 20 "$log_dir/process_$failed.log" >&2
  stop_all TERM
fi
wait "$tail_pid" 2>/dev/null || true
exit "$status"
