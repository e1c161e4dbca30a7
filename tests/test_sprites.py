import numpy as np
import pytest
import torch

from ppgen.data.sprites import FACTOR_NAMES, FACTOR_SIZES, all_factors, load_sprites, render, sprite_image


@pytest.fixture(scope="module")
def sprites():
    return load_sprites()


def test_full_grid_shapes_splits_and_labels(sprites):
    d = sprites
    total = int(np.prod(FACTOR_SIZES))
    assert len(d.train) + len(d.val) + len(d.test) == total
    assert (len(d.val), len(d.test)) == (total // 10, total // 10)
    assert d.image_shape == (1, 32, 32) and d.x_dim == 32 * 32
    assert d.likelihood == "bernoulli" and d.likelihood_kwargs == {}
    x = torch.cat([d.train, d.val, d.test])
    assert x.dtype == torch.float32 and set(x.unique().tolist()) == {0.0, 1.0}
    assert (x.sum(1) > 0).all()  # every image shows its sprite
    y = torch.cat([d.labels[s] for s in ("train", "val", "test")])
    assert y.dtype == torch.long and y.shape == (total, len(FACTOR_NAMES))
    assert (y.min(0).values == 0).all() and (y.max(0).values == torch.tensor(FACTOR_SIZES) - 1).all()
    assert len(torch.unique(y, dim=0)) == total  # every grid point exactly once
    assert len(torch.unique(x, dim=0)) > 0.99 * total  # few pixel-quantisation coincidences


def test_images_match_their_factors(sprites):
    d = sprites
    for i in (0, 17, 1234):
        factors = d.labels["train"][i].tolist()
        assert np.array_equal(sprite_image(*factors, size=32).ravel(), d.train[i].numpy())


def test_factors_move_the_sprite_as_named():
    base = sprite_image(2, 3, 0, 3, 3)
    for shape in range(3):  # scale grows the area (strictly at 64 px; 32 px quantises)
        area64 = [sprite_image(shape, s, 0, 3, 3, size=64).sum() for s in range(FACTOR_SIZES[1])]
        area32 = [sprite_image(shape, s, 0, 3, 3).sum() for s in range(FACTOR_SIZES[1])]
        assert all(a < b for a, b in zip(area64, area64[1:]))
        assert all(a <= b for a, b in zip(area32, area32[1:])) and area32[-1] > 2.5 * area32[0]
    cols, rows = np.arange(32), np.arange(32)
    right, low = sprite_image(2, 3, 0, 6, 3), sprite_image(2, 3, 0, 3, 6)
    com_x = lambda im: (im.sum(0) * cols).sum() / im.sum()  # noqa: E731
    com_y = lambda im: (im.sum(1) * rows).sum() / im.sum()  # noqa: E731
    assert com_x(right) > com_x(base) + 3 and abs(com_y(right) - com_y(base)) < 0.5
    assert com_y(low) > com_y(base) + 3
    assert not np.array_equal(sprite_image(2, 5, 2, 3, 3), sprite_image(2, 5, 0, 3, 3))  # rotation shows
    shapes = [sprite_image(s, 5, 0, 3, 3) for s in range(3)]
    assert not np.array_equal(shapes[0], shapes[1]) and not np.array_equal(shapes[1], shapes[2])


def test_sprites_stay_inside_the_frame():
    for size in (32, 64):
        ims = render(all_factors()[::7], size)
        assert ims[:, 0].sum() == ims[:, -1].sum() == ims[:, :, 0].sum() == ims[:, :, -1].sum() == 0


def test_same_seed_same_bytes_other_seed_differs():
    a, b, c = load_sprites(n=300, seed=3), load_sprites(n=300, seed=3), load_sprites(n=300, seed=4)
    assert a.train.numpy().tobytes() == b.train.numpy().tobytes()
    assert torch.equal(a.labels["test"], b.labels["test"])
    assert a.train.numpy().tobytes() != c.train.numpy().tobytes()
    assert not torch.equal(a.labels["train"], c.labels["train"])


def test_subset_and_64_pixels():
    d = load_sprites(size=64, n=200, seed=1)
    assert d.train.shape == (160, 64 * 64) and d.val.shape == d.test.shape == (20, 64 * 64)
    assert d.image_shape == (1, 64, 64)
    y = torch.cat([d.labels[s] for s in ("train", "val", "test")])
    assert len(torch.unique(y, dim=0)) == 200  # distinct grid points
    im = sprite_image(*d.labels["val"][0].tolist(), size=64)
    assert np.array_equal(im.ravel(), d.val[0].numpy())


def test_bad_arguments_name_the_problem():
    assert load_sprites("64", n=20).image_shape == (1, 64, 64)  # as in load("sprites:64")
    with pytest.raises(ValueError, match="size"):
        load_sprites(size=48)
    with pytest.raises(ValueError, match="n must be"):
        load_sprites(n=10**6)
    with pytest.raises(ValueError, match="factors"):
        sprite_image(3, 0, 0, 0, 0)
