"""What a run and a checkpoint look like to a person: static HTML pages (html), the loss plot
(loss_plot), live visdom curves and images (visualizer), and the pages of save_visual.py and
main_test_diff_passwds.py (inference_pages).
"""
