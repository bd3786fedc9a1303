"""Sweeps: `python -m trlx_jax.cli.sweep {status,run,print,aggregate} SWEEP_FILE`.

    python -m trlx_jax.cli.sweep status configs/sweeps/example.py
    python -m trlx_jax.cli.sweep run configs/sweeps/example.py --parallel=2
    python -m trlx_jax.cli.sweep print configs/sweeps/example.py --form=slurm
    python -m trlx_jax.cli.sweep aggregate configs/sweeps/example.py     # or run directories

The sweep file format is in trlx_jax/sweep/spec.py; docs/launching.md walks through it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence

from trlx_jax.sweep import commands, curves, results
from trlx_jax.sweep.spec import Job, SweepError, expand, load_sweep
from trlx_jax.sweep.status import STATES, TO_RUN, run_jobs, statuses, subprocess_launcher


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trlx_jax.cli.sweep",
        description="Grids / lists of config overrides x seeds: status, run, print, aggregate.")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="each job's state (complete / interrupted / pending "
                            "/ conflict)")
    status.add_argument("sweep", help="sweep file (.py with get_sweep(), or .json)")
    run = sub.add_parser("run", help="run the jobs left here, one after another (or N at a "
                         "time), then aggregate")
    run.add_argument("sweep")
    run.add_argument("--parallel", type=int, default=1,
                     help="jobs at a time (each job uses all devices it sees; on one CPU keep 1)")
    run.add_argument("--python", default=sys.executable, help="interpreter for the jobs")
    run.add_argument("--no_aggregate", action="store_true", help="skip the aggregation after")
    show = sub.add_parser("print", help="print the jobs left as commands for a cluster")
    show.add_argument("sweep")
    show.add_argument("--form", choices=commands.FORMS, default="list",
                      help="list: one shell command per job; slurm: a jobs file and one sbatch "
                      "--array command; tpu: one launch/tpu_pod.sh run per job")
    show.add_argument("--all", action="store_true", help="also the complete jobs")
    show.add_argument("--python", default="python", help="interpreter in --form=list commands")
    show.add_argument("--tpu_name", default="$TPU_NAME", help="--form=tpu: the TPU VM name")
    show.add_argument("--tpu_zone", default="$ZONE", help="--form=tpu: its zone")
    agg = sub.add_parser("aggregate", help="tables (CSV, markdown) and seed-band curves of "
                         "finished runs")
    agg.add_argument("inputs", nargs="+", help="a sweep file, or run directories / roots / globs")
    agg.add_argument("--out", default="", help="output directory (default ROOT/aggregate)")
    agg.add_argument("--curve", default=curves.MAIN_CURVE,
                     help="metrics.jsonl key to plot per configuration")
    agg.add_argument("--smooth", type=int, default=1,
                     help="trailing mean over this many points (e.g. 10 for reward/mean)")
    return parser


def _jobs(path: str) -> tuple[str, list[Job]]:
    sweep = load_sweep(path)
    return sweep.root, expand(sweep)


def _status(path: str) -> int:
    _, jobs = _jobs(path)
    states = statuses(jobs)
    width = max(len(s.job.id) for s in states)
    for s in states:
        print(f"{s.job.id:{width}s}  {s.state:11s}  {s.detail.splitlines()[0]}")
    counts = Counter(s.state for s in states)
    print(", ".join(f"{counts[k]} {k}" for k in STATES if counts[k]) + f" of {len(states)} jobs")
    return 0


def _run(args: argparse.Namespace) -> int:
    root, jobs = _jobs(args.sweep)
    outcomes = run_jobs(statuses(jobs), os.path.join(root, "logs"),
                        launch=subprocess_launcher(args.python), parallel=args.parallel,
                        report=lambda line: print(line, flush=True))
    failed = [o for o in outcomes if o.returncode not in (0, None)]
    conflicts = [o for o in outcomes if o.status.state == "conflict"]
    for o in failed:
        print(f"failed: {o.status.job.id} (exit {o.returncode}); log {o.log}; rerun this "
              "command to retry it (it resumes from its last checkpoint)", file=sys.stderr)
    for o in conflicts:
        print(f"conflict: {o.status.detail}", file=sys.stderr)
    if not args.no_aggregate:
        _write_aggregate([j.run_dir for j in jobs], os.path.join(root, "aggregate"),
                         curves.MAIN_CURVE, 1)
    return 1 if failed or conflicts else 0


def _print(args: argparse.Namespace) -> int:
    root, jobs = _jobs(args.sweep)
    left = [s.job for s in statuses(jobs) if args.all or s.state in TO_RUN]
    if not left:
        print(f"# every job of {args.sweep} is complete (--all prints them anyway)",
              file=sys.stderr)
        return 0
    if args.form == "list":
        print("\n".join(commands.shell_commands(left, args.python)))
    elif args.form == "tpu":
        print("\n".join(commands.tpu_commands(left, args.tpu_name, args.tpu_zone)))
    else:
        jobs_file = commands.jobs_file_path(root)
        text, command = commands.slurm_array(left, jobs_file)
        os.makedirs(root, exist_ok=True)
        with open(jobs_file, "w") as f:
            f.write(text)
        print(f"# wrote {jobs_file} ({len(left)} jobs); submit the array with:", file=sys.stderr)
        print(command)
    return 0


def _write_aggregate(inputs: Sequence[str], out: str, curve: str, smooth: int) -> None:
    """Writes out/{summary.csv, runs.csv, summary.md, curves/*.png} and prints the table."""
    runs = results.load_runs(inputs)  # paths that do not exist (jobs not started) add none
    if not runs:
        print(f"aggregate: no run directories under {', '.join(inputs)} yet", file=sys.stderr)
        return
    rows = results.aggregate(runs)
    table = results.markdown_table(rows)
    os.makedirs(out, exist_ok=True)
    written = [results.write_csv(rows, os.path.join(out, "summary.csv")),
               results.write_csv(results.run_rows(runs), os.path.join(out, "runs.csv"))]
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(table + "\n")
    written.append(os.path.join(out, "summary.md"))
    written += curves.plot_groups(results.group_runs(runs), os.path.join(out, "curves"),
                                  key=curve, smooth=smooth)
    print(table)
    print(f"\n{len(runs)} runs, {len(rows)} configurations (mean ± sample std over seeds of "
          f"complete runs). Wrote: {', '.join(written)}")


def _aggregate(args: argparse.Namespace) -> int:
    inputs, out = list(args.inputs), args.out
    if len(inputs) == 1 and inputs[0].endswith((".py", ".json")):
        root, jobs = _jobs(inputs[0])
        inputs, out = [j.run_dir for j in jobs], out or os.path.join(root, "aggregate")
    elif not out:
        if len(inputs) != 1 or not os.path.isdir(inputs[0]):
            print("error: give --out=DIR for several inputs or a glob", file=sys.stderr)
            return 2
        out = os.path.join(inputs[0], "aggregate")
    _write_aggregate(inputs, out, args.curve, args.smooth)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a bad sweep file, 1: a job failed)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "status":
            return _status(args.sweep)
        if args.command == "run":
            return _run(args)
        if args.command == "print":
            return _print(args)
        return _aggregate(args)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
