"""Networks: published state-dict layout, batch-independent inference, other password lengths."""
import os

import pytest
import torch

from models import Networks, build_generator, build_password_classifier
from models.networks import MultiscaleSeparatedDiscriminator
from utils.config import make_config

# The names and shapes of the parameters in the authors' published checkpoint files.
REF = os.path.join(os.path.dirname(__file__), "data", "original_state_dicts.txt")


def reference_shapes() -> dict:
    out = {}
    with open(REF) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            net, name, shape = line.split()
            out.setdefault(net, {})[name] = tuple(int(s) for s in shape.split("x"))
    return out


@pytest.fixture(scope="module")
def paper_nets():
    return Networks(make_config())


@pytest.mark.parametrize("net", ["G", "D", "Q", "FR"])
def test_state_dict_matches_published_checkpoints(paper_nets, net):
    ref = reference_shapes()[net]
    ours = {k: tuple(v.shape) for k, v in getattr(paper_nets, net).state_dict().items()}
    assert sorted(ours) == sorted(ref), \
        f"{net}: names differ: extra {set(ours) - set(ref)}, missing {set(ref) - set(ours)}"
    assert ours == ref


@pytest.mark.parametrize("net", ["G", "D", "Q", "FR"])
def test_published_state_dict_loads_strictly(paper_nets, net):
    g = torch.Generator().manual_seed(0)
    fake_file = {k: torch.randn(s, generator=g) for k, s in reference_shapes()[net].items()}
    module = getattr(paper_nets, net)
    module.load_state_dict(fake_file, strict=True)
    name, value = next(iter(fake_file.items()))
    assert torch.equal(module.state_dict()[name], value)


def test_generator_and_discriminator_shapes(paper_nets):
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    pw = torch.rand(2, 16) - 0.5
    with torch.no_grad():
        paper_nets.eval()
        y = paper_nets.G(x, pw)
        assert y.shape == x.shape and y.abs().max() <= 1
        full, half = paper_nets.D(x, "WR")
        assert full.shape == (2, 1, 14, 14) and half.shape == (2, 1, 6, 6)
        assert paper_nets.Q(x, y).shape == (2, 4, 16)
        with pytest.raises(ValueError, match="head"):
            paper_nets.D(x, "X")


@pytest.mark.parametrize("norm", ["batch", "instance"])
@pytest.mark.parametrize("kind", ["resnet_9blocks", "unet_128"])
def test_inference_does_not_depend_on_the_batch(kind, norm):
    torch.manual_seed(0)
    G = build_generator(make_config(which_model_netG=kind, norm=norm, ngf=8)).eval()
    x = torch.rand(5, 3, 128, 128) * 2 - 1
    pw = (torch.randint(0, 2, (5, 16)) - 0.5).float()
    with torch.no_grad():
        together = G(x, pw)
        for i in range(5):
            alone = G(x[i:i + 1], pw[i:i + 1])
            assert (alone - together[i:i + 1]).abs().max().item() < 1e-5
        # and with other company
        other = G(torch.cat([x[2:3], torch.zeros(3, 3, 128, 128)]), torch.cat([pw[2:3], pw[:3]]))
        assert (other[0] - together[2]).abs().max().item() < 1e-5


def test_training_mode_uses_batch_statistics():
    """The paper trains with batch statistics; only inference is per image."""
    torch.manual_seed(0)
    G = build_generator(make_config(ngf=8)).train()
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    pw = torch.zeros(4, 16)
    with torch.no_grad():
        assert (G(x, pw)[:1] - G(x[:1], pw[:1])).abs().max().item() > 1e-3


@pytest.mark.parametrize("length", [32, 64])
def test_other_password_lengths_build(length):
    cfg = make_config(passwd_length=length, ngf=8, ndf=8)
    G, Q = build_generator(cfg), build_password_classifier(cfg)
    assert G.model[1].weight.shape[1] == 3 + length
    x = torch.rand(2, 3, 64, 64)
    assert Q(x, x).shape == (2, length // 4, 16)


def test_resnet_without_resize_conv_uses_transposed_convolutions():
    G = build_generator(make_config(use_resize_conv=False, ngf=8))
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules())
    assert G(torch.zeros(1, 3, 32, 32), torch.zeros(1, 16)).shape == (1, 3, 32, 32)


