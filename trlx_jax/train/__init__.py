"""Train state, jitted RL/SFT steps, the loop, checkpoints and metrics."""
