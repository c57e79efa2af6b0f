"""Anonymize every face in a photo, a folder or a video with a password; recover them with the same one.

    python anonymize.py INPUT -o OUTPUT --checkpoint CKPT [--recover]
                        [--password-env VAR | --password-file FILE] [--per-face] [--preview DIR]

INPUT is a photo, a video (mp4, mov, mkv, webm) or a folder (its tree is mirrored in OUTPUT). The
password is asked for on the terminal unless --password-env or --password-file names where it is;
it is never a command-line argument (``ps`` shows those to every user). A passphrase, or an explicit
code as ``code:0x1a2b``. Recovery takes the same password. A record of the crops goes inside each
PNG, or beside other outputs as OUTPUT.record.json; it holds no password. Details: docs/anonymize.md.

Exit codes: 0 every file done; 1 some files failed (the others are done); 2 nothing could start (bad
arguments, input, output, checkpoint or device; nothing was written); 130 interrupted (Ctrl-C).
The summary goes to stdout; errors, warnings and skipped files to stderr.
"""
from __future__ import annotations

import argparse
import sys


def parse_landmarks(text: str):
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        values = []
    if len(values) != 10:
        raise argparse.ArgumentTypeError("give 10 numbers: x1,y1,...,x5,y5 normalised to the frame (x/(W/2)-1)")
    return values


# The numeric options and their ranges (utils/config.py's check_number): checked before anything else.
NUMBERS = (("upsample", dict(low=0, high=4, integer=True)), ("min_face", dict(low=0)),
           ("detect_max_side", dict(low=32, integer=True)), ("detect_every", dict(low=1, integer=True)),
           ("search_every", dict(low=1, integer=True)),
           ("max_gap", dict(low=0)), ("batch_size", dict(low=1, integer=True)),
           ("max_megapixels", dict(low=0, low_open=True)))


def check_numbers(args: argparse.Namespace) -> None:
    from utils.config import check_number

    for key, limits in NUMBERS:
        if getattr(args, key) is not None:
            check_number(getattr(args, key), "--" + key.replace("_", "-"), **limits)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="photo, video or folder")
    ap.add_argument("-o", "--output", required=True, help="output file (for a photo/video) or folder")
    ap.add_argument("--checkpoint", required=True, help="generator checkpoint (this project's or the authors')")
    ap.add_argument("--recover", action="store_true", help="recover the faces of an anonymized input")
    pw = ap.add_mutually_exclusive_group()
    pw.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    pw.add_argument("--password-file", metavar="FILE", help="read the password from the first line of this file")
    ap.add_argument("--per-face", action="store_true",
                    help="give every face (every tracked person in a video) its own code, derived from the password")
    ap.add_argument("--record", metavar="FILE", help="recovery of one file: its record, if not inside or beside it")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ap.add_argument("--preview", metavar="DIR",
                    help="also write every output here (same names), with a box around each face that was transformed")
    ap.add_argument("--blend", choices=["crop", "face"], default="crop",
                    help="replace each face's whole crop (default: closest recovery) or only a feathered ellipse over "
                         "the face (fewer pixels change)")
    ap.add_argument("--lossless", action="store_true",
                    help="write photos as PNG and videos with lossless x264 (crf 0), for the closest recovery")
    det = ap.add_argument_group("face detection")
    det.add_argument("--detector", choices=["yunet", "hog", "cnn"], default="yunet",
                     help="yunet (default: finds the most faces: turned, tilted, small, dark), dlib hog (fastest, "
                          "frontal faces from about 80 px) or dlib cnn (slow)")
    det.add_argument("--upsample", type=int, default=0,
                     help="extra image doublings before detection (4x slower each): hog finds faces from about 80 px "
                          "at 0, 40 px at 1; yunet enlarges small images by itself and finds faces from about 12 px")
    det.add_argument("--min-face", type=float, default=32.0, help="faces smaller than this (px) are left as they are")
    det.add_argument("--detect-max-side", type=int, default=None,
                     help="detect on a copy downscaled to this longer side (faster on big frames)")
    det.add_argument("--mean-landmarks", type=parse_landmarks, default=None, metavar="X1,Y1,...,X5,Y5",
                     help="framing of the generator's training faces, normalised x/(W/2)-1 (overrides the "
                          "checkpoint's or the CASIA default); write --mean-landmarks=-0.165,-0.101,...")
    vid = ap.add_argument_group("video")
    vid.add_argument("--detect-every", type=int, default=2,
                     help="detect faces on every N-th frame; tracks fill the rest (default 2)")
    vid.add_argument("--search-every", type=int, default=8,
                     help="yunet: look for new faces over the whole frame on every N-th frame (default 8); on the "
                          "detection frames in between, tracked faces are found again on crops around them")
    vid.add_argument("--max-gap", type=float, default=1.0, help="longest detection gap bridged in a track (seconds)")
    run = ap.add_argument_group("running")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--fp32", action="store_true", help="run the generator in float32 (default: bf16 where fast)")
    run.add_argument("--batch-size", type=int, default=4,
                     help="faces per generator call (4 is fastest for the paper's generator on a 2-core CPU)")
    run.add_argument("--max-megapixels", type=float, default=100.0, help="refuse larger photos (decompression bombs)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models.passwords import read_passphrase
    from protect.face_detect import make_detector
    from protect.protector import FacePasswords, FaceProtector
    from protect.run import RunError, RunOptions, plan_outputs, run
    from protect.video import VideoOptions
    from training.checkpoint import CheckpointError, InferenceModel
    from training.distributed import fast_bf16, pick_device

    try:
        check_numbers(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        device = pick_device(args.device)
    except (RuntimeError, ValueError) as e:
        print(f"error: --device: {e}", file=sys.stderr)
        return 2
    opts = RunOptions(recover=args.recover, overwrite=args.overwrite, lossless=args.lossless,
                      max_pixels=max(1, int(args.max_megapixels * 1e6)), record=args.record, progress=not args.quiet,
                      preview=args.preview,
                      video=VideoOptions(detect_every=args.detect_every, search_every=args.search_every,
                                         max_gap_s=args.max_gap, progress=not args.quiet))
    try:
        plan_outputs(args.input, args.output, opts)  # refuse bad paths before asking for a password
        model = InferenceModel(args.checkpoint, device)
        detector = make_detector(args.detector, upsample=args.upsample, min_face=args.min_face,
                                 max_side=args.detect_max_side)
        protector = FaceProtector(model, detector, mean_landmarks=args.mean_landmarks,
                           amp=not args.fp32 and fast_bf16(device), batch_size=args.batch_size,
                           blend=args.blend)
        text = read_passphrase(env=args.password_env, file=args.password_file,
                               confirm=not args.recover and not (args.password_env or args.password_file))
        passwords = FacePasswords.from_text(text, model.passwd_length, per_face=args.per_face)
        if not args.per_face:
            passwords.for_key(0)  # a malformed code:... is refused here, before any file
        del text
        if model.trained_on == "synthetic":  # said once every input is checked: bad input stays one line
            print(f"warning: {args.checkpoint} was trained on synthetic faces (its config says dataset: "
                  "synthetic); on photos of real people it makes blotches, not faces: use a model trained on "
                  "real faces (pretrained_models/README.md)", file=sys.stderr)
        summary = run(protector, args.input, args.output, passwords, opts)
    except (RunError, CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: files written so far are complete; the one in progress was not written", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
