"""The multi-task objective: the D and G phases against the spec, written out independently."""
import copy

import pytest
import torch
import torch.nn.functional as F

from models import Networks
from models.alignment import alignment_grid, warp_to_crop
from models.objective import Objective
from models.passwords import digits, draw_step_passwords, encode
from models.sphereface import AngleLoss
from utils.config import make_config

LAMBDAS = dict(lambda_FR=1.7, lambda_FR_M=0.6, lambda_FR_WR=1.3, lambda_GAN=0.9, lambda_GAN_M=1.1,
               lambda_GAN_recon=0.7, lambda_GAN_WR=1.4, lambda_dis=0.8, lambda_Feat=2.5, lambda_WR_Feat=0.3,
               lambda_false_recon_diff=0.45, lambda_L1=3.0, lambda_rand_recon_L1=4.0, lambda_G_recon=50.0)
TINY = dict(img_size=64, ngf=4, ndf=4, fr_width=0.125, fr_crop_height=32, fr_crop_width=32, fr_num_classes=7,
            batch_size=3, channels_last=False, amp="none")


def tiny_cfg(**kw):
    return make_config(**{**TINY, **kw})


def tiny_batch(B=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lm = torch.tensor([[-0.3, -0.15], [0.3, -0.15], [0.0, 0.1], [-0.22, 0.35], [0.22, 0.35]])
    return {"image": torch.rand(B, 3, size, size, generator=g) * 2 - 1,
            "label": torch.randint(0, 7, (B,), generator=g),
            "landmarks": lm.expand(B, 5, 2).clone()}


def mse_to(maps, target):
    return sum(((m - target) ** 2).mean() for m in maps)


def test_one_step_equals_the_spec_written_out(monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_cfg(pool_size=0, **LAMBDAS)
    nets = Networks(cfg)
    before = copy.deepcopy(nets).train()
    obj = Objective(cfg, nets, "cpu")
    batch = tiny_batch()
    pw = draw_step_passwords(3, 16, torch.Generator().manual_seed(3))
    d_grads = {}
    d_step = obj.opt_D.step

    def capture_d_grads(*args, **kwargs):
        d_grads.update({k: p.grad.clone() for k, p in obj.nets.D.named_parameters()})
        return d_step(*args, **kwargs)
    monkeypatch.setattr(obj.opt_D, "step", capture_d_grads)
    logs = obj.step(batch, pw).losses

    I, y = batch["image"], batch["label"]
    enc = lambda bits: encode(bits, "half")  # noqa: E731
    G0, Q0, D0, FR0 = before.G, before.Q, before.D, before.FR
    with torch.no_grad():
        M, M2 = G0(I, enc(pw.p)), G0(I, enc(pw.p2))
        R, WR1, WR2 = G0(M, enc(pw.inv)), G0(M, enc(pw.w1)), G0(M, enc(pw.w2))
        grid = alignment_grid(batch["landmarks"], (64, 64), (32, 32))
        crop = lambda x: warp_to_crop(x, grid)  # noqa: E731
        angle = AngleLoss()
        L = LAMBDAS

        # D phase, with the networks as they were
        ce = lambda FR, x: angle(FR(crop(x))[1], y)  # noqa: E731
        ceM, ceR, ceWR, ceI = ce(FR0, M), ce(FR0, R), ce(FR0, WR1), ce(FR0, I)
        d_fr = L["lambda_FR"] * 0.5 * (ceI + (L["lambda_FR_M"] * ceM - ceR + L["lambda_FR_WR"] * ceWR)
                                       / (1 + L["lambda_FR_M"] + L["lambda_FR_WR"]))
        wM, wR, wWR = L["lambda_GAN_M"], L["lambda_GAN_recon"], L["lambda_GAN_WR"]
        fake = (wM * mse_to(D0(torch.cat([M, M2]), "M"), 0) + wR * mse_to(D0(R, "R"), 0)
                + wWR * mse_to(D0(torch.cat([WR1, WR2]), "WR"), 0)) / (wM + wR + wWR)
        real = ((wM * mse_to(D0(I, "M"), 1) + wR * mse_to(D0(I, "R"), 1) + wWR * mse_to(D0(I, "WR"), 1))
                / (wM + wR + wWR))
        expected_D = d_fr + L["lambda_GAN"] * 0.5 * (fake + real)
        assert logs["D"].item() == pytest.approx(expected_D.item(), rel=1e-4)
        assert logs["D_FR_real"].item() == pytest.approx(ceI.item(), rel=1e-4)

        # G phase: D and FR after their step, G and Q as they were
        D1, FR1 = obj.nets.D, obj.nets.FR
        g_gan = L["lambda_GAN"] * (wM * mse_to(D1(M, "M"), 1) + wR * mse_to(D1(R, "R"), 1)
                                   + wWR * mse_to(D1(WR1, "WR"), 1)) / (wM + wR + wWR)
        dis = 0
        for src, out, bits in ((I, M, pw.p), (M, R, pw.inv), (M, WR1, pw.w1)):
            logits = Q0(src, out)
            target = digits(bits)
            dis = dis + sum(F.cross_entropy(logits[:, d], target[:, d]) for d in range(4))
        fM, lM = FR1(crop(M))
        fR, lR = FR1(crop(R))
        fWR1, lWR1 = FR1(crop(WR1))
        fM2, fWR2 = FR1(crop(M2))[0], FR1(crop(WR2))[0]
        gM, gR, gWR = angle(lM, y), angle(lR, y), angle(lWR1, y)
        g_fr = (-L["lambda_FR_M"] * gM + gR - L["lambda_FR_WR"] * gWR) / (L["lambda_FR_M"] + 1 + L["lambda_FR_WR"])
        relu_cos = lambda a, b: F.cosine_similarity(a, b).clamp_min(0).mean()  # noqa: E731
        feat = (L["lambda_Feat"] * relu_cos(fM, fM2) + L["lambda_WR_Feat"] * relu_cos(fWR1, fWR2)
                + L["lambda_false_recon_diff"] * relu_cos(fM, fWR1))
        pix = (L["lambda_L1"] * (M - I).abs().mean() + L["lambda_rand_recon_L1"] * (WR1 - I).abs().mean()
               + L["lambda_G_recon"] * (R - I).abs().mean())
        expected_G = g_gan + L["lambda_dis"] * dis + L["lambda_FR"] * g_fr + feat + pix
        assert logs["G"].item() == pytest.approx(expected_G.item(), rel=1e-4)
        assert logs["dis"].item() == pytest.approx(dis.item(), rel=1e-4)
        assert logs["recon"].item() == pytest.approx((R - I).abs().mean().item(), rel=1e-5)
    assert obj.angle.it == 7  # four A-Softmax calls in the D phase, three in the G phase

    # D's gradients in the D phase (the shared half-resolution map of the real images is computed once
    # there): the same as every head's call written out separately
    d_loss = L["lambda_GAN"] * 0.5 * (
        (wM * mse_to(D0(torch.cat([M, M2]), "M"), 0) + wR * mse_to(D0(R, "R"), 0)
         + wWR * mse_to(D0(torch.cat([WR1, WR2]), "WR"), 0)) / (wM + wR + wWR)
        + (wM * mse_to(D0(I, "M"), 1) + wR * mse_to(D0(I, "R"), 1) + wWR * mse_to(D0(I, "WR"), 1)) / (wM + wR + wWR))
    names = [k for k, _ in D0.named_parameters()]
    expected = torch.autograd.grad(d_loss, [p for _, p in D0.named_parameters()])
    assert set(d_grads) == set(names)
    for k, g in zip(names, expected):
        assert torch.allclose(d_grads[k], g, rtol=1e-4, atol=1e-6), k


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(module, snap):
    return {k: not torch.equal(v, snap[k]) for k, v in module.named_parameters()}


def test_near_wrong_passwords_reach_the_training_step():
    obj = Objective(tiny_cfg(near_wrong_passwords=True), Networks(tiny_cfg()), "cpu")
    pw = obj.draw_passwords(400)
    assert ((pw.w1 != pw.inv).sum(1) == 1).sum() >= 10 and not (pw.w1 == pw.inv).all(1).any()  # 1 in 16
    paper = Objective(tiny_cfg(), Networks(tiny_cfg()), "cpu").draw_passwords(400)
    assert ((paper.w1 != paper.inv).sum(1) == 1).sum() <= 2  # uniform 16-bit codes: 1 in 4096


@pytest.mark.parametrize("fr_lr", [None, 0.0])
def test_each_phase_changes_exactly_its_parameters(fr_lr):
    torch.manual_seed(0)
    cfg = tiny_cfg(pool_size=2, FR_lr=fr_lr)
    nets = Networks(cfg)
    obj = Objective(cfg, nets, "cpu")
    batch = tiny_batch()
    real, label, grid = obj._prepare(batch)
    pw = obj.draw_passwords(3)
    fake = obj.generate(real, pw)
    snaps = {n: snapshot(getattr(nets, n)) for n in ("G", "D", "Q", "FR")}
    obj.d_phase(real, label, grid, fake)
    c = {n: changed(getattr(nets, n), snaps[n]) for n in snaps}
    assert all(c["D"].values())
    assert all(c["FR"].values()) if fr_lr is None else not any(c["FR"].values())
    assert not any(c["G"].values()) and not any(c["Q"].values())

    snaps = {n: snapshot(getattr(nets, n)) for n in ("G", "D", "Q", "FR")}
    obj.g_phase(real, label, grid, fake, pw)
    c = {n: changed(getattr(nets, n), snaps[n]) for n in snaps}
    assert all(c["G"].values()) and all(c["Q"].values())
    assert not any(c["D"].values()) and not any(c["FR"].values())


def test_learning_rates_per_network():
    cfg = tiny_cfg(lr=2e-4, D_lr=5e-5)
    obj = Objective(cfg, Networks(cfg), "cpu")
    assert [g["lr"] for g in obj.opt_G.param_groups] == [2e-4, 2e-4]
    assert [g["lr"] for g in obj.opt_D.param_groups] == [5e-5, 2e-5]  # FR_lr defaults to lr / 10
    assert obj.opt_G.defaults["betas"] == (0.5, 0.999)
    frozen = Objective(tiny_cfg(FR_lr=0.0), Networks(tiny_cfg()), "cpu")
    assert len(frozen.opt_D.param_groups) == 1
    assert not any(p.requires_grad for p in frozen.nets.FR.parameters())


@pytest.mark.parametrize("length", [32, 64])
def test_longer_passwords_train(length):
    torch.manual_seed(0)
    cfg = tiny_cfg(passwd_length=length)
    obj = Objective(cfg, Networks(cfg), "cpu")
    logs = obj.step(tiny_batch()).losses
    assert all(torch.isfinite(v) for v in logs.values())
    assert obj.nets.Q.classifiers.fc_list[f"fc_{length // 4 - 1}"].out_features == 16


def test_bf16_autocast_step_runs_and_returns_tensors():
    torch.manual_seed(0)
    cfg = tiny_cfg(amp="bf16", channels_last=True)
    obj = Objective(cfg, Networks(cfg).to(memory_format=torch.channels_last), "cpu")
    logs = obj.step(tiny_batch()).losses
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in logs.values())
    assert all(torch.isfinite(v) for v in logs.values())


def test_frozen_feature_fr_compares_embeddings_of_the_fr_training_began_with():
    """feature_fr: frozen: in every step the three feature losses use the embeddings of FR as it was
    when the objective was made, while the FR of the D phase and the A-Softmax terms go on training;
    the copy travels in the objective's state (exact resume)."""
    torch.manual_seed(0)
    cfg = tiny_cfg(pool_size=0, feature_fr="frozen", FR_lr=0.01)  # FR moves far in two steps
    nets = Networks(cfg)
    FR0 = copy.deepcopy(nets.FR)
    obj = Objective(cfg, nets, "cpu")
    batch = tiny_batch()
    grid = alignment_grid(batch["landmarks"], (64, 64), (32, 32))
    relu_cos = lambda a, b: F.cosine_similarity(a, b).clamp_min(0).mean()  # noqa: E731
    for _ in range(2):
        res = obj.step(batch)
        with torch.no_grad():
            f = {k: FR0.embed(warp_to_crop(res.images[k], grid)) for k in ("M", "M2", "WR1", "WR2")}
            trained = {k: nets.FR.embed(warp_to_crop(res.images[k], grid)) for k in ("M", "M2")}
        assert res.losses["G_feat"].item() == pytest.approx(relu_cos(f["M"], f["M2"]).item(), rel=1e-4, abs=1e-6)
        assert res.losses["G_WR_feat"].item() == pytest.approx(relu_cos(f["WR1"], f["WR2"]).item(), rel=1e-4, abs=1e-6)
        assert res.losses["G_feat_M_WR"].item() == pytest.approx(relu_cos(f["M"], f["WR1"]).item(), rel=1e-4, abs=1e-6)
    assert (relu_cos(trained["M"], trained["M2"]) - relu_cos(f["M"], f["M2"])).abs() > 1e-3
    assert any(not torch.equal(a, b) for a, b in zip(nets.FR.parameters(), FR0.parameters()))  # FR trained
    assert all(torch.equal(a, b) for a, b in zip(obj.feature_fr.parameters(), FR0.parameters()))
    assert not any(p.requires_grad for p in obj.feature_fr.parameters())

    state = obj.state_dict()
    fresh = Objective(cfg, Networks(cfg), "cpu")
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.feature_fr.parameters(), FR0.parameters()))
    from_trained_run = Objective(tiny_cfg(pool_size=0), Networks(cfg), "cpu").state_dict()
    with pytest.raises(KeyError, match="feature_fr: trained"):
        Objective(cfg, Networks(cfg), "cpu").load_state_dict(from_trained_run)
    assert "feature_FR" not in Objective(tiny_cfg(), Networks(cfg), "cpu").state_dict()


