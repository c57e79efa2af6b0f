"""metrics.dlib_net: dlib's face descriptor network run by PyTorch gives dlib's own descriptors, on real
faces (the two of scikit-image's photos), and refuses files it does not understand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import dlib_net
from metrics import recognisers as rc
from tests.test_metrics_recognisers import faces  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chips(faces):  # noqa: F811
    """dlib's chips of the astronaut, her mirror image, the cameraman, and a chip of noise."""
    (xa, la), (xc, lc) = faces
    lm = la.clone()
    lm[..., 0] = -lm[..., 0]
    rec = rc.DlibRecogniser(backend="dlib")
    out = rec.chips(xa, la) + rec.chips(xa.flip(-1), lm[:, [1, 0, 2, 4, 3]]) + rec.chips(xc, lc)
    noise = np.random.default_rng(0).integers(0, 256, out[0].shape, dtype=np.uint8)
    return out + [noise]


def test_same_descriptors_as_dlib(chips):
    ref = rc.DlibRecogniser(backend="dlib").describe(chips)
    ours = rc.DlibRecogniser(backend="torch").describe(chips)
    assert ours.shape == ref.shape == (4, 128) and ours.dtype == np.float64
    assert np.abs(ours - ref).max() < 1e-5  # float32 rounding; the descriptors' norms are about 1.5
    d_ref, d_ours = rc.pairwise(ref, ref, "euclidean"), rc.pairwise(ours, ours, "euclidean")
    assert np.abs(d_ref - d_ours).max() < 1e-5
    assert d_ours[0, 1] < 0.4 < rc.DLIB_THRESHOLD < d_ours[0, 2]  # mirror: the same person; cameraman: not


def test_a_batch_gives_each_chip_its_own_descriptor(chips, monkeypatch):
    rec = rc.DlibRecogniser()
    together = rec.describe(chips)
    monkeypatch.setattr(rc.DlibRecogniser, "BATCH", 1)
    alone = rec.describe(chips)
    assert np.abs(together - alone).max() < 1e-5
    assert rec.describe([]).shape == (0, 128)


def test_adding_tensors_of_different_sizes_keeps_the_larger():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    s = dlib_net._add(a, b)
    assert s.shape == (1, 4, 4, 4)
    assert (s[:, :2, :3, :3] == 3).all() and s[:, 2:].eq(2).all() and s[:, :, 3].eq(2).all()


def test_files_it_does_not_understand_are_refused():
    with pytest.raises(dlib_net.DlibFileError):
        dlib_net.DlibResNet(dlib_net.read_layers(b"\x01\x05hello" * 10))
    layers = dlib_net.read_layers(open(dlib_net.model_path(), "rb").read())
    kinds = [la.kind for la in layers]
    assert kinds.count("con_4") == 29 and kinds.count("add_prev_") == 14 and kinds[-1] == "fc_2"
    with pytest.raises(dlib_net.DlibFileError, match="layer order"):
        dlib_net.DlibResNet([la for la in layers if la.kind != "max_pool_2"])
