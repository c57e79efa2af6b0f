"""Train the face identity transformer.

    python main_train.py config/smoke.yaml                       # the embedded CPU smoke run
    python main_train.py config/main.yaml --data_root /data      # the paper's run (CASIA-WebFace)
    torchrun --nproc_per_node 4 main_train.py config/main.yaml   # one process per GPU
    python main_train.py config/main.yaml --resume checkpoints/main/checkpoint_latest.pth.tar

Any config key below can be given as --key value (or --key=value; a bare --flag sets a bool key to
true; none sets a key that allows it to null) and wins over the YAML file.
"""
import argparse
import sys


def help_parser() -> argparse.ArgumentParser:
    """The command line as --help shows it: the config file, then every config key by section."""
    from utils.config import add_schema_arguments

    ap = argparse.ArgumentParser(prog="main_train.py", usage="%(prog)s CONFIG.yaml [--key value ...]",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="YAML config file (config/smoke.yaml, config/main.yaml, ...)")
    add_schema_arguments(ap, "config keys: {section}")
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        help_parser().print_usage(sys.stderr)
        print("main_train.py: error: the config file is required (--help lists every key)", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        help_parser().print_help()
        return 0
    from training.trainer import main as train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
