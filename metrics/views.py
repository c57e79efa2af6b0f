"""The names of the images the evaluation measures, in the order of its tables (one place for all)."""
from models.views import NAMES, STEP_IMAGES

ORIGINAL = "original"
JPEG_QUALITIES = (95, 75)  # recovery from an anonymized face saved as JPEG at these qualities
SAVED_JPEG = 95            # every privacy figure is also given for an anonymized face saved so

G_VIEWS = ("anonymized", "second anonymization", "recovered",
           *(f"recovered (M as JPEG q{q})" for q in JPEG_QUALITIES),
           "wrong recovery 1", "wrong recovery 2",
           f"anonymized (JPEG q{SAVED_JPEG})", f"wrong recovery 1 (M as JPEG q{SAVED_JPEG})",
           f"wrong recovery 2 (M as JPEG q{SAVED_JPEG})")
DIVERSITY_PAIRS = (("anonymized", "second anonymization"), ("wrong recovery 1", "wrong recovery 2"),
                   (f"wrong recovery 1 (M as JPEG q{SAVED_JPEG})", f"wrong recovery 2 (M as JPEG q{SAVED_JPEG})"))
DETECTION_VIEWS = (ORIGINAL, "anonymized", "recovered", "wrong recovery 1")
EXAMPLE_VIEWS = (ORIGINAL, *(NAMES[k] for k in STEP_IMAGES))  # the original, then what a training step makes