def test_initialisation_follows_the_spec():
    torch.manual_seed(0)
    D = MultiscaleSeparatedDiscriminator(64, 3, "batch")
    from models.networks import init_weights
    init_weights(D, "normal", 0.02)
    w = D.layer1_M[5].weight
    assert abs(w.mean().item()) < 2e-3 and abs(w.std().item() - 0.02) < 2e-3
    bn = D.layer1_M[6]
    assert abs(bn.weight.mean().item() - 1) < 1e-2 and abs(bn.weight.std().item() - 0.02) < 5e-3
    assert torch.count_nonzero(bn.bias) == 0 and torch.count_nonzero(D.layer1_M[0].bias) == 0


def test_inference_keeps_the_password():
    """Per-image statistics would erase the password (a per-channel constant after the first
    convolution); the generator's twin normalisation keeps it."""
    torch.manual_seed(0)
    G = build_generator(make_config(ngf=8)).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    p = (torch.randint(0, 2, (2, 16)) - 0.5).float()
    q = (torch.randint(0, 2, (2, 16)) - 0.5).float()
    with torch.no_grad():
        assert (G(x, p) - G(x, q)).abs().mean().item() > 1e-3
        for m in G.modules():  # what plain per-image normalisation would do
            if hasattr(m, "eval_group"):
                m.eval_group = 1
        G.twin_norm = False
        assert (G(x, p) - G(x, q)).abs().max().item() < 1e-4


def test_inference_statistics_from_training_are_used_saved_and_restored():
    from models.networks import inference_stats, load_inference_stats
    torch.manual_seed(0)
    cfg = make_config(ngf=8)
    G = build_generator(cfg)
    with torch.no_grad():
        G.model[1].weight[:, 3:] *= 50  # a generator that has learnt to use its password
    assert not G.has_inference_stats and inference_stats(G) == {}
    G.train()
    with torch.no_grad():
        for _ in range(3):
            G(torch.rand(4, 3, 64, 64) * 2 - 1, (torch.randint(0, 2, (4, 16)) - 0.5).float())
    assert G.has_inference_stats
    assert "model.2.inference_mean" in inference_stats(G)
    assert not any("inference" in k for k in G.state_dict())  # the published names are untouched
    G.eval()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    p = (torch.randint(0, 2, (3, 16)) - 0.5).float()
    with torch.no_grad():
        together = G(x, p)
        assert (G(x[1:2], p[1:2]) - together[1:2]).abs().max().item() < 1e-5  # batch independent
        from models.networks import with_password
        first = G.model[:4]  # conv, norm, ReLU: the password must survive the first normalisation
        assert (first(with_password(x, -p)) - first(with_password(x, p))).abs().mean().item() > 0.1
        other = build_generator(cfg).eval()
        other.load_state_dict(G.state_dict())
        load_inference_stats(other, inference_stats(G))
        assert torch.equal(other(x, p), together)


@pytest.mark.parametrize("bias", [True, False])
def test_folded_resize_convolution_equals_upsample_pad_conv(bias):
    from models.networks import ReflectionPad2d, UpsampleConv2d
    torch.manual_seed(0)
    fused = UpsampleConv2d(5, 3, 3, bias=bias)
    plain = torch.nn.Conv2d(5, 3, 3, bias=bias)
    plain.load_state_dict(fused.state_dict())
    reference = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"), ReflectionPad2d(1), plain)
    x = torch.randn(2, 5, 7, 6, requires_grad=True)
    y, y_ref = fused(x), reference(x)
    assert y.shape == (2, 3, 14, 12)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, fused.weight), g)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, plain.weight), g)
    assert torch.allclose(gx, gx_ref, atol=1e-4) and torch.allclose(gw, gw_ref, atol=1e-4)
    # bf16 (native on CPUs with AVX-512 BF16 or AMX, emulated elsewhere): errors relative to the
    # output's scale, and next to the plain bf16 convolution's, not an absolute tolerance
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y16, y16_ref = fused(x), reference(x)
    assert y16.dtype == torch.bfloat16
    err, err_ref = (y16.float() - y_ref).abs(), (y16_ref.float() - y_ref).abs()
    assert err.max() <= 2 ** -6 * y_ref.abs().max()  # bf16 keeps 8 significant bits: 2^-9 per rounding
    assert err.mean() <= 3 * err_ref.mean() + 1e-6 * y_ref.abs().mean()


