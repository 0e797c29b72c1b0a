"""sync_core.sync: schedule and the LPIPS-gradient view update (pure torch, no ComfyUI)."""

import pytest
import torch

from sync_core.sync import SyncSchedule, sync_views

# ----------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("freq,steps", [(1, 50), (1, 10), (3, 40), (2, 5), (1, 0)])
def test_schedule_equals_official_at_50_steps(freq, steps):
    s = SyncSchedule(weight=20.0, decay=0.95, freq=freq, steps=steps)
    for i in range(50):
        official_sync = ((i + 1) % freq == 0) and (i < steps)
        assert s.is_sync_step(i, 50) == official_sync
        expected = 20.0 * 0.95**i if official_sync else 0.0
        assert s.weight_at(i, 50) == pytest.approx(expected, rel=1e-12)


def test_schedule_rescales_decay_to_reference_steps():
    s = SyncSchedule(weight=10.0, decay=0.9, steps=20, reference_steps=50)
    for i in range(20):
        assert s.weight_at(i, 20) == pytest.approx(10.0 * 0.9 ** (i * 2.5), rel=1e-12)
    assert s.weight_at(19, 20) < 10.0 * 0.9**19  # decays faster than the unscaled list
    flat = SyncSchedule(weight=10.0, decay=0.9, steps=20, reference_steps=0)
    assert [flat.weight_at(i, 20) for i in range(3)] == pytest.approx([10.0, 9.0, 8.1])
    assert not s.is_sync_step(20, 20) and not s.is_sync_step(-1, 20)
    assert SyncSchedule(weight=0.0).sync_step_indices(50) == []
    assert SyncSchedule(freq=2, steps=7).sync_step_indices(50) == [1, 3, 5]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(weight=-1.0),
        dict(weight=float("nan")),
        dict(decay=0.0),
        dict(freq=0),
        dict(steps=-1),
        dict(freq=1.5),
        dict(reference_steps=-3),
    ],
)
def test_schedule_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        SyncSchedule(**kwargs)


# ------------------------------------------------------------------------------------------ closed form


