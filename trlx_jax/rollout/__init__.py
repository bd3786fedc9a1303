"""Generation: a jitted KV-cache sampler that records behaviour log-probs and top-K."""
