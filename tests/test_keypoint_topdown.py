"""Top-down keypoint samples: instance crops, visibility weights, flips, explicit model options, masked losses,
and the reference path, which must give bitwise the tensors and losses of the single-figure pipeline."""

from __future__ import annotations

import inspect

import pytest
import torch

from keypoint_writers import COLOURS, NAMES, PAIRS, make_keypoint_dataset, write_coco_keypoints
from loclab.config import AugmentConfig, KeypointConfig, TrainConfig
from loclab.data.datasets import KeypointDataset, decode_images
from loclab.engine.keypoints import make_dataset, make_model, make_step, model_options, to_image_pixels
from loclab.engine.precision import resolve_numeric_path
from loclab.engine.tasks import keypoint_split
from loclab.errors import ConfigError
from loclab.losses.keypoints import (
    coordinate_l1_loss,
    coordinate_mse_loss,
    hand_invariant_coordinate_mse,
    hand_invariant_heatmap_loss,
    hand_invariant_spatial_cross_entropy,
    heatmap_mse_loss,
    pair_invariant_coordinate_l1,
    pair_invariant_coordinate_mse,
    pair_invariant_heatmap_loss,
    pair_invariant_spatial_cross_entropy,
    spatial_cross_entropy_loss,
)
from loclab.models.keypoints import KEYPOINT_MODELS
from loclab.ops.affine import apply_affine
from loclab.ops.heatmaps import decode_heatmaps_argmax, encode_heatmaps

INPUT = (48, 80)  # (width, height): non-square, like the synthetic animals' boxes
GRID = (24, 40)  # heatmap (width, height) at stride 2


@pytest.fixture(scope="module")
def own_split(tmp_path_factory):
    """4 non-square RGB images with 2 instances each, K = 7, about one point in five unlabelled."""
    root = tmp_path_factory.mktemp("own")
    write_coco_keypoints(make_keypoint_dataset(seed=1, n_train=4, n_val=1), root)
    return keypoint_split(root, "train")


# ------------------------------------------------------------------------------------------ the reference path


@pytest.mark.parametrize("output_type, heatmap_size", [("heatmap", 32), ("heatmap", 64), ("heatmap", 128),
                                                        ("regression", 64)])
def test_reference_samples_are_bitwise_the_old_ones(tiny_data_root, output_type, heatmap_size):
    """The single-figure dataset decoded every image and encoded targets from image-pixel keypoints; the top-down
    dataset crops with the identity and must give exactly those tensors (no resampling, no rounding)."""
    split = keypoint_split(tiny_data_root, "train")
    old_images = decode_images(split.images, "L", progress=False)
    old_regression = (split.keypoints / old_images.shape[-1]).flatten(1)
    for dataset in (KeypointDataset.from_split(split, output_type, heatmap_size, 2.0, progress=False),
                    make_dataset(split, KeypointConfig(model="heatmap" if output_type == "heatmap" else "regression",
                                                       heatmap_size=heatmap_size))):
        assert torch.equal(dataset.images, old_images)
        assert torch.equal(dataset.transforms, torch.eye(2, 3, dtype=torch.float64).expand(len(split), 2, 3))
        for i in range(len(split)):
            image, target, visible = dataset[i]
            assert torch.equal(image, old_images[i].float() / 255)
            old = old_regression[i] if output_type == "regression" else \
                encode_heatmaps(split.keypoints[i], 128, heatmap_size, 2.0)
            assert torch.equal(target, old)
            assert torch.equal(visible, torch.ones(5))


def _old_losses():
    """The loss each reference config trained with before visibility weights existed."""
    return {("heatmap", "mse", False): heatmap_mse_loss, ("heatmap", "mse", True): hand_invariant_heatmap_loss,
            ("heatmap", "spatial_ce", False): spatial_cross_entropy_loss,
            ("heatmap", "spatial_ce", True): hand_invariant_spatial_cross_entropy,
            ("regression", "mse", False): coordinate_mse_loss, ("regression", "mse", True): hand_invariant_coordinate_mse}