def _linear_setup(dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    V, B, C, h, w = 4, 2, 4, 3, 5
    z = torch.randn(V, B, C, h, w, generator=g, dtype=dtype)
    a = 0.7
    off = torch.randn(V, 1, C, 1, 1, generator=g, dtype=dtype)
    M = torch.randn(3, C, generator=g, dtype=dtype)

    def predict_x0(lat, ids):
        return a * lat + off[list(ids)]

    def decode(x0):
        return 0.5 + 0.1 * torch.einsum("oc,nchw->nohw", M, x0)

    def perceptual(p, q):
        return ((p - q) ** 2).mean(dim=(1, 2, 3))

    return z, a, off, M, predict_x0, decode, perceptual


def test_gradient_step_matches_hand_derived_linear_case():
    z, a, off, M, predict_x0, decode, perceptual = _linear_setup()
    anchor, weight = 1, 3.0
    z_before = z.clone()
    out = sync_views(z, anchor, predict_x0, decode, perceptual, weight, view_batch_size=2, clamp_decoded=False)
    assert torch.equal(z, z_before)
    # hand derivation: D_v = 0.5 + 0.1 M (a z_v + off_v); L = mean((2 D_v - 2 D_a)^2) per sample
    # dL/dz_v = 8 / (3 h w) * 0.1 * a * M^T (D_v - D_a)
    n = 3 * z.shape[-2] * z.shape[-1]
    D_a = 0.5 + 0.1 * torch.einsum("oc,bchw->bohw", M, a * z[anchor] + off[anchor])
    for v in range(z.shape[0]):
        if v == anchor:
            assert torch.equal(out[v], z[v])
            continue
        D = 0.5 + 0.1 * torch.einsum("oc,bchw->bohw", M, a * z[v] + off[v])
        grad = 8.0 / n * 0.1 * a * torch.einsum("oc,bohw->bchw", M, D - D_a)
        torch.testing.assert_close(out[v], z[v] - weight * grad, rtol=1e-10, atol=1e-12)
    assert (out - z).abs().max() > 1e-3  # the update is not a no-op


def test_gradient_matches_finite_differences_nonlinear():
    g = torch.Generator().manual_seed(7)
    V, B, C, h, w = 3, 1, 2, 4, 4
    z = torch.randn(V, B, C, h, w, generator=g, dtype=torch.float64)
    k1 = torch.randn(C, C, 3, 3, generator=g, dtype=torch.float64) * 0.4
    k2 = torch.randn(3, C, 3, 3, generator=g, dtype=torch.float64) * 0.4

    def predict_x0(lat, ids):
        flat = lat.flatten(0, 1)
        return (flat - 0.3 * torch.tanh(torch.nn.functional.conv2d(flat, k1, padding=1))).reshape(lat.shape)

    def decode(x0):
        return torch.sigmoid(torch.nn.functional.conv2d(x0, k2, padding=1))

    def perceptual(p, q):
        return torch.sqrt(((p - q) ** 2).mean(dim=(1, 2, 3)) + 1e-3)

    def loss_of(zv, za):
        ref = decode(predict_x0(za[None], [0]).flatten(0, 1))
        img = decode(predict_x0(zv[None], [0]).flatten(0, 1))
        return perceptual(2 * img - 1, 2 * ref - 1).sum()

    weight = 0.5
    out = sync_views(z, 0, predict_x0, decode, perceptual, weight)
    eps = 1e-6
    for v in (1, 2):
        grad = (z[v] - out[v]) / weight
        for idx in [(0, 0, 0, 0), (0, 1, 2, 3), (0, 0, 3, 1), (0, 1, 1, 1)]:
            zp, zm = z[v].clone(), z[v].clone()
            zp[idx] += eps
            zm[idx] -= eps
            fd = (loss_of(zp, z[0]) - loss_of(zm, z[0])) / (2 * eps)
            assert abs(fd.item() - grad[idx].item()) < 1e-7 + 1e-5 * abs(fd.item())
        assert grad.abs().max() > 1e-4


def test_zero_weight_is_identity_and_losses_reported():
    z, a, off, M, predict_x0, decode, perceptual = _linear_setup()
    out = sync_views(z, 0, predict_x0, decode, perceptual, 0.0)
    assert torch.equal(out, z) and out.data_ptr() != z.data_ptr()
    out2, losses = sync_views(z, 0, predict_x0, decode, perceptual, 0.0, return_losses=True)
    assert torch.equal(out2, z)
    assert losses.shape == (4, 2) and bool((losses[1:] > 0).all()) and bool((losses[0] == 0).all())


def test_clamp_kills_gradient_at_saturated_pixels():
    z, a, off, M, predict_x0, decode, perceptual = _linear_setup()

    def saturated(x0):
        return 5.0 + 0.1 * decode(x0)  # always > 1

    assert torch.equal(sync_views(z, 0, predict_x0, saturated, perceptual, 10.0, clamp_decoded=True), z)
    assert not torch.equal(sync_views(z, 0, predict_x0, saturated, perceptual, 10.0, clamp_decoded=False), z)


def test_inference_mode_inputs_and_detached_output():
    z, a, off, M, predict_x0, decode, perceptual = _linear_setup(torch.float32)
    ref = sync_views(z, 2, predict_x0, decode, perceptual, 2.0)
    with torch.inference_mode():
        zi = z.clone()
        out = sync_views(zi, 2, predict_x0, decode, perceptual, 2.0)
    assert not out.requires_grad
    torch.testing.assert_close(out, ref)


def test_errors():
    z, a, off, M, predict_x0, decode, perceptual = _linear_setup()
    with pytest.raises(ValueError, match="out of range"):
        sync_views(z, 4, predict_x0, decode, perceptual, 1.0)
    with pytest.raises(ValueError, match=r"\[V, B, C, h, w\]"):
        sync_views(z[0], 0, predict_x0, decode, perceptual, 1.0)
    with pytest.raises(ValueError, match="view_batch_size"):
        sync_views(z, 0, predict_x0, decode, perceptual, 1.0, view_batch_size=0)


# ------------------------------------------------------------------------------- real LPIPS, batching


@pytest.fixture(scope="module")
def real_setup(lpips_dir):
    from sync_core.perceptual import build_lpips, make_perceptual

    torch.manual_seed(11)
    lp = build_lpips("vgg", search_dirs=[str(lpips_dir)])
    unetish = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3, padding=1)
    )
    dec = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2), torch.nn.Conv2d(4, 3, 3, padding=1))
    for m in (unetish, dec):
        m.requires_grad_(False)

    def predict_x0(lat, ids):
        flat = lat.flatten(0, 1)
        return (0.8 * flat - 0.5 * unetish(flat)).reshape(lat.shape)

    def decode(x0):
        return dec(x0) / 2 + 0.5  # may leave [0, 1]: exercises the clamp

    return predict_x0, decode, make_perceptual(lp), lp