@pytest.mark.parametrize("train", [True, False])
def test_password_bias_first_convolution_equals_concatenated_channels(train):
    """The resnet G folds the constant password channels into a per-image bias of its first
    convolution: the same function and gradients as convolving the concatenated input. Checked in
    float64: in float32 the train-mode BatchNorm backward of six blocks amplifies rounding (the
    gradients of the two forms differ by up to 0.7% on an AVX2 CPU, and by 1e-15 in float64)."""
    from models.networks import with_password
    torch.manual_seed(0)
    G = build_generator(make_config(ngf=8, which_model_netG="resnet_6blocks")).train(train)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    p = torch.randn(4, 16)
    assert torch.allclose(G._run(x, p), G.model(with_password(x, p)), atol=1e-5)  # float32, forward
    G, x, p = G.double(), x.double().requires_grad_(True), p.double()
    y, y_ref = G._run(x, p), G.model(with_password(x, p))
    assert torch.allclose(y, y_ref, atol=1e-12)
    g = torch.randn_like(y)
    w = G.model[1].weight
    gx, gw = torch.autograd.grad(y, (x, w), g)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), g)
    for a, b in ((gx, gx_ref), (gw, gw_ref)):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()
    assert gw[:, 3:].abs().sum() > 0  # the password weights learn
    with pytest.raises(ValueError, match="password vector"):
        G._run(x, p[:, :8])


@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_sum_convolution_equals_the_plain_convolution(channels_last):
    import torch.nn.functional as F

    from models.networks import ShiftSumConv2d
    torch.manual_seed(0)
    m = ShiftSumConv2d(8, 3, 7)
    torch.nn.init.normal_(m.bias)
    x = torch.randn(2, 8, 20, 18)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y, y_ref = m(x), F.conv2d(x, m.weight, m.bias)
    assert y.shape == y_ref.shape == (2, 3, 14, 12)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, m.weight, m.bias), g),
                    torch.autograd.grad(y_ref, (x, m.weight, m.bias), g)):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y16, y16_ref = m(x), F.conv2d(x, m.weight, m.bias)
    assert y16.dtype == torch.bfloat16
    # about one more bf16 rounding than the plain bf16 convolution, never far from it
    err, err_ref = (y16.float() - y_ref).abs().mean(), (y16_ref.float() - y_ref).abs().mean()
    assert err <= 3 * err_ref + 1e-6


def test_unet_64_reaches_one_pixel_at_64_and_is_batch_independent():
    """unet_64 is the pix2pix U-Net one level shallower: at 64x64 its innermost level is 1x1."""
    torch.manual_seed(0)
    G = build_generator(make_config(which_model_netG="unet_64", img_size=64, ngf=8))
    seen = []
    hook = lambda m, i, o: seen.append(o.shape[-1])  # noqa: E731
    downs = [m for m in G.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(downs) == 6
    handles = [d.register_forward_hook(hook) for d in downs]
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    pw = (torch.randint(0, 2, (4, 16)) - 0.5).float()
    G.train()
    G(x, pw)
    assert min(seen) == 1
    for h in handles:
        h.remove()
    G.eval()
    with torch.no_grad():
        together = G(x, pw)
        alone = G(x[1:2], pw[1:2])
    assert (alone - together[1:2]).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="unet_64"):
        make_config(which_model_netG="unet_64", img_size=96)


def _unet_with_tiled_password(block, x, pw):
    """Reference for ``passwd_inject: every_level``, written as the option is defined: the password
    tiled onto the input of each level's up-convolution (nearest x2, reflection pad 1, 3x3 conv whose
    weights for those channels are the level's ``pw_proj`` spread over the kernel)."""
    import torch.nn.functional as F

    from models.networks import UnetBlock
    y = x
    for i, layer in enumerate(block.model):
        if isinstance(layer, UnetBlock):
            y = _unet_with_tiled_password(layer, y, pw)
        elif i == block._up:
            z = torch.cat([y, pw[:, :, None, None].expand(-1, -1, *y.shape[2:])], 1)
            z = F.pad(F.interpolate(z, scale_factor=2, mode="nearest"), (1, 1, 1, 1), mode="reflect")
            v = block.pw_proj.weight[:, :, None, None].expand(-1, -1, 3, 3) / 9
            y = F.conv2d(z, torch.cat([layer.weight, v], 1), layer.bias)
        else:
            y = layer(y)
    return y if block.outermost else torch.cat([x, y], 1)


