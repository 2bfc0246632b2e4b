"""Feature choice for the probes and batched extraction."""

import pytest
import torch

from crossmae.errors import CrossMAEError
from crossmae.eval.backbone import load_backbone
from crossmae.eval.features import extract_features, feature_extractor

from conftest import REFERENCE_DIR


def test_fused_features_are_the_last_decoder_blocks_mixture():
    backbone = load_backbone(REFERENCE_DIR / "crossmae_wfm_input_pr025.checkpoint.pth")
    model = backbone.autoencoder
    extractor, report = feature_extractor(backbone, "fused")
    assert report is None and extractor.num_features == 64
    imgs = torch.randn(2, 3, 32, 32)
    out = model.encoder(imgs, return_blocks=range(4), return_input=True)
    stacked = torch.stack(out.intermediates)  # (5, B, N, D): input + 4 blocks
    w = model.decoder.fusion.weight[-1]
    mixed = model.decoder.fusion.norms[-1]((w.view(-1, 1, 1, 1) * stacked).sum(0))
    torch.testing.assert_close(extractor(imgs), mixed[:, 1:].mean(1), rtol=1e-5, atol=1e-5)


def test_fused_needs_fusion_and_the_pretraining_size():
    with pytest.raises(CrossMAEError, match="feature fusion"):
        feature_extractor(load_backbone(REFERENCE_DIR / "mae_npl.checkpoint.pth"), "fused")
    backbone = load_backbone(REFERENCE_DIR / "crossmae_wfm_pr075.checkpoint.pth")
    with pytest.raises(CrossMAEError, match="pretraining image size"):
        feature_extractor(backbone, "fused", img_size=64)
    with pytest.raises(CrossMAEError, match="features must be one of"):
        feature_extractor(backbone, "mean")


def test_extractor_is_frozen_and_extraction_keeps_order():
    backbone = load_backbone(REFERENCE_DIR / "mae_npl.checkpoint.pth")
    extractor, _ = feature_extractor(backbone, "avg")
    assert not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())
    imgs, labels = torch.randn(5, 3, 32, 32), torch.randint(10, (5,))
    batches = [(imgs[:2], labels[:2]), (imgs[2:], labels[2:])]
    feats, got = extract_features(extractor, batches, torch.device("cpu"))
    assert feats.shape == (5, 64) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, extractor(imgs))
    assert torch.equal(got, labels)
    with pytest.raises(CrossMAEError, match="no images"):
        extract_features(extractor, [], torch.device("cpu"))


@pytest.mark.parametrize("case", ["mae_npl", "crossmae_wfm_input_pr025"])
def test_avg_and_token_features_are_what_their_names_say(case):
    """avg: mean of the last block's patch tokens, parameter-free LN; token: [CLS] after
    the final norm (parameter-free for a fusion encoder, which has none)."""
    import torch.nn.functional as F

    backbone = load_backbone(REFERENCE_DIR / f"{case}.checkpoint.pth")
    model, imgs = backbone.autoencoder, torch.randn(3, 3, 32, 32)
    avg, _ = feature_extractor(backbone, "avg")
    token, _ = feature_extractor(backbone, "token")
    last = model.encoder(imgs, return_blocks=[model.config.depth - 1]).intermediates[-1]
    torch.testing.assert_close(avg(imgs), F.layer_norm(last[:, 1:].mean(1), (64,), eps=1e-6),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    cls = model.encoder(imgs).tokens[:, 0]
    if not model.config.encoder_final_norm:
        cls = F.layer_norm(cls, (64,), eps=1e-6)
    torch.testing.assert_close(token(imgs), cls, rtol=1e-5, atol=1e-5)
