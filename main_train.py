"""Train the face identity transformer.

    python main_train.py config/smoke.yaml                       # the embedded CPU smoke run
    python main_train.py config/main.yaml --data_root /data      # the paper's run (CASIA-WebFace)
    torchrun --nproc_per_node 4 main_train.py config/main.yaml   # one process per GPU
    python main_train.py config/main.yaml --resume checkpoints/main/checkpoint_latest.pth.tar

Any config key can be given as --key value and wins over the YAML file (see utils/config.py).

Exit status: 0 done; 2 bad input (a config key, the data, a checkpoint; nothing was written);
1 stopped after it began (a loss not finite, with what was saved named; a file that could not be
written); 130 Ctrl-C (a checkpoint is saved first).
"""
import sys

from training.trainer import main

if __name__ == "__main__":
    sys.exit(main())