def test_password_at_every_level_equals_tiled_channels_at_every_decoder_input():
    """The departure ``passwd_inject: every_level`` adds a per-image bias after each up-convolution:
    the same function and gradients as tiling the password onto that convolution's input."""
    from models.networks import with_password
    torch.manual_seed(0)
    cfg = make_config(which_model_netG="unet_64", img_size=64, ngf=4, passwd_inject="every_level")
    G = build_generator(cfg).train().double()
    projs = [m.pw_proj for m in G.modules() if getattr(m, "pw_proj", None) is not None]
    assert len(projs) == 6 and all(p.weight.shape[1] == 16 and p.weight.std() > 0 for p in projs)
    x = torch.rand(4, 3, 64, 64, dtype=torch.float64) * 2 - 1
    pw = (torch.randint(0, 2, (4, 16)) - 0.5).double()
    y, y_ref = G(x, pw), _unet_with_tiled_password(G.model, with_password(x, pw), pw)
    assert torch.allclose(y, y_ref, atol=1e-10)
    g = torch.randn_like(y)
    w = projs[0].weight
    gw, gw_ref = torch.autograd.grad(y, w, g)[0], torch.autograd.grad(y_ref, w, g)[0]
    assert gw.abs().sum() > 0 and (gw - gw_ref).abs().max() <= 1e-9 * gw_ref.abs().max()
    # the decoder reads the password itself: with the input's password weights at zero it still matters
    with torch.no_grad():
        G.model.model[0].weight[:, 3:] = 0
        other = -pw
        assert (G(x, pw) - G(x, other)).abs().max() > 1e-3


def test_password_at_every_level_is_off_by_default_and_only_for_the_unet():
    from utils.config import ConfigError
    plain = build_generator(make_config(which_model_netG="unet_64", img_size=64, ngf=4))
    assert not any("pw_proj" in k for k in plain.state_dict())  # the spec's parameters, nothing more
    G = build_generator(make_config(which_model_netG="unet_64", img_size=64, ngf=4, passwd_inject="every_level"))
    assert set(plain.state_dict()) < set(G.state_dict())
    with pytest.raises(ConfigError, match="passwd_inject every_level is for the U-Net"):
        make_config(passwd_inject="every_level")
    G.eval()  # no inference statistics yet: each image beside its complementary twin, alone in the batch
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    pw = (torch.randint(0, 2, (3, 16)) - 0.5).float()
    with torch.no_grad():
        together, alone = G(x, pw), G(x[2:], pw[2:])
    assert (alone - together[2:]).abs().max().item() < 1e-5


def test_a_checkpoint_with_the_password_at_every_level_loads_for_inference(tmp_path):
    """The anonymizer rebuilds G from the checkpoint's saved config: the option travels with it."""
    from tests.anonymize_helpers import save_small_checkpoint
    from training.checkpoint import InferenceModel
    path = save_small_checkpoint(str(tmp_path / "g.pth"), which_model_netG="unet_64", passwd_inject="every_level")
    model = InferenceModel(path)
    assert model.cfg["passwd_inject"] == "every_level" and any("pw_proj" in k for k in model.G.state_dict())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    pw = (torch.randint(0, 2, (2, 16)) - 0.5).float()
    with torch.no_grad():
        assert (model.G(x, pw) - model.G(x, -pw)).abs().max() > 1e-4


def _trained_generator(kind: str, **kw) -> torch.nn.Module:
    """A small G whose BatchNorms hold inference statistics from a few training batches, and whose
    BatchNorm affines are not the identity (so that folding them is not a no-op)."""
    torch.manual_seed(0)
    size = 64
    G = build_generator(make_config(which_model_netG=kind, ngf=8, **kw))
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
            elif isinstance(m, torch.nn.Conv2d) and m.in_channels == 3 + 16:
                m.weight[:, 3:] *= 50  # a G that has learnt to use its password
            elif isinstance(m, torch.nn.Linear):  # the password's projections (every_level)
                m.weight *= 50
        G.train()
        for _ in range(3):
            G(torch.rand(4, 3, size, size) * 2 - 1, (torch.randint(0, 2, (4, 16)) - 0.5).float())
    return G.eval()


