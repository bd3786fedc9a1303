"""samples.jsonl rows: reading, good/bad pairing, the HTML table."""

from analysis_testing import write_run

from trlx_jax.analysis import samples
from trlx_jax.sweep import load_run


def _row(step, prompt, completion, correct, reward=None):
    return {"step": step, "prompt": prompt, "completion": completion, "answer": "3",
            "reward": float(correct) if reward is None else reward, "correct": correct}


def test_good_and_bad_pairs_latest_first(tmp_path):
    rows = [_row(0, "1+2=", "4", False), _row(0, "2+1=", "3", True),
            _row(5, "1+2=", "3", True), _row(5, "2+1=", "<b>", False),
            _row(5, "0+3=", "3", True)]
    path = write_run(tmp_path, "r", loss_name="clip", seed=0, samples=rows)
    read = samples.read_samples(load_run(path))
    assert len(read) == 5 and all(r["run"] == load_run(path).path for r in read)
    assert samples.read_samples(str(tmp_path / "nowhere")) == []
    pairs = samples.good_and_bad(read, n=2)
    assert [(g["step"], g["prompt"]) for g, _ in pairs] == [(5, "1+2="), (5, "0+3=")]
    assert [(b["step"], b["prompt"]) for _, b in pairs] == [(5, "2+1="), (0, "1+2=")]
    table = samples.samples_html(pairs)
    assert table.count("<tr>") == 3
    # The completion "<b>" is escaped, shown in bold as text.
    assert "<b><code>&lt;b&gt;</code></b>" in table
    assert "r, step 5" in table


def test_short_side_is_filled_and_reward_decides_without_correct():
    rows = [{"step": 1, "prompt": "p", "completion": "c", "reward": 0.5},
            {"step": 1, "prompt": "q", "completion": "d", "reward": 0.5},
            {"step": 1, "prompt": "r", "completion": "e", "reward": 0.0}]
    pairs = samples.good_and_bad(rows, n=3)
    assert [(g["prompt"], b and b["prompt"]) for g, b in pairs] == [("p", "r"), ("q", None)]
    assert "<td>-</td>" in samples.samples_html(pairs)
    assert "no samples" in samples.samples_html([])
