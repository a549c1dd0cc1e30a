"""U-Net specifics: any input size comes back at its own resolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softlabels.models import UNet


@pytest.mark.parametrize("depth", [3, 4])
@pytest.mark.parametrize("upsample", ["bilinear", "transpose"])
@pytest.mark.parametrize("hw", [(1, 1), (5, 7), (37, 53), (45, 60), (48, 64), (17, 100)])
def test_output_matches_input_size(hw, depth, upsample) -> None:
    model = UNet(3, 2, base_width=4, depth=depth, upsample=upsample, norm="groupnorm")
    out = model(torch.rand(1, 2, *hw))
    assert out.shape == (1, 3, *hw)


def test_padding_then_crop_keeps_pixels_aligned() -> None:
    # An input that needs padding must give the same logits as the input padded by hand
    # (edge replication to the next multiple of 2**depth), cropped back. A crop taken from
    # the wrong place or a shifted pad would change the values.
    torch.manual_seed(0)
    model = UNet(4, 3, base_width=4, depth=3).eval()
    x = torch.rand(2, 3, 37, 53)
    padded = F.pad(x, (0, 3, 0, 3), mode="replicate")
    with torch.no_grad():
        direct = model(x)
        by_hand = model(padded)[..., :37, :53]
    torch.testing.assert_close(direct, by_hand, rtol=0, atol=1e-6)

