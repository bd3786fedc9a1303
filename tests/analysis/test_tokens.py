"""TokenView of a run's two latest checkpoints: TROLL's support and projection, DPPO's masks.

The run directory joins two policies that differ a lot: checkpoint 2 of the tiny sweep's first
run (seed 0) as the old policy and checkpoint 4 of its seed-1 run (another initialization) as
the new one, so most tokens are projected and masked.
"""

import json
import os
import shutil

import numpy as np
import pytest
from analysis_testing import SWEEP_METHODS

from trlx_jax.analysis import tokens
from trlx_jax.analysis.demo import config_file
from trlx_jax.config import load_config

K = 8
# The tiny sweep behind these (shared with the notebook tests) takes minutes on 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def view(tiny_sweep_runs, tmp_path_factory):
    runs, _ = tiny_sweep_runs
    first = os.path.join(runs, f"{SWEEP_METHODS[0]}__seed-0")
    other = os.path.join(runs, f"{SWEEP_METHODS[0]}__seed-1")
    run = str(tmp_path_factory.mktemp("joined") / "run")
    shutil.copytree(first, run)
    shutil.rmtree(os.path.join(run, "checkpoints", "4"))
    shutil.copytree(os.path.join(other, "checkpoints", "4"), os.path.join(run, "checkpoints", "4"))
    return tokens.token_view(run)


def test_support_probabilities_and_tail(view):
    n, t, s = view.valid.shape
    assert (n, s) == (4 * 4, 2 * K + 2) and view.steps == (2, 4)
    mask = view.response_mask.astype(bool)
    for probs in (view.old, view.new, view.projected):
        np.testing.assert_allclose(probs.sum(-1)[mask], 1.0, atol=1e-5)
        assert (probs[~view.valid] == 0).all()
    vocab = len(view.token_text)
    distinct = (view.valid[..., :-1]).sum(-1)
    np.testing.assert_array_equal(view.tail_size[mask], (vocab - distinct)[mask])
    # Each valid token id appears once; the sampled slot holds the sampled token.
    ids = np.where(view.valid[..., :-1], view.slot_ids[..., :-1], -2)[mask]
    assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in ids)
    sampled_ids = np.take_along_axis(view.slot_ids, view.sampled_slot[..., None], -1)[..., 0]
    np.testing.assert_array_equal(sampled_ids, view.sampled)


def test_projection_bounds_the_kl(view):
    mask = view.response_mask.astype(bool)
    active = view.active & mask
    assert active.mean() > 0.5  # two independent initializations are far apart
    np.testing.assert_array_equal(active, (view.kl_before > view.eps) & mask)
    assert (view.kl_after[active] <= view.eps + 1e-6).all()
    assert (view.kl_after[active] > 0.99 * view.eps).all()
    assert (view.eta[active] > 0).all() and (view.eta[mask & ~view.active] == 0).all()
    inside = mask & ~view.active
    np.testing.assert_allclose(view.projected[inside], view.new[inside], atol=1e-6)


def test_dppo_masks_follow_the_rule(view):
    mask = view.response_mask.astype(bool)
    pi, mu = view.pi_sampled, view.mu_sampled
    np.testing.assert_allclose(view.dppo_divergence["binary_tv"], np.abs(pi - mu), atol=1e-6)
    positive = (view.advantages > 0)[:, None]
    for variant, (low, high) in view.deltas.items():
        d = view.dppo_divergence[variant]
        masked = (positive & (pi > mu) & (d > high)) | (~positive & (pi < mu) & (d > low))
        np.testing.assert_array_equal(view.dppo_keep[variant] > 0, ~masked & mask, variant)
    rows = tokens.agreement(view)
    assert [r["dppo variant"] for r in rows] == list(tokens.DPPO_VARIANTS)
    for r in rows:
        assert r["both"] + r["TROLL only"] + r["DPPO only"] + r["neither"] == pytest.approx(1)
        assert r["TROLL projected"] == pytest.approx(view.active[mask].mean())


def test_slot_table_and_context(view):
    row, pos = tokens.most_moved(view)
    assert view.kl_before[row, pos] == view.kl_before[view.response_mask.astype(bool)].max()
    table = tokens.slot_table(view, row, pos)
    assert table[-1]["token"].startswith("tail (") and table[-1]["id"] == tokens.TAIL
    olds = [r["old"] for r in table[:-1]]
    assert olds == sorted(olds, reverse=True)
    assert sum(r["sampled"] for r in table) == 1
    assert sum(r["projected"] for r in table) == pytest.approx(1, abs=1e-5)
    assert tokens.context(view, row, pos).startswith(view.prompts[row])


def test_one_checkpoint_is_refused_with_the_fix(tiny_sweep_runs, tmp_path):
    runs, _ = tiny_sweep_runs
    run = str(tmp_path / "run")
    shutil.copytree(os.path.join(runs, f"{SWEEP_METHODS[0]}__seed-0"), run)
    shutil.rmtree(os.path.join(run, "checkpoints", "2"))
    with pytest.raises(ValueError, match="checkpoint_every"):
        tokens.token_view(run)
    with pytest.raises(FileNotFoundError, match="no checkpoints/"):
        tokens.checkpoint_steps(str(tmp_path))


def test_saved_config_adds_new_keys_and_keeps_the_runs_values(tiny_sweep_runs, tmp_path):
    runs, _ = tiny_sweep_runs
    saved = json.load(open(os.path.join(runs, f"{SWEEP_METHODS[0]}__seed-0", "config.json")))
    del saved["model"]["attention"]  # a key that configs/default.py gained after the run
    saved["rollout"]["num_samples"] = 3
    os.makedirs(tmp_path / "old_run")
    with open(tmp_path / "old_run" / "config.json", "w") as f:
        json.dump(saved, f)
    config = tokens.saved_config(str(tmp_path / "old_run"))
    default = load_config(config_file("default.py"))
    assert config.model.attention == default.model.attention
    assert config.rollout.num_samples == 3
    assert config.loss_name == SWEEP_METHODS[0]
