"""Write a five-point landmark file (CASIA/LFW format) for a folder of face images.

    python prepare_data.py FOLDER -o LANDMARKS.txt [--labels-from-subfolders] [--detector hog|cnn]

Lines are ``RELATIVE_PATH [LABEL] x1 y1 ... x5 y5`` (left eye, right eye, nose tip, left and right
mouth corner, in the pixels of each image). Images without a usable face go to LANDMARKS_noface.txt.
An interrupted run resumes when the same command is run again. Details: datasets/prepare_landmarks.py.
"""
from __future__ import annotations

import argparse
import sys

from datasets.prepare_landmarks import PrepareError, make_detector, prepare_landmarks
from utils.config import check_number


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="folder of face images (searched recursively)")
    ap.add_argument("-o", "--output", required=True, help="landmark file to write, e.g. landmarks.txt")
    ap.add_argument("--labels-from-subfolders", action="store_true",
                    help="add an identity label per line: the rank of the image's top-level subfolder (CASIA format)")
    ap.add_argument("--detector", choices=["hog", "cnn"], default="hog",
                    help="dlib HOG (fast, frontal faces; default) or CNN (slower, more poses)")
    ap.add_argument("--min-face", type=float, default=32.0,
                    help="faces smaller than this many pixels count as no face (default 32)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing finished output file")
    args = ap.parse_args(argv)
    try:
        check_number(args.min_face, "--min-face", low=0, error=PrepareError)
        detector, retry = make_detector(args.detector, args.min_face)
        report = prepare_landmarks(args.folder, args.output, labels_from_subfolders=args.labels_from_subfolders,
                                   detector=detector, retry_detector=retry, overwrite=args.overwrite)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 130 if report.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
