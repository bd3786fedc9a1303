#!/usr/bin/env bash
# Stands in for Slurm's srun in the tests: records its options in $FAKE_SRUN_LOG_DIR/options,
# then starts $SLURM_NTASKS copies of the command on this one node with the variables srun
# gives each task, one log per task, and exits with the first failing task's status.
set -u
: > "$FAKE_SRUN_LOG_DIR/options"
while [[ $# -gt 0 && "$1" == --* ]]; do echo "$1" >> "$FAKE_SRUN_LOG_DIR/options"; shift; done
n="$SLURM_NTASKS"
pids=()
for ((i = 0; i < n; i++)); do
  SLURM_PROCID="$i" SLURM_LOCALID="$i" SLURM_NODEID=0 SLURM_STEP_ID=0 \
    SLURM_STEP_NODELIST="$SLURM_JOB_NODELIST" SLURM_STEP_NUM_NODES=1 SLURM_STEP_NUM_TASKS="$n" \
    SLURM_STEP_TASKS_PER_NODE="$n" "$@" > "$FAKE_SRUN_LOG_DIR/task_$i.log" 2>&1 &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { rc=$?; [[ $status -eq 0 ]] && status=$rc; }
done
exit "$status"
