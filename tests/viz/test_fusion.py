import pytest
import torch

from crossmae.errors import CrossMAEError
from crossmae.viz.fusion import fusion_weights


def test_fusion_weights_label_the_input_column_first(tiny):
    model = tiny(depth=4, fusion_layers=[1, -1])
    matrix, columns = fusion_weights(model)
    assert columns == ["input", "2", "4"]
    torch.testing.assert_close(matrix, model.decoder.fusion.weight.detach())


def test_softmax_fusion_shows_the_applied_weights(tiny):
    model = tiny(fusion_weights="softmax", fusion_input=False)
    matrix, columns = fusion_weights(model)
    assert columns == ["1", "2"]
    torch.testing.assert_close(matrix.sum(1), torch.ones(3))
    torch.testing.assert_close(matrix, model.decoder.fusion.weight.softmax(1).detach())


def test_models_without_fusion_are_refused(tiny):
    with pytest.raises(CrossMAEError, match="no feature fusion"):
        fusion_weights(tiny("mae_vit_tiny_patch4_32"))
