"""prepare_data.py: landmark lines, labels, the no-face report, and resuming after an interruption."""
import os

import numpy as np
import pytest
from PIL import Image
from skimage import data

import prepare_data
from datasets.prepare_landmarks import PrepareError, make_detector, prepare_landmarks
from protect.face_detect import DlibDetector, FaceDetector

IMAGES_WITH_FACES = ["id_a/1.jpg", "id_a/2.png", "id_b/small.jpg"]


@pytest.fixture(scope="module")
def detectors():
    return make_detector()


@pytest.fixture
def faces(tmp_path):
    """id_a: two 250x250 astronaut crops (one mirrored); id_b: a 160x160 resized crop, a flat image,
    a corrupt jpeg and a text file; plus one image outside any subfolder."""
    root = tmp_path / "faces"
    (root / "id_a").mkdir(parents=True)
    (root / "id_b").mkdir()
    crop = data.astronaut()[0:250, 98:348]
    Image.fromarray(crop).save(root / "id_a" / "1.jpg", quality=95)
    Image.fromarray(np.ascontiguousarray(crop[:, ::-1])).save(root / "id_a" / "2.png")
    Image.fromarray(crop).resize((160, 160), Image.BICUBIC).save(root / "id_b" / "small.jpg", quality=95)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(root / "id_b" / "flat.png")
    (root / "id_b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not really a jpeg" * 20)
    (root / "id_b" / "notes.txt").write_text("not an image")
    Image.fromarray(crop).save(root / "loose.jpg", quality=95)
    return root


def run(folder, out, detectors, **kw):
    logs = []
    det, retry = kw.pop("dets", detectors)
    rep = prepare_landmarks(str(folder), str(out), detector=det, retry_detector=retry, progress=False,
                            log=logs.append, **kw)
    return rep, "\n".join(logs)