@pytest.mark.parametrize("key", list(_old_losses()))
def test_all_visible_training_loss_is_bitwise_the_old_one(key, tiny_data_root):
    model_name, loss, invariant = key
    cfg = KeypointConfig(model=model_name, loss=loss, hand_invariant=invariant, symmetric_pairs=((1, 2),),
                         train=TrainConfig(precision="fp32"))
    split = keypoint_split(tiny_data_root, "train")
    dataset = make_dataset(split, cfg)
    images, target, visible = (torch.stack(t) for t in zip(*(dataset[i] for i in range(6))))
    torch.manual_seed(0)
    model = make_model(cfg).train()
    numeric = resolve_numeric_path("fp32")
    new = make_step(cfg)(model, (images, target, visible), numeric)["loss_total"]
    torch.manual_seed(0)
    model = make_model(cfg).train()
    old = _old_losses()[key](model(images).float(), target.float())
    assert torch.equal(new, old)


# ------------------------------------------------------------------------------------------- own data, cropped


def test_crops_of_two_instances_on_non_square_images(own_split):
    split = own_split
    assert split.num_instances == 2 * len(split) and {(r.width, r.height) for r in split.images} != {INPUT}
    dataset = KeypointDataset.from_split(split, heatmap_size=GRID, progress=False, input_size=INPUT, in_channels=3,
                                         box_padding=1.0)
    assert len(dataset) == split.num_instances and dataset.images.shape == (len(dataset), 3, 80, 48)
    assert dataset.symmetric_pairs == PAIRS and dataset.keypoint_names == NAMES
    hits = total = 0
    for i in range(len(dataset)):
        image, heatmaps, weights = dataset[i]
        assert image.shape == (3, 80, 48) and heatmaps.shape == (7, 40, 24)
        mapped = apply_affine(split.keypoints[i], dataset.transforms[i])
        assert torch.equal(weights.bool(), split.visible[i])  # the box holds every labelled point
        for k in torch.nonzero(split.visible[i]).flatten().tolist():
            # the crop shows the keypoint's colour where the transform puts it ...
            x, y = (round(v) for v in mapped[k].tolist())
            pixel = dataset.images[i, :, y, x].float()
            hits += int((pixel - torch.tensor(COLOURS[k], dtype=torch.float32)).abs().max() <= 40)
            total += 1
            # ... and the heatmap target peaks there (within half a 2 px cell)
            decoded, _ = decode_heatmaps_argmax(heatmaps[k], INPUT)
            assert (decoded - mapped[k]).abs().max() <= 1.0
        assert heatmaps[~split.visible[i]].abs().sum() == 0
    assert hits == total
    # predictions in the crop map back to the image's pixels
    back = to_image_pixels(apply_affine(split.keypoints, dataset.transforms), dataset.transforms)
    assert (back - split.keypoints).abs().max() < 1e-4


def test_regression_targets_normalise_by_each_side(own_split):
    dataset = KeypointDataset.from_split(own_split, "regression", GRID, progress=False, input_size=INPUT,
                                         in_channels=3)
    _, target, _ = dataset[1]
    mapped = apply_affine(own_split.keypoints[1], dataset.transforms[1])
    assert torch.allclose(target.view(7, 2) * torch.tensor([48.0, 80.0]), mapped, atol=1e-5)


def test_points_pushed_out_of_the_crop_get_zero_weight(own_split):
    # a fixed zoom into the middle 40 % of each box: outer points leave the input
    augment = AugmentConfig(scale=(0.4, 0.4))
    dataset = KeypointDataset.from_split(own_split, heatmap_size=GRID, progress=False, input_size=INPUT, in_channels=3,
                                         box_padding=1.0, augment=augment)
    plain = KeypointDataset.from_split(own_split, heatmap_size=GRID, progress=False, input_size=INPUT, in_channels=3,
                                       box_padding=1.0)
    lost = 0
    for i in range(len(dataset)):
        _, heatmaps, weights = dataset[i]
        record = own_split.images[int(own_split.instance_image[i])]
        m = dataset._transform(i, scale=0.4)
        mapped = apply_affine(own_split.keypoints[i], m)
        inside = (mapped[:, 0] >= -0.5) & (mapped[:, 0] <= 47.5) & (mapped[:, 1] >= -0.5) & (mapped[:, 1] <= 79.5)
        assert torch.equal(weights.bool(), own_split.visible[i] & inside), record.id
        assert heatmaps[~weights.bool()].abs().sum() == 0
        lost += int((own_split.visible[i] & ~inside).sum())
        assert torch.equal(plain[i][2].bool(), own_split.visible[i])
    assert lost > 0


