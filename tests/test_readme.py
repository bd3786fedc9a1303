"""The README's python examples run as written and show what their text claims."""

import contextlib
import io
import json
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(marker: str) -> str:
    """The one python block of the README that contains `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"the README should hold one python example with {marker!r}"
    return found[0]


def run_block(code: str) -> tuple[str, dict]:
    """Runs a README block; -> (what it printed, its globals)."""
    out, namespace = io.StringIO(), {"__name__": "readme"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    return out.getvalue(), namespace


def test_readme_example_runs_and_losses_agree_before_an_update():
    out, _ = run_block(readme_block("policy_loss(name)"))
    lines = {line.split()[0]: line.split() for line in out.splitlines()}
    assert set(lines) == {"clip", "dppo_binary_tv", "dppo_topk_kl", "troll"}
    norms = {name: float(fields[fields.index("norm") + 1]) for name, fields in lines.items()}
    log_ratio = {name: float(fields[-1]) for name, fields in lines.items()}
    assert all(v < 1e-6 for v in log_ratio.values())
    assert norms["clip"] > 0
    assert abs(norms["dppo_binary_tv"] - norms["clip"]) <= 1e-5 * norms["clip"]
    assert abs(norms["dppo_topk_kl"] - norms["clip"]) <= 1e-5 * norms["clip"]
    assert abs(norms["troll"] - norms["clip"]) <= 0.1 * norms["clip"]


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Runs in an empty directory, with TFDS writing the config's task under it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return tmp_path


@pytest.mark.slow  # a short training run of the facade, about two minutes on 2 cores
def test_readme_facade_example_trains_on_prompts_with_metadata(in_tmp_dir):
    out, namespace = run_block(readme_block("trlx_jax.train("))
    # The example prints two lines; TFDS may announce the dataset it builds around them.
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("greedy reward "))
    greedy, completions = lines[first], lines[first + 1]
    assert re.fullmatch(r"greedy reward \d\.\d\d, mean length \d+\.\d", greedy)
    assert len(eval(completions)) == 2
    run_dir = in_tmp_dir / "runs" / "facade_example"
    with open(run_dir / "facade.json") as f:
        assert json.load(f)["reward_fn"] == "reward_fn"
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    # 20 eval prompts; the reward term is the user's, metric_fn's mean is logged.
    assert rows[0]["eval/num_problems"] == 20 and "eval/metrics/length" in rows[0]
    assert "reward/reward_fn/mean" in rows[1]
    assert os.path.isfile(run_dir / "hf" / "model.safetensors")
    assert namespace["trainer"].run_dir == "runs/facade_example"


@pytest.mark.slow
def test_readme_trlx_script_runs_unchanged_but_for_the_import(in_tmp_dir):
    code = readme_block("import trlx_jax as trlx  # was: import trlx")
    _, namespace = run_block(code)
    summary = namespace["trainer"].summary
    assert summary["steps"] == 1000 and summary["warmup"]["steps"] == 900
