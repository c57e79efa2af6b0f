"""Measurements of what the method promises (privacy, recovery, diversity, realism, password
strength), with the baselines users pick instead. ``evaluate.py`` parses arguments and calls
``metrics.evaluation.run``; docs/evaluation.md defines every figure.

Modules: quality (PSNR, SSIM, MS-SSIM, JPEG round trip), baselines (blur, pixelation, solid mask),
recognisers (dlib's descriptor, the checkpoint's SphereFace, a small recogniser of the synthetic
training identities), attack (password guessing without the original), evaluation (the run),
report (metrics.json, report.md, index.html).
"""