@pytest.mark.parametrize("kind,inject", [("resnet_6blocks", "input"), ("unet_64", "input"),
                                         ("unet_64", "every_level")])
def test_folded_batchnorm_computes_the_same_function(kind, inject):
    import copy

    from models.networks import BatchNorm2dNoStats, UpsampleConv2d, fold_batchnorm
    G = _trained_generator(kind, passwd_inject=inject)
    assert G.has_inference_stats
    F = fold_batchnorm(copy.deepcopy(G).requires_grad_(False))
    assert F.folded and not any(isinstance(m, BatchNorm2dNoStats) for m in F.modules())
    assert all(m.frozen_weight is not None for m in F.modules() if isinstance(m, UpsampleConv2d))
    assert not any("frozen" in k for k in F.state_dict())
    torch.manual_seed(1)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    p = (torch.randint(0, 2, (3, 16)) - 0.5).float()
    with torch.no_grad():
        ref = G(x, p)
        assert ref.std() > 0.05  # not a saturated or constant output
        assert (F(x, p) - ref).abs().max().item() < 1e-4
        assert (F(x[1:2], p[1:2]) - ref[1:2]).abs().max().item() < 1e-4  # still batch independent
        other = G(x, -p)
        assert (other - ref).abs().max().item() > 1e-3  # the password matters ...
        assert (F(x, -p) - other).abs().max().item() < 1e-4  # ... and reaches the folded G the same way
        # bf16 autocast: no further from float32 than the unfolded G under autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e_folded = (F(x, p).float() - ref).abs().mean().item()
            e_plain = (G(x, p).float() - ref).abs().mean().item()
        assert e_folded < 1.5 * e_plain + 1e-3


def test_folding_leaves_twin_normalised_generators_alone_and_cannot_be_trained():
    import copy

    from models.networks import fold_batchnorm
    torch.manual_seed(0)
    G = build_generator(make_config(ngf=8)).eval()  # no inference statistics: the authors' files
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    p = (torch.randint(0, 2, (2, 16)) - 0.5).float()
    with torch.no_grad():
        before = G(x, p)
        assert fold_batchnorm(G) is G and not G.folded and G.twin_norm
        assert torch.equal(G(x, p), before)
    F = fold_batchnorm(copy.deepcopy(_trained_generator("resnet_6blocks")))
    F.eval()  # eval stays allowed
    with pytest.raises(RuntimeError, match="folded"):
        F.train()


@pytest.mark.parametrize("kind,fold", [("resnet_6blocks", True), ("unet_64", True), ("resnet_6blocks", False)])
def test_bf16_weights_copy_is_as_close_to_float32_as_autocast(kind, fold):
    """The copy for bf16 inference (weights cast once) against G under autocast (cast every call), both
    measured from G's float32 output; folded generators and twin-normalised ones (fold=False)."""
    import copy

    from models.networks import fold_batchnorm, with_bf16_weights
    G = _trained_generator(kind)
    if fold:
        G = fold_batchnorm(copy.deepcopy(G).requires_grad_(False))
    else:  # the authors' files: no inference statistics, twins normalised together
        G = build_generator(make_config(which_model_netG=kind, ngf=8)).eval()
    B = with_bf16_weights(G)
    assert all(p.dtype == torch.float32 for p in G.parameters())  # G itself is left as it was
    assert any(p.dtype == torch.bfloat16 for p in B.parameters())
    torch.manual_seed(2)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    p = (torch.randint(0, 2, (2, 16)) - 0.5).float()
    with torch.no_grad():
        ref = G(x, p)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e_copy = (B(x, p).float() - ref).abs().mean().item()
            e_autocast = (G(x, p).float() - ref).abs().mean().item()
        assert e_copy < 1.5 * e_autocast + 1e-3
        with pytest.raises(RuntimeError):  # not for float32 calls
            B(x, p)
    with pytest.raises(ValueError, match="eval"):
        with_bf16_weights(copy.deepcopy(G).train() if not fold else build_generator(make_config(ngf=8)))
