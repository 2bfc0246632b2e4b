"""Layer-wise lr decay: scales for a 12-block ViT, computed by hand."""

import pytest
from timm.models.vision_transformer import VisionTransformer

from crossmae.errors import CrossMAEError
from crossmae.eval.layer_decay import layer_decay_scales, layer_id


def test_vit_base_scales_are_065_to_the_13_minus_layer():
    vit = VisionTransformer(
        img_size=32, patch_size=16, embed_dim=16, depth=12, num_heads=2, num_classes=10,
        global_pool="avg",
    )  # fmt: skip
    scale = layer_decay_scales(depth=12, decay=0.65)
    by_name = {name: scale(name) for name, _ in vit.named_parameters()}
    # Layer 0: embeddings; layer i (1..12): block i-1; layer 13: fc_norm and head.
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        assert by_name[name] == pytest.approx(0.65**13)
    for i in range(12):
        for name in (f"blocks.{i}.norm1.weight", f"blocks.{i}.attn.qkv.weight",
                     f"blocks.{i}.mlp.fc2.bias"):  # fmt: skip
            assert by_name[name] == pytest.approx(0.65 ** (13 - (i + 1)))
    for name in ("fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"):
        assert by_name[name] == 1.0
    assert len(set(by_name.values())) == 14


def test_layer_id_and_bad_decay():
    assert layer_id("blocks.3.attn.proj.weight", 12) == 4
    assert layer_id("norm.weight", 24) == 25
    assert layer_decay_scales(24, 1.0)("patch_embed.proj.weight") == 1.0
    with pytest.raises(CrossMAEError, match="layer decay"):
        layer_decay_scales(12, 1.5)


def test_register_tokens_learn_with_the_embeddings_and_decay_0_is_refused():
    scales = layer_decay_scales(12, 0.65)
    assert scales("reg_token") == scales("pos_embed") == 0.65**13
    with pytest.raises(CrossMAEError, match="layer decay"):
        layer_decay_scales(12, 0.0)  # every layer but the head would be frozen
