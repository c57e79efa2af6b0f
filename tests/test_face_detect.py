"""Face detection on the one real face photo available offline (skimage's astronaut)."""
import numpy as np
import pytest
from skimage import data

from protect.face_detect import DetectedFace, DlibDetector, FaceDetector, check_image, five_points_from_68


@pytest.fixture(scope="module")
def astronaut():
    return data.astronaut()


@pytest.fixture(scope="module")
def hog():
    return DlibDetector()


def assert_plausible(face: DetectedFace):
    p = face.points
    assert p.shape == (5, 2) and p.dtype == np.float32
    le, re, nose, lm, rm = p
    assert le[0] < re[0] and lm[0] < rm[0]
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])  # eyes above nose above mouth
    assert le[0] < nose[0] < re[0]
    left, top, right, bottom = face.box
    assert np.all((p[:, 0] > left) & (p[:, 0] < right) & (p[:, 1] > top) & (p[:, 1] < bottom))
    eye_dist = re[0] - le[0]
    assert 0.25 < eye_dist / (right - left) < 0.7


def test_astronaut_one_face(hog, astronaut):
    faces = hog.detect(astronaut)
    assert len(faces) == 1
    assert_plausible(faces[0])
    assert faces[0].score > 0
    assert hog.name == "dlib-hog"


def test_cnn_detector_agrees(astronaut, hog):
    cnn_faces = DlibDetector(model="cnn").detect(astronaut)
    assert len(cnn_faces) == 1
    assert_plausible(cnn_faces[0])
    # Same face: the five points agree with HOG's within a few pixels (landmarks are fitted the same way).
    assert np.abs(cnn_faces[0].points - hog.detect(astronaut)[0].points).max() < 6


def test_max_side_maps_back_to_full_resolution(astronaut, hog):
    big = np.kron(astronaut, np.ones((2, 2, 1), np.uint8))  # 1024x1024
    faces = DlibDetector(max_side=512).detect(big)
    assert len(faces) == 1
    ref = hog.detect(astronaut)[0]
    assert np.allclose(np.array(faces[0].box), 2 * np.array(ref.box), atol=4)
    assert np.abs(faces[0].points - (2 * ref.points + 0.5)).max() < 6


def test_small_faces_reported_apart(astronaut):
    half = np.ascontiguousarray(astronaut[::2, ::2])  # face about 45 px: needs upsample 1
    assert DlibDetector(upsample=0).detect(half) == []
    strict = DlibDetector(upsample=1, max_side=None, min_face=60).detect_all(half)
    assert strict.faces == [] and len(strict.too_small) >= 1
    assert strict.too_small[0].size < 60
    loose = DlibDetector(upsample=1, min_face=20).detect_all(half)
    assert len(loose.faces) >= 1 and loose.too_small == []
    assert_plausible(loose.faces[0])  # largest first


def test_no_face_in_flat_image(hog):
    assert hog.detect(np.full((200, 300, 3), 90, np.uint8)) == []


@pytest.mark.parametrize("bad, err", [
    (np.zeros((64, 64), np.uint8), ValueError),        # grayscale
    (np.zeros((64, 64, 4), np.uint8), ValueError),     # RGBA
    (np.zeros((64, 64, 3), np.float32), TypeError),    # float
    (np.zeros((0, 64, 3), np.uint8), ValueError),      # empty
    ([[0, 0, 0]], TypeError),                          # not an array
])
def test_rejects_bad_input(hog, bad, err):
    with pytest.raises(err, match="RGB|uint8|empty"):
        hog.detect(bad)


def test_check_image_makes_contiguous(astronaut):
    view = astronaut[:, ::-1]
    assert not view.flags.c_contiguous
    assert check_image(view).flags.c_contiguous


def test_five_points_order_by_x():
    pts = np.zeros((68, 2))
    pts[36:42] = (300, 100)  # anatomical right eye placed at the larger x (a mirrored face)
    pts[42:48] = (200, 100)
    pts[30] = (250, 150)
    pts[48], pts[54] = (310, 200), (190, 200)
    five = five_points_from_68(pts)
    assert five.tolist() == [[200, 100], [300, 100], [250, 150], [190, 200], [310, 200]]


def test_batch_matches_single(hog, astronaut):
    flat = np.zeros((100, 100, 3), np.uint8)
    batch = hog.detect_batch([astronaut, flat, astronaut])
    assert [len(b) for b in batch] == [1, 0, 1]
    assert np.array_equal(batch[0][0].points, hog.detect(astronaut)[0].points)


def test_interface_for_other_detectors():
    class Fixed(FaceDetector):
        name = "fixed"

        def _detect_raw(self, image):
            pts = np.zeros((5, 2), np.float32)
            return [DetectedFace((0, 0, 10, 10), pts, 1.0), DetectedFace((0, 0, 50, 40), pts, 0.5)]

    found = Fixed(min_face=20).detect_all(np.zeros((60, 60, 3), np.uint8))
    assert [f.box for f in found.faces] == [(0, 0, 50, 40)]
    assert [f.box for f in found.too_small] == [(0, 0, 10, 10)]
    with pytest.raises(ValueError):
        Fixed().detect(np.zeros((60, 60), np.uint8))


def test_bad_options():
    with pytest.raises(ValueError, match="hog"):
        DlibDetector(model="mtcnn")
    with pytest.raises(ValueError):
        DlibDetector(upsample=-1)
