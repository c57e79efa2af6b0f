"""Each loss term against values computed by hand on tiny tensors."""
import math

import pytest
import torch

from models.image_pool import ImagePool
from models.networks import GANLoss
from models.objective import digit_loss, feature_loss
from models.sphereface import AngleLinear, AngleLoss


def test_lsgan_sums_mean_squared_errors_over_the_maps():
    maps = [torch.tensor([[0.5, 1.0]]), torch.tensor([2.0])]
    assert GANLoss("lsgan")(maps, True).item() == pytest.approx(0.125 + 1.0)
    assert GANLoss("lsgan")(maps, False).item() == pytest.approx(0.625 + 4.0)


def test_vanilla_is_bce_with_logits():
    maps = [torch.tensor([0.0]), torch.tensor([2.0])]
    expected = math.log(2) + math.log(1 + math.exp(-2.0))
    assert GANLoss("vanilla")(maps, True).item() == pytest.approx(expected, rel=1e-6)


def angle_linear_fixture():
    layer = AngleLinear(2, 2, m=4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # columns: class 0 along x, class 1 along y
    return layer


def test_angle_linear_margin_function():
    cos, phi = angle_linear_fixture()(torch.tensor([[3.0, 4.0]]))
    # |x| = 5, cos(theta_0) = 0.6, cos(theta_1) = 0.8
    assert cos.tolist()[0] == pytest.approx([3.0, 4.0], rel=1e-6)
    c0, c1 = 0.6, 0.8
    cos4 = lambda c: 8 * c ** 4 - 8 * c ** 2 + 1  # noqa: E731
    k0 = math.floor(4 * math.acos(c0) / math.pi)  # 1
    k1 = math.floor(4 * math.acos(c1) / math.pi)  # 0
    assert (k0, k1) == (1, 0)
    phi0 = (-1) ** k0 * cos4(c0) - 2 * k0
    phi1 = (-1) ** k1 * cos4(c1) - 2 * k1
    assert phi.tolist()[0] == pytest.approx([5 * phi0, 5 * phi1], rel=1e-5)


def test_angle_loss_lambda_annealing_and_value():
    cos, phi = torch.tensor([[3.0, 4.0]]), torch.tensor([[-5.784, -4.216]])
    loss = AngleLoss(gamma=0, lambda_min=5, lambda_max=1500)
    value = loss((cos, phi), torch.tensor([0])).item()
    lamb = 1500 / (1 + 0.1 * 1)  # the first call counts as it = 1
    target_logit = 3.0 - 3.0 / (1 + lamb) + (-5.784) / (1 + lamb)
    expected = -(target_logit - math.log(math.exp(target_logit) + math.exp(4.0)))
    assert value == pytest.approx(expected, rel=1e-5)
    assert loss.it == 1
    loss.it = 10_000
    assert loss.current_lambda() == 5  # the floor
    value = loss((cos, phi), torch.tensor([1])).item()
    target_logit = 4.0 - 4.0 / 6 + (-4.216) / 6
    assert value == pytest.approx(-(target_logit - math.log(math.exp(3.0) + math.exp(target_logit))), rel=1e-5)


def test_feature_losses():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0], [-1.0, 0.0]])
    # cos = 0, 1, -1 -> max(0, .) = 0, 1, 0
    assert feature_loss(a, b, "cos").item() == pytest.approx(1 / 3)
    assert feature_loss(a, b, "l2").item() == pytest.approx(-((1 + 1) + (1 + 1) + (4 + 0)) / 6)


def test_digit_loss_sums_cross_entropy_over_digits():
    logits = torch.zeros(2, 4, 16)
    bits = torch.zeros(2, 16, dtype=torch.uint8)
    assert digit_loss(logits, bits).item() == pytest.approx(4 * math.log(16))
    logits[:, :, 0] = 100.0  # confident and right on every digit (all zero)
    assert digit_loss(logits, bits).item() == pytest.approx(0.0, abs=1e-6)


def test_image_pool_behaviour():
    imgs = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(ImagePool(0).query(imgs, 2), imgs)  # size 0: everything offered, no sampling
    pool = ImagePool(10, seed=0)
    out = pool.query(imgs, 2)  # not full: returns the images themselves, a random 2 kept in order
    vals = out.flatten().tolist()
    assert len(vals) == 2 and vals == sorted(vals) and set(vals) <= {0.0, 1.0, 2.0, 3.0}
    assert len(pool.images) == 4  # every offered image entered the history
    full = ImagePool(4, seed=1)
    full.query(imgs)
    later = full.query(torch.full((200, 1, 1, 1), 9.0)).flatten()
    swapped = (later != 9.0).sum().item()
    assert 0 < swapped <= 4  # old images come back only while they are still in the pool


def test_image_pool_state_round_trip():
    pool = ImagePool(3, seed=5)
    pool.query(torch.randn(5, 3, 2, 2))
    state = pool.state_dict()
    copy = ImagePool(3)
    copy.load_state_dict(state)
    x = torch.randn(6, 3, 2, 2)
    assert torch.equal(pool.query(x, 3), copy.query(x, 3))


def test_sphereface_prelu_equals_the_native_prelu_exactly():
    import torch.nn.functional as F

    from models.sphereface import PReLU
    torch.manual_seed(0)
    m = PReLU(4)
    torch.nn.init.uniform_(m.weight, -1, 1)
    x = torch.randn(3, 4, 5, 6, requires_grad=True)
    y, y_ref = m(x), F.prelu(x, m.weight)
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, m.weight), g), torch.autograd.grad(y_ref, (x, m.weight), g)):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = m(x), F.prelu(x, m.weight)
    assert y.dtype == y_ref.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    single = PReLU()
    assert torch.equal(single(x), F.prelu(x, single.weight))
