"""Detection datasets too large for memory are decoded per sample (and by DataLoader workers), with the same result."""

import torch

from layout_writers import make_detection_dataset, write_voc
from loclab.data.datasets import DetectionDataset, detection_collate
from loclab.engine.tasks import detection_split


def test_streaming_gives_the_samples_held_in_memory(tmp_path):
    root = write_voc(make_detection_dataset(seed=1, n_train=8, n_val=2), tmp_path)
    split = detection_split(root, "train")
    held = DetectionDataset(split, image_size=96, progress=False)
    streamed = DetectionDataset(split, image_size=96, progress=False, memory_budget=0)
    assert not held.streaming and held.num_workers == 0
    assert streamed.streaming and streamed.images is None and streamed.num_workers >= 1
    for i in range(len(split)):
        image, target = streamed[i]
        expected_image, expected = held[i]
        assert torch.equal(image, expected_image) and torch.equal(target["boxes"], expected["boxes"])
    loader = torch.utils.data.DataLoader(streamed, batch_size=4, num_workers=2, collate_fn=detection_collate)
    images = torch.cat([batch[0] for batch in loader])
    assert torch.equal(images, torch.stack([held[i][0] for i in range(len(split))]))
