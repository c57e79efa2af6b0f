"""The same test images under 10 different passwords: one HTML column per password, rows real,
anonymized, recovered and wrong recovery.

    python main_test_diff_passwds.py RUN_DIR/config.yaml --resume RUN_DIR/checkpoint_latest.pth.tar

Results go to <checkpoint folder>/test_<checkpoint name>/test_web/index.html (a new
test_<checkpoint name>_2, _3... when it exists). The 10 passwords are random (seeded by --seed)
unless --password-file gives 10 lines (passphrases, or codes written code:0x1a2b); they are never
shown or saved. For a run of the authors' original code, pass this project's config/main.yaml (or
config/one_fourth_D_lr_half.yaml) with --data_root.
"""
import argparse
import sys

from results.inference_pages import N_PASSWORDS, diff_passwords, run_script, script_arguments, script_inputs
from utils.config import ScriptHelpFormatter, schema_help


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=ScriptHelpFormatter, epilog=schema_help())
    ap.add_argument("config", help="the config the checkpoint was trained with")
    ap.add_argument("--resume", required=True, help="checkpoint (.pth.tar) to test")
    ap.add_argument("--password-file", default=None,
                    help=f"file of {N_PASSWORDS} passwords, one per line (default: random)")
    script_arguments(ap, own_password=False)
    args = ap.parse_args(argv)

    def go():
        out = diff_passwords(script_inputs(args, args.config, args.resume), args.password_file)
        print(f"wrote {out}/index.html")

    return run_script(go)


if __name__ == "__main__":
    sys.exit(main())
