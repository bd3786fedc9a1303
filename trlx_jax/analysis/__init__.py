"""What the notebooks compute, as small tested functions (notebooks/ stay thin).

    curves     learning curves of a sweep (mean ± std over seeds per configuration), phase times
    samples    samples.jsonl rows: good and bad completions side by side
    simplex    a 3-token simplex: the KL ball, the eta path and the TROLL projection
    tokens     a run's real token distributions: the TROLL projection and the DPPO masks
    demo       the small sweep a notebook trains when it is given no run directories

Runs are loaded and grouped by `trlx_jax.sweep` (`load_runs`, `group_runs`, `aggregate`).
Every plotting function returns a matplotlib Figure; `save_figure` writes it as a PNG.
"""