def test_password_identity_names_a_training_identity_other_than_the_face_own():
    from models.objective import password_identity
    from models.passwords import int_from_bits, random_bits
    bits = random_bits(400, 16, torch.Generator().manual_seed(1))
    label = torch.randint(0, 7, (400,), generator=torch.Generator().manual_seed(2))
    t = password_identity(bits, label, 7)
    codes = torch.tensor([int_from_bits(b) % 7 for b in bits])
    assert not (t == label).any() and t.min() >= 0 and t.max() < 7
    assert torch.equal(t, torch.where(codes == label, (codes + 1) % 7, codes))
    assert (codes == label).any()  # the move to the next class was exercised
    assert torch.equal(password_identity(bits[:5], label[:5], 7), t[:5])  # per image, not per batch
    with pytest.raises(ValueError, match="2 FR classes"):
        password_identity(bits, label * 0, 1)


def test_password_identity_target_pulls_M_and_WR1_toward_the_identity_their_password_names():
    """fr_anon_target: password_identity (a departure, off by default): the G phase's FR term is
    (l_M CE_A(M, t(p)) + CE_A(R, y) + l_WR CE_A(WR1, t(w1))) / (l_M + 1 + l_WR); the D phase is the paper's."""
    from models.objective import password_identity
    torch.manual_seed(0)
    cfg = tiny_cfg(pool_size=0, fr_anon_target="password_identity", **LAMBDAS)
    nets = Networks(cfg)
    obj = Objective(cfg, nets, "cpu")
    batch = tiny_batch()
    pw = draw_step_passwords(3, 16, torch.Generator().manual_seed(3))
    res = obj.step(batch, pw)
    y = batch["label"]
    grid = alignment_grid(batch["landmarks"], (64, 64), (32, 32))
    t_M, t_WR = password_identity(pw.p, y, 7), password_identity(pw.w1, y, 7)
    angle = AngleLoss()
    angle.it = obj.angle.it - 3  # the G phase's three calls, with the shared counter where they began
    with torch.no_grad():  # FR after the D phase's step is the FR of the G phase
        logits = {k: nets.FR(warp_to_crop(res.images[k], grid))[1] for k in ("M", "R", "WR1")}
        gM, gR, gWR = angle(logits["M"], t_M), angle(logits["R"], y), angle(logits["WR1"], t_WR)
    L = LAMBDAS
    expected = (L["lambda_FR_M"] * gM + gR + L["lambda_FR_WR"] * gWR) / (L["lambda_FR_M"] + 1 + L["lambda_FR_WR"])
    assert res.losses["G_FR"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert res.losses["G_FR_M"].item() == pytest.approx(gM.item(), rel=1e-4)


def test_mode_seeking_is_one_over_the_image_distance_per_password_distance_per_image():
    from models.objective import mode_seeking
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    za, zb = (encode(torch.randint(0, 2, (4, 16), generator=g), "half") for _ in range(2))
    zb[:, 0] = -za[:, 0]  # at least one bit differs
    per = [1 / (1e-5 + (a[i] - b[i]).abs().mean() / (za[i] - zb[i]).abs().mean()) for i in range(4)]
    assert mode_seeking(a, b, za, zb).item() == pytest.approx(torch.stack(per).mean().item(), rel=1e-6)
    assert mode_seeking(a[1:2], b[1:2], za[1:2], zb[1:2]).item() == pytest.approx(per[1].item(), rel=1e-6)
    # it rises as the two outputs come together
    assert mode_seeking(a, 0.5 * (a + b), za, zb) > mode_seeking(a, b, za, zb)


def test_mode_seeking_option_adds_its_weighted_term_to_the_generator_loss_and_nothing_else():
    """lambda_mode_seeking (a departure, 0 by default): G's loss gains lambda * (ms(M, M2) + ms(WR1, WR2));
    the same step without it logs every other loss the same."""
    from models.objective import mode_seeking
    batch = tiny_batch()
    runs = {}
    for lam in (0.0, 0.7):
        torch.manual_seed(0)
        cfg = tiny_cfg(pool_size=0, lambda_mode_seeking=lam, **LAMBDAS)
        obj = Objective(cfg, Networks(cfg), "cpu")
        pw = draw_step_passwords(3, 16, torch.Generator().manual_seed(3))
        runs[lam] = obj.step(batch, pw)
    off, on = runs[0.0].losses, runs[0.7].losses
    assert "G_mode_seeking" not in off
    im = runs[0.7].images
    enc = lambda bits: encode(bits, "half")  # noqa: E731
    ms = (mode_seeking(im["M"], im["M2"], enc(pw.p), enc(pw.p2))
          + mode_seeking(im["WR1"], im["WR2"], enc(pw.w1), enc(pw.w2)))
    assert on["G_mode_seeking"].item() == pytest.approx(ms.item(), rel=1e-5)
    assert on["G"].item() == pytest.approx(off["G"].item() + 0.7 * ms.item(), rel=1e-5)
    for k in off:
        if k != "G":
            assert on[k].item() == pytest.approx(off[k].item(), rel=1e-5), k