def test_flip_mirrors_the_crop_and_swaps_the_pairs(own_split):
    plain = KeypointDataset.from_split(own_split, "regression", GRID, progress=False, input_size=INPUT, in_channels=3,
                                       box_padding=1.0)
    flipping = KeypointDataset.from_split(own_split, "regression", GRID, progress=False, input_size=INPUT,
                                          in_channels=3, box_padding=1.0, flip=True)
    order = [0, 2, 1, 4, 3, 5, 6]
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        image, target, weights = flipping[0]
        base_image, base_target, base_weights = plain[0]
        mirrored = (image - base_image.flip(-1)).abs().max() <= 2 / 255
        if mirrored and not torch.equal(image, base_image):
            seen.add("flipped")
            expected = base_target.view(7, 2)[order] * torch.tensor([48.0, 80.0])
            expected[:, 0] = 47 - expected[:, 0]  # u -> W_in - 1 - u
            assert torch.allclose(target.view(7, 2) * torch.tensor([48.0, 80.0]), expected, atol=1e-4)
            assert torch.equal(weights, base_weights[order])
        else:
            assert torch.equal(image, base_image) and torch.allclose(target, base_target, atol=1e-6)
            seen.add("plain")
    assert seen == {"plain", "flipped"}


def test_no_random_numbers_without_augmentation(own_split):
    dataset = KeypointDataset.from_split(own_split, heatmap_size=GRID, progress=False, input_size=INPUT, in_channels=3)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    for i in range(len(dataset)):
        dataset[i]
    assert torch.equal(torch.get_rng_state(), state)


def test_streaming_gives_the_same_samples(own_split):
    kwargs = {"heatmap_size": GRID, "progress": False, "input_size": INPUT, "in_channels": 3}
    held = KeypointDataset.from_split(own_split, **kwargs)
    streamed = KeypointDataset.from_split(own_split, memory_budget=0, **kwargs)
    assert streamed.streaming and streamed.images is None and streamed.num_workers >= 1
    for i in (0, 3, 7):
        assert all(torch.equal(a, b) for a, b in zip(held[i], streamed[i]))


# ------------------------------------------------------------------------------------------------ models


def test_model_options_are_declared_and_checked():
    options = model_options(KeypointConfig())
    for name, cls in KEYPOINT_MODELS.items():
        parameters = inspect.signature(cls).parameters
        assert set(cls.options) <= set(options) and set(cls.options) <= set(parameters), name
    with pytest.raises(ConfigError, match="heatmap_size = 32 has no effect on 'regression'"):
        make_model(KeypointConfig(model="regression", heatmap_size=32))
    with pytest.raises(ConfigError, match="skip"):
        make_model(KeypointConfig(model="spatial_regression", skip=False))


@pytest.mark.parametrize("name", sorted(KEYPOINT_MODELS))
def test_models_take_any_k_rgb_and_non_square_inputs(name):
    cfg = KeypointConfig(model=name, num_keypoints=7, in_channels=3, input_width=48, input_height=80)
    model = make_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 80, 48))
    expected = (2, 7, 40, 24) if KEYPOINT_MODELS[name].output_type == "heatmap" else (2, 14)
    assert tuple(out.shape) == expected
    if name == "integral":
        with pytest.raises(ValueError, match="48x80"):
            model(torch.rand(1, 3, 64, 64))


# ------------------------------------------------------------------------------------------------ losses