def test_batched_views_equal_one_at_a_time_and_samples_independent(real_setup):
    predict_x0, decode, perceptual, lp = real_setup
    g = torch.Generator().manual_seed(5)
    z = torch.randn(5, 2, 4, 8, 8, generator=g)
    weight = 50.0
    one = sync_views(z, 2, predict_x0, decode, perceptual, weight, view_batch_size=1)
    assert torch.equal(one[2], z[2])
    assert (one - z).abs().max() > 1e-3
    for bs in (2, 4, 16):
        torch.testing.assert_close(
            sync_views(z, 2, predict_x0, decode, perceptual, weight, view_batch_size=bs), one, rtol=1e-4, atol=1e-5
        )
    # sample 0 alone gives the same update (per-sample independence)
    alone = sync_views(z[:, :1].clone(), 2, predict_x0, decode, perceptual, weight, view_batch_size=3)
    torch.testing.assert_close(alone, one[:, :1], rtol=1e-4, atol=1e-5)
    # the raw lpips module ([N,1,1,1] output) works as `perceptual` too
    torch.testing.assert_close(sync_views(z, 2, predict_x0, decode, lp, weight), one, rtol=1e-4, atol=1e-5)


def test_real_lpips_matches_plain_autograd_loop(real_setup):
    predict_x0, decode, perceptual, lp = real_setup
    g = torch.Generator().manual_seed(9)
    z = torch.randn(3, 1, 4, 8, 8, generator=g)
    out = sync_views(z, 1, predict_x0, decode, perceptual, 30.0, view_batch_size=2)
    with torch.no_grad():
        ref_img = decode(predict_x0(z[1:2], [1]).flatten(0, 1)).clamp(0, 1)
    for v in (0, 2):
        zz = z[v : v + 1].clone().requires_grad_(True)
        img = decode(predict_x0(zz, [v]).flatten(0, 1)).clamp(0, 1)
        loss = lp(img * 2 - 1, ref_img * 2 - 1)
        (grad,) = torch.autograd.grad(loss.sum(), zz)
        torch.testing.assert_close(out[v], (zz - 30.0 * grad)[0].detach(), rtol=1e-4, atol=1e-5)


def test_precomputed_anchor_image_equals_default():
    z, a, off, M, predict_x0, decode, perceptual = _linear_setup()
    default = sync_views(z, 1, predict_x0, decode, perceptual, 3.0, clamp_decoded=False)
    img = decode(predict_x0(z[1:2], [1]).flatten(0, 1))
    given = sync_views(z, 1, predict_x0, decode, perceptual, 3.0, clamp_decoded=False, anchor_image=img)
    torch.testing.assert_close(given, default, rtol=1e-12, atol=1e-14)
    other = sync_views(z, 1, predict_x0, decode, perceptual, 3.0, clamp_decoded=False, anchor_image=img + 0.1)
    assert not torch.allclose(other, default)
    with pytest.raises(ValueError, match="anchor_image"):
        sync_views(z, 1, predict_x0, decode, perceptual, 3.0, anchor_image=img[:1])
