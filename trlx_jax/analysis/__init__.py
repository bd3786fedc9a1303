"""What the notebooks compute, as small tested functions (notebooks/ stay thin).

    curves            learning curves of a sweep (mean ± std over seeds per configuration),
                      seconds per phase
    samples           samples.jsonl rows: good and bad completions side by side
    simplex           a 3-token simplex: the KL ball and the eta path (numpy)
    tokens            a run's real token distributions under the TROLL projection and the
                      DPPO masks (from its two latest checkpoints)
    projection_plots  figures of the simplex, the eta curve, one token's support, TROLL vs DPPO
    tables            rows of dicts as markdown
    figures           a Figure without pyplot's global state; saving it as a named PNG
    demo              the small sweep a notebook trains when it is given no run directories

Runs are loaded and grouped by `trlx_jax.sweep` (`load_runs`, `group_runs`, `aggregate`).
Every plotting function returns a matplotlib Figure; `save_figure` writes it as a PNG.
"""
