"""Every notebook runs headless (nbclient) on the tiny sweep (conftest), without a cell error,
and shows and saves its figures; the stored notebooks carry no outputs.

The notebooks read their inputs from the environment (TRLX_JAX_RUNS, TRLX_JAX_RUN,
TRLX_JAX_FIGURES, TRLX_JAX_QUICKSTART), which their kernels inherit. The executions (and the
tiny sweep they share with tests/analysis/test_tokens.py) take minutes on 2 cores: they are
marked slow (`python -m pytest -q -m slow tests/notebooks tests/analysis`); the check that the
notebooks are stored clean is not.
"""

import glob
import json
import os

import nbformat
import pytest
from analysis_testing import ROOT, SWEEP_METHODS, TINY
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(ROOT, "notebooks")
# notebook -> the PNGs it saves (and shows: one image/png output each)
FIGURES = {
    "inspect_results": ("learning_curves", "phase_times"),
    "troll_projection": ("simplex", "eta_curve", "token_support", "troll_vs_dppo"),
    "quickstart": ("learning_curves",),
}


def _execute(name: str, workdir, env: dict[str, str]) -> nbformat.NotebookNode:
    """Runs notebooks/<name>.ipynb in `workdir` with `env` added to the kernel's environment;
    raises CellExecutionError (with the cell and its traceback) on the first failing cell."""
    nb = nbformat.read(os.path.join(NOTEBOOKS, f"{name}.ipynb"), as_version=4)
    # The kernel imports this checkout (what the test tests), whatever is installed.
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    kernel_env = {**os.environ, "PYTHONPATH": path, **env}
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute(env=kernel_env)
    return nb


def _outputs(nb: nbformat.NotebookNode, mime: str) -> str:
    """Every `mime` output of the executed notebook, joined."""
    return "".join(str(out.get("data", {}).get(mime, "")) for cell in nb.cells
                   if cell.cell_type == "code" for out in cell.outputs)


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells
               if cell.cell_type == "code" for out in cell.outputs)


def _check_figures(nb: nbformat.NotebookNode, out_dir, names) -> None:
    saved = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(out_dir, "*.png")))
    assert saved == sorted(names)
    assert all(os.path.getsize(os.path.join(out_dir, f"{n}.png")) > 10_000 for n in names)
    assert _images(nb) == len(names)


@pytest.mark.slow
def test_inspect_results(tiny_sweep_runs, tmp_path):
    runs, cache = tiny_sweep_runs
    nb = _execute("inspect_results", tmp_path, {**cache, "TRLX_JAX_RUNS": runs,
                                               "TRLX_JAX_FIGURES": str(tmp_path / "fig")})
    _check_figures(nb, tmp_path / "fig", FIGURES["inspect_results"])
    text = _outputs(nb, "text/markdown")
    # One comparison-table row per method, each over both seeds.
    for method in SWEEP_METHODS:
        assert f"| loss_name={method} | 0,1 |" in text
    assert _outputs(nb, "text/html").count("<th>good</th><th>bad</th>") == len(SWEEP_METHODS)


@pytest.mark.slow
def test_troll_projection(tiny_sweep_runs, tmp_path):
    runs, cache = tiny_sweep_runs
    run = os.path.join(runs, f"{SWEEP_METHODS[0]}__seed-0")
    nb = _execute("troll_projection", tmp_path, {**cache, "TRLX_JAX_RUN": run,
                                                "TRLX_JAX_FIGURES": str(tmp_path / "fig")})
    _check_figures(nb, tmp_path / "fig", FIGURES["troll_projection"])
    tables = _outputs(nb, "text/markdown")
    assert "| KL(new \\|\\| old) | 1.168 |" in tables  # the spec's worked vector
    assert "| tail (" in tables and "| binary_tv |" in tables and "| topk_kl |" in tables


@pytest.mark.slow
def test_quickstart(tiny_sweep_runs, tmp_path):
    """The facade trains the embedded default (TROLL) at the sweep's tiny size (so the kernel
    finds every program in the sweep's compilation cache), then plots and generates."""
    runs, cache = tiny_sweep_runs
    overrides = {**TINY, "data.data_dir": os.path.join(os.path.dirname(runs), "tfds"),
                 "run_dir": str(tmp_path / "run")}
    nb = _execute("quickstart", tmp_path, {
        **cache, "TRLX_JAX_FIGURES": str(tmp_path / "fig"),
        "TRLX_JAX_QUICKSTART": json.dumps({k.replace(".", "__"): v for k, v in overrides.items()}),
    })
    _check_figures(nb, tmp_path / "fig", FIGURES["quickstart"])
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert summary["loss_name"] == "troll" and summary["steps"] == TINY["train.steps"]
    printed = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.outputs if out.get("name") == "stdout")
    for prompt in ("12+34=", "71-15=", "8+9=", "40-63="):
        assert prompt in printed
    assert "greedy test accuracy after RL" in printed


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(NOTEBOOKS, "*.ipynb"))),
                         ids=os.path.basename)
def test_notebooks_are_stored_clean(path):
    """No outputs or execution counts in git; valid nbformat; the install cell comes first."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert 'find_spec("trlx_jax") is None' in code[0].source
