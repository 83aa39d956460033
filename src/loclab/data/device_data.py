"""Detection data held on the training device, and batches gathered there by index.

The DataLoader path (:class:`~loclab.data.datasets.DetectionDataset` + ``detection_collate``) builds every batch in
Python on the host, sample by sample: index the decoded images, convert each to float, stack, pad the boxes,
then copy the batch to the device. On a GPU that host work, not the model, sets the pace. Here the decoded
uint8 images and the padded targets of the whole split move to the device once; a batch is then a handful of
indexing ops there, whatever its size (nanoGPT's ``get_batch``, with the data already on the device):
no per-sample Python, no host-to-device copy per step. The batched augmentation of :mod:`loclab.ops.augment`
and :mod:`loclab.ops.mosaic` runs on the result where it lies.

Same batches as the DataLoader path: :class:`DeviceBatches` draws its order from a CPU ``torch.Generator``
with exactly the draws a ``DataLoader`` with a ``RandomSampler`` makes (seeded per epoch the same way by the
training loop), copies the epoch's order to the device once, and slices it. A batch equals
``detection_collate`` of the same samples except for its box slots: every batch has the split's largest box
count ``M``, not the batch's, so the shapes never depend on the data (the extra slots are padding,
``valid`` False, which matching and the loss ignore).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from loclab.data.datasets import DetectionDataset
from loclab.data.errors import DataError

DetectionBatch = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class DeviceDetectionData:
    """A detection split as tensors on one device.

    ``images`` uint8 ``[N, 3, S, S]`` (the letterboxed model inputs), ``boxes`` float32 ``[N, M, 4]`` xyxy in
    model-input pixels, zero-padded, ``labels`` int64 ``[N, M]`` padded with -1, ``valid`` bool ``[N, M]``,
    ``image_ids`` int64 ``[N]``; ``M`` is the largest box count of the split.
    """

    images: Tensor
    boxes: Tensor
    labels: Tensor
    valid: Tensor
    image_ids: Tensor

    @classmethod
    def from_dataset(cls, dataset: DetectionDataset, device: torch.device | str) -> DeviceDetectionData:
        """The decoded images and targets of ``dataset`` on ``device`` (one copy, at construction).

        Raises :class:`DataError` for a dataset streamed from disk (too large to hold decoded) or an empty one.
        """
        if dataset.images is None:
            raise DataError(f"{dataset.split.annotation_file}: the decoded images are too large to hold in memory "
                            "(they are streamed from disk), so they cannot be held on the training device either; "
                            "use --set train.device_data=auto or off")
        if len(dataset) == 0:
            raise DataError(f"{dataset.split.annotation_file}: no images to hold on the training device")
        split = dataset.input_split
        counts = torch.tensor([len(b) for b in split.boxes])  # once per split, at construction
        slots = int(counts.max())
        boxes = pad_sequence([b.reshape(-1, 4).float() for b in split.boxes], batch_first=True)
        labels = pad_sequence([lab.reshape(-1).long() for lab in split.labels], batch_first=True, padding_value=-1)
        valid = torch.arange(slots)[None, :] < counts[:, None]
        ids = torch.tensor(dataset.image_ids, dtype=torch.int64)
        # pad_sequence of empty sequences only gives [N, 0, ...]: the shapes are fixed here, whatever the counts
        boxes, labels = boxes.reshape(len(counts), slots, 4), labels.reshape(len(counts), slots)
        return cls(*(t.to(device) for t in (dataset.images, boxes, labels, valid, ids)))

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, index: Tensor) -> DetectionBatch:
        """The samples at ``index`` (int64 ``[B]`` on :attr:`device`), as ``detection_collate`` returns them:
        ``(images float32 [B, 3, S, S] in [0, 1], boxes [B, M, 4], labels [B, M], valid [B, M],
        image_ids [B])``, with ``M`` the split's largest box count. Five gathers and one conversion on the
        device; nothing is read back to the host."""
        images = self.images[index].float() / 255  # as DetectionDataset.__getitem__ converts, bit for bit
        return images, self.boxes[index], self.labels[index], self.valid[index], self.image_ids[index]


class DeviceBatches:
    """An epoch's batches of a :class:`DeviceDetectionData`, in the order a ``DataLoader`` would give them.

    With ``shuffle``, each pass over the data is a random permutation drawn from :attr:`generator` (a CPU
    generator the training loop seeds per epoch, as it seeds the DataLoader's), ``passes`` passes back to back;
    without, the samples in order. ``drop_last`` drops a final partial batch. Iterating copies the epoch's
    order to the device once, then every batch is a slice of it and :meth:`DeviceDetectionData.batch`.
    """

    sampler = None  # no torch sampler: the training loop seeds :attr:`generator` directly

    def __init__(self, data: DeviceDetectionData, batch_size: int, *, shuffle: bool, drop_last: bool,
                 passes: int = 1) -> None:
        if batch_size < 1 or passes < 1:
            raise ValueError(f"batch_size and passes must be at least 1, got {batch_size} and {passes}")
        self.data, self.batch_size, self.shuffle, self.drop_last = data, batch_size, shuffle, drop_last
        self.passes = passes if shuffle else 1
        self.generator = torch.Generator()

    @property
    def num_samples(self) -> int:
        """Samples in one epoch, dropped ones included: ``passes * N``."""
        return self.passes * len(self.data)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def order(self) -> Tensor:
        """The epoch's sample indices (int64 ``[passes * N]``, on the CPU), drawn as a DataLoader draws them."""
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n)
        # A DataLoader iterator first draws its workers' base seed from the generator, then its RandomSampler one
        # permutation per pass, and one more (for an empty remainder) when it is exhausted.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        perms = [torch.randperm(n, generator=self.generator) for _ in range(self.passes + 1)]
        return torch.cat(perms[:-1])

    def __iter__(self) -> Iterator[DetectionBatch]:
        order = self.order().to(self.data.device)  # the one host-to-device copy of the epoch
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self.data.batch(order[start:start + self.batch_size])
