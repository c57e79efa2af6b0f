"""Train the face identity transformer.

    python main_train.py config/smoke.yaml                       # the embedded CPU smoke run
    python main_train.py config/main.yaml --data_root /data      # the paper's run (CASIA-WebFace)
    torchrun --nproc_per_node 4 main_train.py config/main.yaml   # one process per GPU
    python main_train.py config/main.yaml --resume checkpoints/main/checkpoint_latest.pth.tar

Any config key below can be given as --key value (or --key=value; a bare --flag sets a bool key to
true; none sets a key that allows it to null) and wins over the YAML file.

Exit status: 0 done; 2 bad input (a config key, the data, a checkpoint; nothing was written);
1 stopped after it began (a loss not finite, with what was saved named; a file that could not be
written); 130 Ctrl-C (a checkpoint is saved first).
"""
import argparse
import os
import sys


def passive_openmp_when_busy(environ=None, busy=None, cores: int | None = None) -> str | None:
    """On a machine that other jobs already keep busy (at least half the cores, utils/machine.py),
    set OMP_WAIT_POLICY=PASSIVE unless the user set a policy; must run before torch is imported. The
    smoke step beside two busy processes on 2 cores took 7.5 s with the runtime's spinning default and
    3.7 s passive, but alone 0.62 s against 1.16 s (bench/oversubscription.py, docs/training_notes.md):
    so only when busy. ``environ`` and ``busy``: os.environ and utils.machine.busy_cores unless given.
    Returns the line for the run's log, or None."""
    from utils.machine import busy_cores

    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ:
        return None
    load = (busy or busy_cores)()
    cores = cores or os.cpu_count() or 1
    if load < cores / 2:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return (f"the machine is busy (other processes keep {load:.1f} of {cores} cores busy): OpenMP threads wait "
            "passively (OMP_WAIT_POLICY=PASSIVE; set OMP_WAIT_POLICY yourself to choose)")


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
    said = passive_openmp_when_busy()
    try:
        from training.trainer import main as train_main  # torch: seconds, in which Ctrl-C is likely
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # said in the run's log once the inputs are checked: bad input stays one line on stderr
    return train_main(argv, notes=[said] if said else [])


if __name__ == "__main__":
    sys.exit(main())
