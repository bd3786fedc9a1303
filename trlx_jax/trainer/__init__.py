"""The RL trainer: the rollout -> loss-batch seam, train state, jitted steps, the loop, metrics."""
