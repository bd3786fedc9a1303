"""The README's python example runs as written and shows what its text claims."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_losses_agree_before_an_update():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "the README should hold exactly one python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(README), "exec"), {"__name__": "readme"})
    lines = {line.split()[0]: line.split() for line in out.getvalue().splitlines()}
    assert set(lines) == {"clip", "dppo_binary_tv", "dppo_topk_kl", "troll"}
    norms = {name: float(fields[fields.index("norm") + 1]) for name, fields in lines.items()}
    log_ratio = {name: float(fields[-1]) for name, fields in lines.items()}
    assert all(v < 1e-6 for v in log_ratio.values())
    assert norms["clip"] > 0
    assert abs(norms["dppo_binary_tv"] - norms["clip"]) <= 1e-5 * norms["clip"]
    assert abs(norms["dppo_topk_kl"] - norms["clip"]) <= 1e-5 * norms["clip"]
    assert abs(norms["troll"] - norms["clip"]) <= 0.1 * norms["clip"]