def read_lines(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


def test_lines_labels_and_noface_report(faces, tmp_path, detectors):
    out = tmp_path / "lm.txt"
    rep, log = run(faces, out, detectors, labels_from_subfolders=True)
    lines = read_lines(out)
    assert [ln[0] for ln in lines] == IMAGES_WITH_FACES
    assert all(len(ln) == 12 for ln in lines)
    assert [int(ln[1]) for ln in lines] == [0, 0, 1]
    for ln in lines:
        le, re_, nose, lm, rm = np.array(ln[2:], float).reshape(5, 2)
        assert le[0] < re_[0] and lm[0] < rm[0] and max(le[1], re_[1]) < nose[1] < min(lm[1], rm[1])
    p1 = np.array(lines[0][2:], float).reshape(5, 2)
    p2 = np.array(lines[1][2:], float).reshape(5, 2)  # mirrored crop: x mirrors, order stays left-to-right
    assert np.abs(p2[[1, 0, 2, 4, 3], 0] - (249 - p1[:, 0])).max() < 6
    small = np.array(lines[2][2:], float).reshape(5, 2)  # 160/250 scale of the same face
    assert np.abs(small - p1 * 0.64).max() < 5

    noface = dict(line.split(" ", 1) for line in open(tmp_path / "lm_noface.txt").read().splitlines())
    assert set(noface) == {"id_b/flat.png", "id_b/broken.jpg"}
    assert noface["id_b/flat.png"] == "no face found" and noface["id_b/broken.jpg"].startswith("unreadable")
    assert "no landmarks for 2 images" in log and "id_b/flat.png" in log
    assert "id_b/notes.txt: not an image file" in log and "loose.jpg: not inside a subfolder" in log
    assert rep.written == 3 and rep.total_images == 5 and not rep.interrupted
    assert sorted(os.listdir(tmp_path)) == ["faces", "lm.txt", "lm_noface.txt"]  # partial files gone


def test_no_labels_matches_lfw_format(faces, tmp_path, detectors):
    out = tmp_path / "lfw_style.txt"
    run(faces, out, detectors)
    lines = read_lines(out)
    assert [ln[0] for ln in lines] == ["id_a/1.jpg", "id_a/2.png", "id_b/small.jpg", "loose.jpg"]
    assert all(len(ln) == 11 for ln in lines)
    assert lines[0][1:] == lines[3][1:]  # the same picture gives the same points


def test_output_reads_with_project_loader(faces, tmp_path, detectors):
    from datasets.annotations import read_landmarks

    run(faces, tmp_path / "cas.txt", detectors, labels_from_subfolders=True)
    run(faces, tmp_path / "lfw.txt", detectors)
    cas = read_landmarks(str(tmp_path / "cas.txt"), labelled=True)
    lfw = read_landmarks(str(tmp_path / "lfw.txt"), labelled=False)
    assert cas.paths == IMAGES_WITH_FACES and cas.labels.tolist() == [0, 0, 1]
    assert lfw.labels is None and cas.points.shape == (3, 5, 2)
    assert np.allclose(cas.points[0], lfw.points[0])


class Counting(FaceDetector):
    """Wraps a detector, counting calls; raises KeyboardInterrupt on call number ``stop_at``."""

    def __init__(self, inner: DlibDetector, stop_at: int | None = None):
        super().__init__(inner.min_face)
        self.inner, self.calls, self.stop_at = inner, 0, stop_at

    def _detect_raw(self, image):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.inner._detect_raw(image)


def test_resume_skips_done_images(faces, tmp_path, detectors):
    out = tmp_path / "lm.txt"
    sentinel = "id_a/1.jpg 0 " + " ".join(["7"] * 10)
    (tmp_path / "lm.txt.partial").write_text(sentinel + "\n" + "id_a/2.png 0 1 2 3")  # last line cut mid-write
    (tmp_path / "lm_noface.txt.partial").write_text("id_b/flat.png no face found\n")
    det = Counting(detectors[0])
    rep, log = run(faces, out, detectors, labels_from_subfolders=True, dets=(det, detectors[1]))
    assert "resuming: 2 of 5" in log and rep.resumed == 2
    lines = open(out).read().splitlines()
    assert lines[0] == sentinel  # kept, not recomputed
    assert [ln.split()[0] for ln in lines] == IMAGES_WITH_FACES  # no duplicates, the cut line redone
    assert det.calls == 2  # 2.png and small.jpg only (broken.jpg fails before detection)
    assert "id_b/flat.png" in open(tmp_path / "lm_noface.txt").read()


def test_interrupt_then_resume_equals_clean_run(faces, tmp_path, detectors):
    clean = tmp_path / "clean.txt"
    run(faces, clean, detectors, labels_from_subfolders=True)
    out = tmp_path / "lm.txt"
    det = Counting(detectors[0], stop_at=2)
    rep, log = run(faces, out, detectors, labels_from_subfolders=True, dets=(det, detectors[1]))
    assert rep.interrupted and not out.exists()
    assert "run the same command again to resume" in log
    assert len(open(tmp_path / "lm.txt.partial").read().splitlines()) == 1
    rep2, _ = run(faces, out, detectors, labels_from_subfolders=True)
    assert rep2.resumed == 1 and not rep2.interrupted
    assert out.read_text() == clean.read_text()
    assert (tmp_path / "lm_noface.txt").read_text() == (tmp_path / "clean_noface.txt").read_text()


def test_partial_from_other_options_is_an_error(faces, tmp_path, detectors):
    (tmp_path / "lm.txt.partial").write_text("id_a/1.jpg " + " ".join(["7"] * 10) + "\n")  # no label
    with pytest.raises(PrepareError, match=r"lm.txt.partial line 1: expected 12 fields"):
        run(faces, tmp_path / "lm.txt", detectors, labels_from_subfolders=True)


def test_never_overwrites_without_flag(faces, tmp_path, detectors, capsys):
    out = tmp_path / "lm.txt"
    out.write_text("finished earlier\n")
    rc = prepare_data.main([str(faces), "-o", str(out)])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    assert out.read_text() == "finished earlier\n"
    run(faces, out, detectors, overwrite=True)
    assert len(read_lines(out)) == 4


def test_cli_end_to_end(faces, tmp_path, capsys):
    out = tmp_path / "cli.txt"
    assert prepare_data.main([str(faces), "-o", str(out), "--labels-from-subfolders"]) == 0
    assert [ln[0] for ln in read_lines(out)] == IMAGES_WITH_FACES
    assert "wrote" in capsys.readouterr().out
