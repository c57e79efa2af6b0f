"""Training: the loop (trainer), its checkpoints, device and multi-GPU set-up, the face recogniser's
pre-training, and the held-out evaluation a run ends with (heldout).

Modules: trainer (run folder, logs, the epoch loop, result pages), checkpoint (the checkpoint format
and the generator for inference), distributed (devices, torchrun, bf16), fr_pretrain (SphereFace
stand-in), heldout (recovery, password and identity measures; the seven views of the pages).
"""
