"""Numeric kernels: chunked log-probs and top-K extraction, the KL trust-region projection."""
