"""G with oneDNN's fused convolutions (models/onednn.py): the same function as the folded G, where it
applies; the folded G itself where it does not."""
from __future__ import annotations

import copy
import threading

import pytest
import torch

from models import build_generator
from models.networks import fold_batchnorm, with_bf16_weights
from models.onednn import FusedResnetGenerator, fuse_for_onednn, onednn_available
from tests.test_networks import _trained_generator
from utils.config import make_config

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no oneDNN fused convolutions")


def _folded(kind: str = "resnet_6blocks") -> torch.nn.Module:
    return fold_batchnorm(copy.deepcopy(_trained_generator(kind)).requires_grad_(False))


def _inputs(n: int = 4, size: int = 64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    p = (torch.randint(0, 2, (n, 16), generator=g) - 0.5).float()
    return x, p


def test_fused_generator_computes_the_folded_function_in_float32():
    G = _folded()
    F = fuse_for_onednn(G)
    assert isinstance(F, FusedResnetGenerator) and F.eager is G
    x, p = _inputs()
    with torch.no_grad():
        ref = G(x, p)
        assert ref.std() > 0.05  # not a saturated or constant output
        assert (F(x, p) - ref).abs().max().item() < 1e-4
        other = G(x, -p)
        assert (other - ref).abs().max().item() > 1e-3  # the password matters ...
        assert (F(x, -p) - other).abs().max().item() < 1e-4  # ... and reaches the fused first layer the same way
        assert (F(x[2:3], p[2:3]) - ref[2:3]).abs().max().item() < 1e-4  # any batch size


def test_fused_bf16_generator_is_as_close_to_float32_as_the_unfused_one():
    G = _folded()
    B = with_bf16_weights(G)
    F = fuse_for_onednn(B)
    assert isinstance(F, FusedResnetGenerator)
    x, p = _inputs(seed=2)
    with torch.no_grad():
        ref = G(x, p)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e_fused = (F(x, p).float() - ref).abs().mean().item()
            e_plain = (B(x, p).float() - ref).abs().mean().item()
    assert e_fused < 1.5 * e_plain + 1e-3
    assert e_fused < 0.05


def test_a_face_gives_the_same_bits_whatever_else_is_in_its_call():
    F = fuse_for_onednn(with_bf16_weights(_folded()))
    x, p = _inputs(seed=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = F(x, p)
        alone = F(x[1:2].expand(4, -1, -1, -1).contiguous(), p[1:2].expand(4, -1))
    assert torch.equal(mixed[1], alone[0])


def test_first_calls_from_two_threads_pack_once_and_agree():
    F = fuse_for_onednn(_folded())
    x, p = _inputs(n=2, seed=4)
    with torch.no_grad():
        want = F.eager(x, p)
    out, errors = [None, None], []

    def run(i):
        try:
            with torch.no_grad():
                out[i] = F(x, p)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert torch.equal(out[0], out[1])
    assert (out[0] - want).abs().max().item() < 1e-4


def test_calls_outside_cpu_inference_go_to_the_unfused_generator():
    G = _folded()
    F = fuse_for_onednn(G)
    x, p = _inputs(n=2)
    # with gradients enabled: G's own autograd path, which the fused operators do not have
    assert torch.equal(F(x, p), G(x, p))
    B = fuse_for_onednn(with_bf16_weights(G))
    with pytest.raises(RuntimeError), torch.no_grad():  # bf16 weights without autocast: G's own error
        B(x, p)
    with torch.no_grad(), pytest.raises(ValueError, match="password vector"):
        F(x, p[:, :8])


def test_generators_it_does_not_fit_are_returned_as_they_are(monkeypatch):
    unet = fold_batchnorm(copy.deepcopy(_trained_generator("unet_64")).requires_grad_(False))
    assert fuse_for_onednn(unet) is unet
    twins = build_generator(make_config(which_model_netG="resnet_6blocks", ngf=8)).eval()  # the authors' files
    assert fuse_for_onednn(twins) is twins
    G = _folded()
    monkeypatch.setattr("models.onednn.onednn_available", lambda: False)
    assert fuse_for_onednn(G) is G


def test_fused_operators_that_disagree_with_the_generator_are_not_used(monkeypatch):
    """The check on a test image: an operator that computes something else (here the residual
    blocks' addition dropped) or fails leaves the unfused G in use."""
    from models import onednn
    G = _folded()
    monkeypatch.setattr(onednn._Residual, "forward", lambda self, x: self.second(self.pad_second(
        self.first(self.pad_first(x)))))
    assert fuse_for_onednn(G) is G

    def broken(self, x):
        raise RuntimeError("could not create a primitive descriptor")
    monkeypatch.setattr(onednn._Residual, "forward", broken)
    assert fuse_for_onednn(G) is G


def test_inference_model_runs_the_fused_generator_on_the_cpu(tmp_path):
    from models.passwords import encode
    from tests.anonymize_helpers import save_small_checkpoint
    from training.checkpoint import InferenceModel
    model = InferenceModel(save_small_checkpoint(str(tmp_path / "g.pth")))  # resnet_9blocks, ngf 8
    assert isinstance(model._generator(True), FusedResnetGenerator)
    assert isinstance(model._generator(False), FusedResnetGenerator)
    x = torch.rand(2, 3, model.img_size, model.img_size) * 2 - 1
    bits = torch.randint(0, 2, (2, model.passwd_length))
    with torch.no_grad():
        ref = model.G(x, encode(bits, model.mode))
    assert (model(x, bits) - ref).abs().max().item() < 1e-4
    assert (model(x, bits, amp=True) - ref).abs().mean().item() < 0.05


def test_a_call_the_operators_fail_falls_back_to_the_unfused_generator_for_good(monkeypatch):
    from models import onednn
    G = _folded()
    F = fuse_for_onednn(G)
    x, p = _inputs(n=2)

    def broken(self, x):
        raise RuntimeError("could not create a primitive descriptor for the convolution\nmore")
    monkeypatch.setattr(onednn._Residual, "forward", broken)
    with torch.no_grad():
        want = G(x, p)
        with pytest.warns(RuntimeWarning, match="could not create a primitive descriptor"):
            got = F(x, p)
        assert torch.equal(got, want) and F.failed
        monkeypatch.undo()
        assert torch.equal(F(x, p), want)  # still the unfused G
