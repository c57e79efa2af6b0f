"""Measure what the method promises -- privacy, recovery, diversity, realism, password strength --
with the simple baselines beside it.

    python evaluate.py --checkpoint CKPT --dataset synthetic --out DIR [--data_root DIR] [--max-images N]

CKPT is a checkpoint of this project (it carries its config) or one of the authors' files (settings
from --config, default config/main.yaml). ``--dataset synthetic`` evaluates on the held-out
identities of the synthetic faces (those of the checkpoint's run, else of config/smoke.yaml),
generated if absent. Writes DIR/metrics.json, DIR/report.md and DIR/index.html (a new DIR_2, DIR_3...
if DIR exists). Fixed seeds: the same command gives the same numbers. Protocol: docs/evaluation.md.
"""
import argparse
import sys

import datasets
from results.inference_pages import run_script
from utils.config import ScriptHelpFormatter, schema_help


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelpFormatter, epilog=schema_help())
    ap.add_argument("--checkpoint", required=True, help="checkpoint file (this project's or the authors')")
    ap.add_argument("--dataset", required=True, choices=datasets.DATASETS, help="test data: its test split")
    ap.add_argument("--out", required=True, help="output folder (never replaced: DIR_2... if it exists)")
    ap.add_argument("--data_root", default=None, help="folder of the datasets (default: the config's)")
    ap.add_argument("--config", default=None,
                    help="settings for checkpoints without their own (default config/main.yaml)")
    ap.add_argument("--max-images", type=int, default=None, help="evaluate N test images (seeded choice)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per batch (results do not depend on it)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--seed", type=int, default=0, help="seed of the image choice and the passwords")
    ap.add_argument("--recogniser", default=None,
                    help="small-recogniser file (default for synthetic data: trained on first use and kept "
                         "beside the data)")
    ap.add_argument("--recogniser-epochs", type=int, default=12, help="epochs when training the small recogniser")
    ap.add_argument("--no-dlib", action="store_true", help="skip dlib's descriptor (the slowest part on a CPU)")
    ap.add_argument("--attack-images", type=int, default=16, help="faces attacked by password guessing (0: none)")
    ap.add_argument("--attack-candidates", type=int, default=256,
                    help="candidate passwords per face (all codes when 2^bits is not more)")
    ap.add_argument("--examples", type=int, default=8, help="example strips on the page")
    ap.add_argument("--fid-weights", default=None, help="Inception weights for FID (not downloaded)")
    args = ap.parse_args(argv)

    def go():
        from metrics.evaluation import Options, run

        out = run(Options(checkpoint=args.checkpoint, dataset=args.dataset, out=args.out, data_root=args.data_root,
                          config=args.config, max_images=args.max_images, batch_size=args.batch_size,
                          device=args.device, seed=args.seed, recogniser=args.recogniser,
                          recogniser_epochs=args.recogniser_epochs, no_dlib=args.no_dlib,
                          attack_images=args.attack_images, attack_candidates=args.attack_candidates,
                          examples=args.examples, fid_weights=args.fid_weights))
        print(f"wrote {out}/metrics.json, report.md and index.html")

    return run_script(go)


if __name__ == "__main__":
    sys.exit(main())
