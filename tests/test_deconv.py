import pytest
import torch
import torch.nn.functional as F

from ppgen.infer.checkpoint import load_checkpoint
from ppgen.data.sprites import load_sprites
from ppgen.companions.deconv import TASKS, Denoiser, SuperResolution, add_noise, degrade, downsample, evaluate_restoration, train_restoration

SHAPE = (1, 32, 32)


@pytest.fixture(scope="module")
def sprites():
    return load_sprites(n=800, seed=0)


def test_shapes_with_leading_dims():
    assert SuperResolution(2)(torch.rand(2, 3, 1, 16, 16)).shape == (2, 3, 1, 32, 32)
    assert SuperResolution(4, channels=3, width=8)(torch.rand(5, 3, 8, 8)).shape == (5, 3, 32, 32)
    assert Denoiser(width=8)(torch.rand(2, 3, 1, 32, 32)).shape == (2, 3, 1, 32, 32)
    assert Denoiser(channels=2, width=8)(torch.rand(4, 2, 64, 64)).shape == (4, 2, 64, 64)


def test_untrained_nets_start_at_their_fixed_baseline():
    low = torch.rand(3, 1, 16, 16)
    bilinear = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(SuperResolution(2, width=8)(low), bilinear)
    noisy = torch.rand(3, 1, 32, 32)
    assert torch.equal(Denoiser(width=8)(noisy), noisy)


def test_degradations():
    images = torch.rand(4, 1, 32, 32)
    low, target = degrade(images, "sr2")
    assert target is images and low.shape == (4, 1, 16, 16)
    assert torch.allclose(low[2, 0, 5, 7], images[2, 0, 10:12, 14:16].mean())
    assert degrade(images, "sr4")[0].shape == (4, 1, 8, 8)
    noisy_a, _ = degrade(images, "denoise", generator=torch.Generator().manual_seed(0))
    noisy_b, _ = degrade(images, "denoise", generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy_a, noisy_b)
    big = add_noise(torch.zeros(100_000), std=0.3)
    assert abs(big.std().item() - 0.3) < 0.01 and abs(big.mean().item()) < 0.01
    with pytest.raises(ValueError, match="not divisible"):
        downsample(torch.rand(1, 1, 30, 30), 4)


def test_super_resolution_x2_beats_nearest_and_bicubic(sprites):
    out = train_restoration(sprites.train[:640], SHAPE, "sr2", width=32, epochs=3, batch_size=32, lr=2e-3,
                            progress=False)
    assert out["history"]["loss"][-1] < out["history"]["loss"][0]
    scores = evaluate_restoration(out["model"], sprites.test, SHAPE, "sr2")
    assert set(scores) == {"net", "nearest", "bicubic"}
    assert scores["net"]["psnr"] > scores["bicubic"]["psnr"] + 0.5 > scores["nearest"]["psnr"] + 0.5
    assert scores["net"]["ssim"] > scores["bicubic"]["ssim"]


def test_denoiser_trains_and_reports_its_baselines(sprites):
    out = train_restoration(sprites.train[:256], SHAPE, "denoise", width=8, epochs=2, batch_size=32, lr=2e-3,
                            progress=False)
    scores = evaluate_restoration(out["model"], sprites.test[:64], SHAPE, "denoise")
    assert set(scores) == {"net", "noisy", "box3"}
    assert scores["net"]["psnr"] > scores["noisy"]["psnr"]  # it learned to remove some noise


def test_checkpoint_resume_is_exact(sprites, tmp_path):
    kwargs = dict(width=4, batch_size=64, lr=1e-3, seed=2, progress=False)
    data = sprites.train[:256]
    full = train_restoration(data, SHAPE, "denoise", epochs=2, **kwargs)
    path = tmp_path / "sr.pt"
    train_restoration(data, SHAPE, "denoise", epochs=1, checkpoint=path, **kwargs)
    resumed = train_restoration(data, SHAPE, "denoise", epochs=2, checkpoint=path, resume=True, **kwargs)
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full["history"]["loss"] == resumed["history"]["loss"]
    assert load_checkpoint(path)["epoch"] == 2
    with pytest.raises(ValueError, match="task was 'denoise', now 'sr2'"):
        train_restoration(data, SHAPE, "sr2", epochs=3, checkpoint=path, resume=True, **kwargs)


class NaNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.w * float("nan")


def test_non_finite_loss_stops_before_writing(sprites, tmp_path):
    path = tmp_path / "nan.pt"
    with pytest.raises(RuntimeError, match="non-finite pixel loss .* epoch 1, step 1"):
        train_restoration(sprites.train[:64], SHAPE, "denoise", model=NaNNet(), epochs=1, checkpoint=path,
                          progress=False)
    assert not path.exists()


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown restoration task 'sr3'"):
        degrade(torch.rand(1, 1, 8, 8), "sr3")
    with pytest.raises(ValueError, match="scale must be 2 or 4"):
        SuperResolution(3)
    with pytest.raises(ValueError, match="built for 1 channel"):
        SuperResolution(2, width=4)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="even height and width"):
        Denoiser(width=4)(torch.rand(1, 1, 9, 9))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_restoration(torch.rand(8, 1024) * 3, SHAPE, "sr2", epochs=1, progress=False)
    assert set(TASKS) == {"sr2", "sr4", "denoise"}
