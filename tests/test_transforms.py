"""Paper transforms: sizes, crop geometry, RGB conversion and CLIP normalisation on known images."""
import numpy as np
import pytest
import torch
from PIL import Image

from otterlib.data.transforms import CLIP_MEAN, CLIP_STD, default_resize_size, eval_transform, train_transform

MEAN = torch.tensor(CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def normalised(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) CLIP-normalised, computed by hand."""
    return (torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 255 - MEAN) / STD


def pattern(h: int, w: int) -> np.ndarray:
    """Pixels that identify their position: R = row, G = column, B = (row + 2 col) mod 256."""
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([r % 256, c % 256, (r + 2 * c) % 256], axis=-1).astype(np.uint8)


def test_default_resize_keeps_the_paper_ratio():
    assert default_resize_size(224) == 256
    assert default_resize_size(64) == 73
    assert default_resize_size(128) == 146


def test_uniform_image_gives_exact_clip_normalisation():
    colour = (255, 0, 128)
    img = Image.new("RGB", (400, 300), colour)
    out = eval_transform()(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = (torch.tensor(colour, dtype=torch.float32) / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    # bicubic resizing of a constant image may round by at most one grey level
    assert torch.allclose(out, expected.view(3, 1, 1).expand_as(out), atol=1.01 / 255 / min(CLIP_STD))
    assert torch.allclose(out[:, 100, 100], expected, atol=1e-6)


def test_eval_centre_crop_of_an_image_already_at_resize_size():
    pixels = pattern(256, 256)
    out = eval_transform(224, 256)(Image.fromarray(pixels))
    # Resize(256) of a 256x256 image is the identity; the centre crop starts at (16, 16)
    assert torch.allclose(out, normalised(pixels[16:240, 16:240]), atol=1e-6)


def test_eval_resizes_the_shorter_side_with_bicubic():
    img = Image.fromarray(pattern(300, 400))
    expected_resized = np.asarray(img.resize((341, 256), Image.BICUBIC))  # shorter side 300 -> 256
    top, left = (256 - 224) // 2, (341 - 224) // 2
    out = eval_transform()(img)
    assert torch.allclose(out, normalised(expected_resized[top:top + 224, left:left + 224]), atol=1e-6)


def test_train_random_crop_is_a_window_of_the_resized_image():
    pixels = pattern(73, 73)  # already at resize size for image_size=64
    transform = train_transform(64)
    offsets = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = transform(Image.fromarray(pixels))
        assert out.shape == (3, 64, 64)
        # R encodes the row and G the column, so the top-left pixel gives the offset
        top = round(float(out[0, 0, 0] * STD[0, 0, 0] + MEAN[0, 0, 0]) * 255)
        left = round(float(out[1, 0, 0] * STD[1, 0, 0] + MEAN[1, 0, 0]) * 255)
        assert 0 <= top <= 9 and 0 <= left <= 9
        assert torch.allclose(out, normalised(pixels[top:top + 64, left:left + 64]), atol=1e-6)
        offsets.add((top, left))
    assert len(offsets) > 1, "the crop position must be random"
    torch.manual_seed(3)
    a = transform(Image.fromarray(pixels))
    torch.manual_seed(3)
    assert torch.equal(a, transform(Image.fromarray(pixels)))


def test_no_horizontal_flip_in_training():
    pixels = pattern(73, 73)
    transform = train_transform(64)
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(Image.fromarray(pixels))
        assert bool((out[1, 0, 1:] > out[1, 0, :-1]).all()), "columns must increase left to right"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_any_mode_becomes_three_channels(mode):
    img = Image.new("RGB", (90, 80), (120, 120, 120)).convert(mode)
    for transform in (train_transform(32), eval_transform(32)):
        out = transform(img)
        assert out.shape == (3, 32, 32)
    if mode == "L":
        grey = eval_transform(32)(img)
        expected = (torch.full((3,), 120 / 255) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
        assert torch.allclose(grey[:, 5, 5], expected, atol=1e-6)


def test_small_profile_size_and_bad_sizes():
    assert eval_transform(64)(Image.new("RGB", (50, 40))).shape == (3, 64, 64)  # upscaled, then cropped
    with pytest.raises(ValueError, match="resize_size"):
        train_transform(224, 200)
    with pytest.raises(ValueError, match="image_size"):
        eval_transform(0)