def _brute_force(pred, target, visible, pairs, per_keypoint):
    """Loop over samples, and over all 2^P pair orders: the smallest visible-weighted loss sum, / visible count."""
    total = 0.0
    for p, t, v in zip(pred, target, visible):
        best = None
        for mask in range(2 ** len(pairs)):
            order = list(range(len(v)))
            for j, (a, b) in enumerate(pairs):
                if mask >> j & 1:
                    order[a], order[b] = b, a
            value = sum(per_keypoint(p[k], t[order[k]]) * float(v[order[k]]) for k in range(len(v)))
            best = value if best is None else min(best, value)
        total += best
    return total / max(float(visible.sum()), 1.0)


def test_masked_and_pair_invariant_losses_match_loops():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(5, 7, 6, 4, generator=g), torch.rand(5, 7, 6, 4, generator=g)
    visible = torch.rand(5, 7, generator=g) > 0.3
    mse = lambda p, t: ((p - t) ** 2).mean()
    expected = _brute_force(pred, target, visible, [], mse)
    torch.testing.assert_close(heatmap_mse_loss(pred, target, visible), torch.tensor(float(expected)), rtol=1e-5, atol=1e-7)
    expected = _brute_force(pred, target, visible, PAIRS, mse)
    torch.testing.assert_close(pair_invariant_heatmap_loss(pred, target, PAIRS, visible), torch.tensor(float(expected)),
                               rtol=1e-5, atol=1e-7)

    def ce(p, t):
        return -(t.flatten() / t.sum() * torch.log_softmax(p.flatten(), 0)).sum()

    expected = _brute_force(pred, target, visible, PAIRS, ce)
    torch.testing.assert_close(pair_invariant_spatial_cross_entropy(pred, target, PAIRS, visible),
                               torch.tensor(float(expected)), rtol=1e-5, atol=1e-6)
    coords_p, coords_t = torch.rand(5, 14, generator=g), torch.rand(5, 14, generator=g)
    pairs_p, pairs_t = coords_p.view(5, 7, 2), coords_t.view(5, 7, 2)
    torch.testing.assert_close(pair_invariant_coordinate_mse(coords_p, coords_t, PAIRS, visible),
                               torch.tensor(float(_brute_force(pairs_p, pairs_t, visible, PAIRS, mse))), rtol=1e-5, atol=1e-7)
    l1 = lambda p, t: (p - t).abs().mean()
    torch.testing.assert_close(pair_invariant_coordinate_l1(coords_p, coords_t, PAIRS, visible),
                               torch.tensor(float(_brute_force(pairs_p, pairs_t, visible, PAIRS, l1))), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(coordinate_l1_loss(coords_p, coords_t, visible),
                               torch.tensor(float(_brute_force(pairs_p, pairs_t, visible, [], l1))), rtol=1e-5, atol=1e-7)


def test_invisible_keypoints_get_no_gradient_and_all_visible_is_the_plain_loss():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(3, 7, 5, 5, generator=g).requires_grad_()
    target = torch.rand(3, 7, 5, 5, generator=g)
    visible = torch.ones(3, 7, dtype=torch.bool)
    visible[1, 5] = False  # unpaired (a paired prediction may be scored against its partner's target)
    pair_invariant_heatmap_loss(pred, target, PAIRS, visible).backward()
    assert pred.grad[1, 5].abs().sum() == 0 and pred.grad[1, 6].abs().sum() > 0
    everything = torch.ones(3, 7)
    assert torch.equal(heatmap_mse_loss(pred, target, everything), heatmap_mse_loss(pred, target))
    assert torch.equal(pair_invariant_heatmap_loss(pred, target, [(1, 2)], everything),
                       hand_invariant_heatmap_loss(pred, target, (1, 2)))
    # two pairs: the best order of each pair, chosen separately
    assert pair_invariant_heatmap_loss(target[:, [0, 2, 1, 3, 4, 5, 6]], target, PAIRS).item() == 0.0
    assert pair_invariant_heatmap_loss(target[:, [0, 1, 2, 4, 3, 5, 6]], target, PAIRS).item() == 0.0
    assert pair_invariant_heatmap_loss(pred.detach(), target, PAIRS, torch.zeros(3, 7)).item() == 0.0
