"""Model FLOPs against a count by hand."""

import pytest

from trlx_jax.models import ModelConfig
from trlx_jax.models.flops import attention_flops, forward_flops, layer_matmul_params, train_flops

# V 10, D 4, 2 heads / 1 kv head of dim 3, MLP 5, 2 layers.
CONFIG = ModelConfig(model_type="llama", vocab_size=10, hidden_size=4, intermediate_size=5,
                     num_layers=2, num_heads=2, num_kv_heads=1, head_dim=3)


def test_counts_by_hand():
    # q 4x2x3 = 24, k and v 4x1x3 = 12 each, o 2x3x4 = 24; gate, up, down 4x5 = 20 each.
    assert layer_matmul_params(CONFIG) == 24 + 12 + 12 + 24 + 3 * 20
    # 2 rows of 6 tokens: 4 x 2 x 6^2 x 2 heads x 3 x 2 layers = 3,456, halved when causal.
    assert attention_flops(CONFIG, 2, 6, causal=False) == 3456
    assert attention_flops(CONFIG, 2, 6) == 1728
    # Layers 2 x 2 x 132 x 12 tokens = 6,336; LM head on 3 positions per row 2 x 40 x 6 = 480.
    assert forward_flops(CONFIG, 2, 6, head_tokens=3) == 6336 + 480 + 1728
    assert train_flops(CONFIG, 2, 6, head_tokens=3) == 3 * (6336 + 480 + 1728)


def test_six_params_tokens_rule():
    # Without attention's share, training is 6 x (layer weights + head) x tokens.
    params = CONFIG.num_layers * layer_matmul_params(CONFIG) + CONFIG.hidden_size * 10
    tokens = 4 * 7
    attention = 3 * attention_flops(CONFIG, 4, 7)
    assert train_flops(CONFIG, 4, 7) - attention == pytest.approx(6 * params * tokens)
