"""metrics.recognisers: dlib's descriptor on real faces (the two in scikit-image's photos), the
threshold calibration and the verification figures on hand-made distances."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from metrics import recognisers as rc
from utils.images import from_uint8

pytestmark = pytest.mark.usefixtures("one_thread")


def as_input(image: np.ndarray, points: np.ndarray):
    h, w = image.shape[:2]
    lm = torch.as_tensor(points, dtype=torch.float32) / torch.tensor([w / 2, h / 2]) - 1
    return from_uint8(image)[None], lm[None]


# Five points of the two faces, measured once with protect.face_detect.DlibDetector at upsample 1 (HOG
# for the astronaut; the CNN for the cameraman, whose turned face HOG misses), rounded to 0.1 px.
ASTRONAUT_POINTS = [[203.2, 101.5], [246.5, 104.2], [225.0, 127.0], [201.0, 139.0], [246.0, 141.0]]
CAMERAMAN_POINTS = [[206.7, 143.8], [234.3, 146.5], [217.0, 163.0], [211.0, 170.0], [229.0, 172.0]]


@pytest.fixture(scope="module")
def faces():
    """The astronaut (Eileen Collins) and the cameraman: two different real people."""
    astronaut = data.astronaut()
    cameraman = np.ascontiguousarray(np.repeat(data.camera()[..., None], 3, axis=2))
    return as_input(astronaut, np.array(ASTRONAUT_POINTS)), as_input(cameraman, np.array(CAMERAMAN_POINTS))


def test_dlib_same_crop_zero_different_people_beyond_threshold(faces):
    rec = rc.DlibRecogniser()
    (xa, la), (xc, lc) = faces
    ea, ea2, ec = rec.embed(xa, la), rec.embed(xa, la), rec.embed(xc, lc)
    assert ea.shape == (1, 128)
    assert rec.distance(ea, ea2)[0] == 0.0
    assert rec.distance(ea, ec)[0] > rc.DLIB_THRESHOLD
    # the same person mirrored stays well within the threshold
    xm = xa.flip(-1)
    lm = la.clone()
    lm[..., 0] = -lm[..., 0]
    assert rec.distance(ea, rec.embed(xm, lm[:, [1, 0, 2, 4, 3]]))[0] < 0.4


def test_pairwise_distances():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert np.allclose(rc.pairwise(a, b, "euclidean"), [[5, np.sqrt(17)], [1, 1]])
    assert np.allclose(rc.pairwise(a, b, "euclidean", rows=True), [5, 1])
    assert np.allclose(rc.pairwise(a, a * 7, "cosine", rows=True), [0, 0])
    assert np.allclose(rc.pairwise(a, -a, "cosine", rows=True), [2, 2])


def test_calibration_separates_when_it_can():
    same, diff = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6, 0.9])
    t = rc.calibrate(same, diff)
    assert 0.3 < t < 0.5
    v = rc.verification(same, diff, t)
    assert (v.true_match, v.true_non_match, v.balanced_accuracy, v.auc) == (1, 1, 1, 1)
    v = rc.verification(same, diff, 0.25)
    assert v.true_match == pytest.approx(2 / 3) and v.true_non_match == 1
    # overlapping distributions: AUC is the share of (same, different) pairs in the right order
    assert rc.auc(np.array([0.1, 0.6]), np.array([0.5, 0.9])) == pytest.approx(3 / 4)
    assert rc.auc(np.array([0.5]), np.array([0.5])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pairs"):
        rc.calibrate(np.array([]), diff)


def test_original_pairs_split_by_identity():
    labels = np.array([0, 0, 1])
    d = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0]], float)
    same, diff = rc.original_pairs(d, labels)
    assert same.tolist() == [1] and sorted(diff.tolist()) == [2, 3]
