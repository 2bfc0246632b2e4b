"""Data order and masks depend on (seed, epoch, position) only: not on process count or resume."""

import torch
from torch.utils.data import Dataset

from crossmae.train.batches import GlobalBatchSampler, SeededItems, derive_seed, masking_noise


def _union_by_position(world, batch, step, size=40, seed=5):
    """The global batch `step` as the ranks together lay it out (position -> index)."""
    out = {}
    for rank in range(world):
        sampler = GlobalBatchSampler(size, batch, rank, world, seed)
        sampler.set_epoch(3)
        local = list(sampler)[step]
        for i, (_, index) in enumerate(local):
            out[i * world + rank] = index
    return [out[k] for k in sorted(out)]


def test_two_ranks_cover_the_same_global_batches_in_the_same_layout():
    for step in range(5):
        assert _union_by_position(1, 8, step) == _union_by_position(2, 4, step)
        assert _union_by_position(1, 8, step) == _union_by_position(4, 2, step)


def test_epochs_differ_and_resume_mid_epoch_continues_the_same_order():
    sampler = GlobalBatchSampler(40, 4, 0, 1, seed=1)
    sampler.set_epoch(0)
    full = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != [[(1, i) for _, i in b] for b in full]
    sampler.set_epoch(0, start_batch=6)
    assert len(sampler) == 4 and list(sampler) == full[6:]
    assert sorted(i for b in full for _, i in b) == list(range(40))  # a permutation


class RandomCrop(Dataset):
    """Items whose 'augmentation' draws from torch's global RNG, like torchvision's."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return index, index


def test_seeded_items_do_not_depend_on_the_global_rng():
    items = SeededItems(RandomCrop(), seed=7, transform=lambda i: torch.rand(3) + i)
    torch.manual_seed(0)
    first = items[(2, 4)][0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(items[(2, 4)][0], first)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    assert not torch.equal(items[(3, 4)][0], first)  # another epoch, another crop


def test_seeded_items_draw_the_stream_of_their_documented_seed():
    """(seed, epoch, index) names the crop: a run resumed by another version gets the same."""
    items = SeededItems(RandomCrop(), seed=7, transform=lambda i: torch.rand(3) + i)
    torch.manual_seed(derive_seed(7, 2, 4))
    assert torch.equal(items[(2, 4)][0], torch.rand(3) + 4)


def test_masking_noise_rows_match_across_process_counts():
    def draw(world):
        rows = [masking_noise(torch.Generator().manual_seed(11), 8 // world, r, world, 16)
                for r in range(world)]  # fmt: skip
        out = torch.empty(8, 16)
        for r, noise in enumerate(rows):
            out[r::world] = noise
        return out

    assert torch.equal(draw(1), draw(2)) and torch.equal(draw(1), draw(4))


def test_derive_seed_mixes_its_parts():
    seeds = {derive_seed(0, e, i) for e in range(3) for i in range(50)}
    assert len(seeds) == 150 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)
