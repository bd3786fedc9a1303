"""Generation: a jitted KV-cache sampler that records behaviour log-probs and top-K per token.

    generate(model, prompt_tokens, prompt_mask, *, key, max_new_tokens, ...) -> Rollout
    SamplingParams(temperature, top_k, top_p, record_top_k)
"""

from trlx_jax.rollout.sampler import FINISH_LENGTH, FINISH_STOP, Rollout, generate
from trlx_jax.rollout.sampling import SamplingParams

__all__ = ["FINISH_LENGTH", "FINISH_STOP", "Rollout", "SamplingParams", "generate"]
