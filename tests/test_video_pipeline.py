"""The faster video pipeline changes no result: threads give the same file and record as the
sequential run, a face's generated crop does not depend on the other faces or frames of its batch,
the whole-frame search plus refining on crops finds the faces that the photo detector finds, and
recovery works from the records that the threaded run writes."""
from __future__ import annotations

import hashlib
import threading
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from bench.real_faces import build, group_three, match, photos, rotated, scaled
from models.passwords import Password
from protect.face_detect import DetectedFace, FaceDetector, box_iou
from protect.frame import cut_crops
from protect.pipeline import Ordered, one_thread, prefetch
from protect.protector import FacePasswords, FaceProtector
from protect.track import Tracker, build_tracks
from protect.video import VideoOptions, follow_faces, protect_video
from protect.video_io import Frame, VideoReader, write_video_with_tone
from tests.anonymize_helpers import save_small_checkpoint

yuface = pytest.importorskip("yuface")
from protect.face_detect_yunet import YuNetDetector, _run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
W, H, N = 640, 360, 12


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    return save_small_checkpoint(str(tmp_path_factory.mktemp("ck") / "small.pth"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 frames of 640x360 with two real faces drifting right (and an AAC track)."""
    ph = photos()
    a, ab = scaled(*ph["astronaut"], 70)
    g, gb = scaled(*ph["grace_hopper"], 56)
    tiles = [(a, ab), (g, gb)]
    bg = cv2.resize(cv2.GaussianBlur(ph["cameraman"][0], (0, 0), 8), (W, H))

    def frame(i):
        img = bg.copy()
        for k, (t, b) in enumerate(tiles):
            cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
            part = t[max(0, cy - 70):cy + 70, max(0, cx - 70):cx + 70]
            x, y = 60 + 300 * k + 3 * i, 90 + 40 * k
            img[y:y + part.shape[0], x:x + part.shape[1]] = part
        return img

    path = str(tmp_path_factory.mktemp("v") / "faces.mp4")
    return write_video_with_tone(path, (frame(i) for i in range(N)), 15)


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def frames_of(path):
    with VideoReader(path) as r:
        return [f.image for f in r]


def test_threads_give_the_sequential_output_and_record(small_ckpt, clip, tmp_path):
    protector = FaceProtector(small_ckpt, YuNetDetector())
    pw = FacePasswords.per_face("two people", 16)
    outs = {}
    for name, opt in {"threads": VideoOptions(progress=False),
                      "sequential": VideoOptions(progress=False, threads=False),
                      "small batches": VideoOptions(progress=False, batch_frames=3)}.items():
        out = str(tmp_path / f"{name.replace(' ', '_')}.mp4")
        res = protect_video(protector, clip, out, pw, options=opt)
        outs[name] = (sha(out), res.record.tracks, res)
    res = outs["threads"][2]
    assert res.tracks == 2 and res.face_frames == 2 * N and res.frames == N
    assert all(t["detected"] == list(range(0, N, 2)) for t in res.record.tracks)
    assert outs["threads"][:2] == outs["sequential"][:2] == outs["small batches"][:2]


def test_recovery_from_the_threaded_records(small_ckpt, clip, tmp_path):
    protector = FaceProtector(small_ckpt, YuNetDetector())
    pw = FacePasswords.per_face("two people", 16)
    anon = str(tmp_path / "anon.mp4")
    rec = protect_video(protector, clip, anon, pw, options=VideoOptions(progress=False, crf=0)).record
    backs = {}
    for name, opt in {"threads": VideoOptions(progress=False, crf=0),
                      "sequential": VideoOptions(progress=False, crf=0, threads=False)}.items():
        backs[name] = str(tmp_path / f"back_{name}.mp4")
        protect_video(protector, anon, backs[name], pw, recover=True, record=rec, options=opt)
    assert sha(backs["threads"]) == sha(backs["sequential"])
    wrong = str(tmp_path / "wrong.mp4")
    protect_video(protector, anon, wrong, FacePasswords.per_face("someone else", 16), recover=True, record=rec,
                  options=VideoOptions(progress=False, crf=0))
    src, a, b, w = (frames_of(p) for p in (clip, anon, backs["threads"], wrong))
    for t in rec.tracks:
        i = 5 - t["first_frame"]
        m = [np.asarray(t["transforms"][i]).reshape(2, 3)]
        crop = lambda im, m=m: cut_crops(im, m, protector.size).numpy()  # noqa: E731
        # G(G(x, p), ~p) is close to x for the small test generator only up to its training: compare
        # with a wrong password, which must be further from the recovered video than the right one
        direct = protector.generate(torch.from_numpy(crop(a[5])), [pw.for_key(t["key"])], inverse=True)
        got, bad = crop(b[5]), crop(w[5])
        to255 = lambda x: (x.transpose(0, 2, 3, 1) + 1) * 127.5  # noqa: E731
        assert np.abs(to255(got) - direct).mean() < 0.5 * np.abs(to255(bad) - direct).mean()
        assert np.abs(crop(a[5]) - crop(src[5])).mean() > 0.02  # the face was changed


@pytest.mark.parametrize("amp", [False, True])
def test_generator_output_of_a_face_does_not_depend_on_its_batch(small_ckpt, amp):
    """A face alone, among other faces, first or last in its call: the same bits (every call has
    batch_size images; oneDNN's kernels change with the batch size, in float32 its results too)."""
    torch.manual_seed(0)
    crops = torch.rand(7, 3, 64, 64) * 2 - 1
    pws = [Password.from_passphrase(f"p{i}", 16) for i in range(7)]
    for size in (2, 4):
        p = FaceProtector(small_ckpt, _NoFaces(), amp=amp, batch_size=size)
        alone = np.concatenate([p.generate(crops[i:i + 1], pws[i:i + 1], False) for i in range(7)])
        assert np.array_equal(p.generate(crops, pws, False), alone), size  # 7 faces: calls of 4 + 3 (padded)
        order = [6, 2, 0, 5, 1, 3, 4]
        assert np.array_equal(p.generate(crops[order], [pws[i] for i in order], False), alone[order]), size
        other = torch.cat([torch.rand(size - 1, 3, 64, 64) * 2 - 1, crops[:1]])  # other faces, other codes
        assert np.array_equal(p.generate(other, pws[3:3 + size - 1] + pws[:1], False)[-1], alone[0]), size


class _NoFaces(FaceDetector):
    name = "none"

    def __init__(self):
        super().__init__(32)

    def _detect_raw(self, image):
        return []


def test_threads_do_not_change_the_generator_or_yunet(small_ckpt):
    p = FaceProtector(small_ckpt, _NoFaces(), amp=True)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    pws = [Password.from_passphrase("t", 16)] * 4
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = p.generate(x, pws, False)
        with one_thread():
            assert torch.get_num_threads() == 1
            one = p.generate(x, pws, False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(one, two)
    frame, _ = group_three()
    bgr = np.ascontiguousarray(frame[::2, ::2, ::-1])
    rows = _run(bgr)[:, :15]  # score, box, five points (a last column is not set)
    with one_thread():
        assert np.array_equal(_run(bgr)[:, :15], rows)


def _fixture_frames():
    ph = photos()
    items = [(name, img, [box]) for name, (img, box) in ph.items()]
    img, box = ph["astronaut"]
    items += [(f"astronaut@{d}deg", *rotated(img, box, d)) for d in (-40, 40)]
    items = [(n, im, b if isinstance(b, list) else [b]) for n, im, b in items]
    frame, boxes = group_three(ph)
    items.append(("group/three-720p", frame, boxes))
    groups = {it.name: it for it in build(with_lfw=True, with_negatives=False)
              if it.name in ("group/six-mixed", "group/twelve-small", "lfw/sheet0")}
    items += [(n, it.image, it.boxes) for n, it in groups.items()]
    return items


@pytest.mark.parametrize("name,image,boxes", _fixture_frames(), ids=lambda v: v if isinstance(v, str) else "")
def test_search_and_refine_find_the_faces_the_pyramid_finds(name, image, boxes):
    det = YuNetDetector()  # min_face 32, as anonymize.py
    big = [b for b in boxes if min(b[2] - b[0], b[3] - b[1]) >= det.min_face]  # labelled at least 32 px
    whole = det.detect_all(image)  # the photo detector (the whole pyramid), whatever the size it draws
    found_whole = match(big, [f.box for f in whole.faces + whole.too_small])[0]
    refined = det.refine(image, [p.box for p in det.search(image)])
    found = match(big, [f.box for f in refined])[0]
    assert found >= found_whole >= len(big) - 1, (name, found, found_whole, len(big))
    for f in refined:  # points from the crop are in the frame's coordinates, inside the box
        left, top, right, bottom = f.box
        assert np.all((f.points[:, 0] > left - 2) & (f.points[:, 0] < right + 2)), name


def test_search_scales():
    y = YuNetDetector()
    assert y.search_scales(720, 1280) == [1.0, 0.5]             # a 32 px face at 32 px
    assert y.search_scales(2160, 3840)[0] == 1.0                # never above the pyramid's top level
    assert YuNetDetector(min_face=16).search_scales(720, 1280)[0] == 1.5
    assert YuNetDetector(min_face=80).search_scales(720, 1280)[0] == 1.0  # never below full size


class _World(FaceDetector):
    """A detector of a made-up video: the frame index is written in pixel (0, 0); ``faces`` says
    where each face is in every frame. ``search`` finds every face of the frame; ``refine`` only
    those whose centre lies inside a box it is given."""

    name = "world"
    can_refine = True
    threshold, nms_iou = 0.5, 0.4

    def __init__(self, faces):
        super().__init__(32)
        self.faces, self.searched, self.refined, self.searched_on_main = faces, [], [], []

    def _at(self, image):
        i = int(image[0, 0, 0])
        return i, [DetectedFace(b, np.float32([[b[0] + 12, b[1] + 14], [b[0] + 28, b[1] + 14],
                                                [b[0] + 20, b[1] + 22], [b[0] + 14, b[1] + 30],
                                                [b[0] + 26, b[1] + 30]]), 0.9) for b in self.faces.get(i, [])]

    def _detect_raw(self, image):
        return self._at(image)[1]

    def search(self, image):
        i, faces = self._at(image)
        self.searched.append(i)
        self.searched_on_main.append(threading.current_thread() is threading.main_thread())
        return faces

    def refine(self, image, boxes, pool=None):
        i, faces = self._at(image)
        self.refined.append(i)
        inside = lambda f, b: b[0] <= (f.box[0] + f.box[2]) / 2 <= b[2] and b[1] <= (f.box[1] + f.box[3]) / 2 <= b[3]  # noqa: E731
        return [f for f in faces if any(inside(f, b) for b in boxes)]


def _frames(n):
    out = []
    for i in range(n):
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, 0, 0] = i
        out.append(Frame(i, i, i / 30, img))
    return out


@pytest.mark.parametrize("threads", [False, True])
def test_tracks_followed_on_crops_and_new_faces_looked_for_backwards(threads):
    a = {i: (100.0 + 2 * i, 50.0, 140.0 + 2 * i, 90.0) for i in range(20)}
    b = {i: (400.0, 200.0, 440.0, 240.0) for i in range(5, 20)}  # appears in frame 5, between searches
    world = {i: [a[i]] + ([b[i]] if i in b else []) for i in range(20)}
    det = _World(world)
    tracker, seen, _ = follow_faces(det, iter(_frames(20)), Fraction(30), VideoOptions(progress=False, threads=threads),
                                    {"detect": 0.0})
    assert seen == 20
    assert sorted(det.searched) == [0, 8, 16, 18]  # every 8th frame, and the last detection frame
    # with threads, every search runs on a worker, the last one too: it starts when the decoder
    # reaches the end of the video, not when the main thread has refined every frame before it
    assert not any(det.searched_on_main) if threads else all(det.searched_on_main)
    assert sorted(set(det.refined)) == list(range(0, 20, 2))  # crops on every detection frame
    assert det.refined[:5] == [0, 8, 6, 4, 2]  # the new faces of the search at 8 followed backwards first
    paths = tracker.paths(20)
    assert [p.key for p in paths] == [0, 1]
    assert paths[0].detected == list(range(0, 20, 2))
    assert paths[1].detected == list(range(6, 20, 2))  # found by the search at 8, then looked for at 6
    assert paths[1].first_frame == 0  # held 0.25 s (8 frames) before its first detection
    # the same tracks as linking the same detections in one go
    dets = {f: [DetectedFace(box, pts, 1.0) for _, box, pts in v]
            for f, v in tracker.detections().items()}
    assert [p.detected for p in build_tracks(dets, 20, max_gap=30, hold=8)] == [p.detected for p in paths]


def test_tracker_takes_frames_in_order():
    t = Tracker(max_gap=4, hold=0)
    t.add(2, [])
    with pytest.raises(ValueError, match="increasing order"):
        t.add(2, [])


def test_reader_converts_only_the_frames_wanted(clip):
    with VideoReader(clip) as r:
        frames = list(r.frames(lambda i: i % 3 == 0))
    assert [f.index for f in frames] == list(range(N))
    assert [f.image is not None for f in frames] == [i % 3 == 0 for i in range(N)]
    assert frames[3].image.shape == (H, W, 3)


def test_prefetch_hands_on_errors_and_stops_early():
    def boom():
        yield 1
        raise RuntimeError("decoder broke")

    it = prefetch(boom(), depth=2)
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="decoder broke"):
        next(it)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = prefetch(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # the producer stops: it is at most depth + 1 items ahead
    assert len(produced) <= 3 + 3
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]


def test_ordered_results_in_submission_order():
    import time
    out = []
    with Ordered(2) as pool:
        for i in range(6):
            out += pool.submit(lambda i: (time.sleep(0.02 * (i % 2)), i)[1], i)
        out += pool.drain()
    assert out == list(range(6))


def test_a_turning_face_is_followed_as_the_whole_frame_search_finds_it():
    """The cameraman (turned 60 degrees, looking down) tilting from -40 to +40 degrees: every
    detection frame on which the whole pyramid finds him, the search and the crops find him too."""
    img, box = scaled(*photos()["cameraman"], 90)
    canvas = np.full((H, W, 3), 110, np.uint8)
    frames, labels = [], []
    for i in range(10):
        im, b = rotated(img, box, -40 + 80 * i / 9)
        oy, ox = (H - im.shape[0]) // 2, (W - im.shape[1]) // 2
        f = canvas.copy()
        f[max(oy, 0):oy + im.shape[0], max(ox, 0):ox + im.shape[1]] = im[max(-oy, 0):H - oy, max(-ox, 0):W - ox]
        frames.append(Frame(i, i, i / 30, f))
        labels.append((b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy))
    det = YuNetDetector()
    whole = {i for i in range(0, 10, 2) if match([labels[i]], [f.box for f in det.detect(frames[i].image)])[0]}
    tracker, _, _ = follow_faces(det, iter(frames), Fraction(30), VideoOptions(progress=False), {"detect": 0.0})
    followed = {i for i, found in tracker.detections().items() if match([labels[i]], [b for _, b, _ in found])[0]}
    assert len(whole) >= 4 and whole <= followed, (whole, followed)
    assert len({k for v in tracker.detections().values() for k, _, _ in v}) == 1  # one track, one person


def test_a_face_cut_by_its_crop_is_looked_for_again_centred():
    frame, boxes = group_three()
    det = YuNetDetector()
    box = boxes[0]
    side = box[2] - box[0]
    off = (box[0] - 1.1 * side, box[1], box[2] - 1.1 * side, box[3])  # expected where it no longer is
    found = det.refine(frame, [off])
    assert match([box], [f.box for f in found]) == (1, 0), [f.box for f in found]
    assert max(box_iou(box, f.box) for f in found) > 0.5  # the whole face, not the part the crop held


def test_refining_on_workers_gives_the_faces_found_in_turn():
    """``refine`` with a pool looks at the boxes' crops side by side: the same faces, in the same
    order, as one box after another, also where a crop cuts a face and it is looked for again."""
    from protect.pipeline import worker_pool
    frame, boxes = group_three()
    det = YuNetDetector()
    side = boxes[0][2] - boxes[0][0]
    off = (boxes[0][0] - 1.1 * side, boxes[0][1], boxes[0][2] - 1.1 * side, boxes[0][3])  # a face cut
    asked = [off] + [tuple(b) for b in boxes[1:]] + [(900.0, 40.0, 980.0, 120.0)]
    in_turn = det.refine(frame, asked)
    calls = []

    class Spy:  # the pool's map, counted
        def __init__(self, pool):
            self.pool = pool

        def map(self, fn, items):
            items = list(items)
            calls.append(len(items))
            return self.pool.map(fn, items)

    with worker_pool(2) as pool:
        side_by_side = det.refine(frame, asked, pool=Spy(pool))
    assert calls == [len(asked), 1]  # the boxes side by side, then the one face cut, looked for again
    assert max(box_iou(boxes[0], f.box) for f in in_turn) > 0.5  # found by looking again, centred
    key = lambda faces: [(f.box, f.points.tolist(), f.score) for f in faces]  # noqa: E731
    assert key(side_by_side) == key(in_turn) and len(in_turn) == 3


def test_parts_of_a_face_are_dropped_small_faces_inside_a_box_kept():
    from protect.video import _inside_others
    whole = DetectedFace((100.0, 100.0, 200.0, 220.0), np.zeros((5, 2), np.float32), 0.9)
    part = DetectedFace((150.0, 105.0, 205.0, 215.0), np.zeros((5, 2), np.float32), 0.7)
    small = DetectedFace((120.0, 120.0, 150.0, 150.0), np.zeros((5, 2), np.float32), 0.8)
    assert _inside_others([part, whole, small]) == [whole, small]


def test_crops_start_on_the_grid_of_every_level():
    from protect.face_detect_yunet import _grid, _on_grid
    # 720p levels 1.5, 1 and 0.5: a crop corner on a multiple of 64 px is on a multiple of YuNet's
    # 32-px cells at each of them, and 1.5 x 64 is a whole number of pixels
    assert _grid([Fraction(3, 2), Fraction(1), Fraction(1, 2)]) == 64
    assert _grid([Fraction(1919, 1279)]) == 0  # odd sizes: no grid, crops resized on their own
    assert _on_grid(100, 300, 1280, 64) == (64, 320) and _on_grid(1100, 1280, 1280, 64) == (1088, 1280)
    frame, boxes = group_three()
    det = YuNetDetector()
    whole = det.detect(frame)
    again = det.refine(frame, [f.box for f in whole])
    gaps = [max(abs(a - b) for a, b in zip(f.box, g.box)) for f in whole for g in again if box_iou(f.box, g.box) > 0.5]
    assert len(gaps) == len(whole) == 3 and max(gaps) <= 3, gaps  # the whole frame's boxes, within 3 px
