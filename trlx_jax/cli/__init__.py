"""Entry points: train, evaluate, export."""
