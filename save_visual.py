"""Strips of test images through a trained checkpoint: original, anonymized, second anonymization,
wrong recovery, recovery (one per image), as HTML and PNG.

    python save_visual.py RUN_DIR/config.yaml --ckpt_name checkpoint_latest.pth.tar --dataset LFW
    python save_visual.py RUN_DIR/config.yaml --ckpt_name checkpoint_e0029_i00000000.pth.tar \\
        --dataset CASIA --inference_full --password-file my_password.txt

Results go to qualitative_results/<run>_<checkpoint>_<dataset>/ (a new _2, _3... folder when it
exists) with index.html, strips/ and info.json. Without --inference_full, one random batch (seeded by
--seed) of the test split; with it, every test image. Passwords are random unless you give yours
(--password-env VAR, --password-file FILE or --password-prompt); they are never shown or saved.

For a run of the authors' original code, pass this project's config/main.yaml (or
config/one_fourth_D_lr_half.yaml) with --data_root, and --ckpt_name as a path to the checkpoint.
"""
import argparse
import sys

from results.inference_pages import run_script, save_visual, script_arguments, script_inputs, user_password
from utils.config import ScriptHelpFormatter, schema_help


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelpFormatter, epilog=schema_help())
    ap.add_argument("config", help="the run's config.yaml (in the run folder)")
    ap.add_argument("--ckpt_name", required=True, help="checkpoint file in the config's folder, or a path")
    ap.add_argument("--inference_full", action="store_true", help="every test image, not one batch")
    ap.add_argument("--out", default=None, help="parent folder of the result folder (default: qualitative_results/)")
    script_arguments(ap, own_password=True)
    args = ap.parse_args(argv)

    def go():
        out = save_visual(script_inputs(args, args.config, args.ckpt_name), full=args.inference_full,
                          password=user_password(args), out_root=args.out)
        print(f"wrote {out}/index.html")

    return run_script(go)


if __name__ == "__main__":
    sys.exit(main())
