"""The names of the images a password step makes: one name per image for every page, log and report."""

REAL = "real"
NAMES = {"M": "anonymized", "M2": "second anonymization", "R": "recovered",
         "R2": "recovered from the second anonymization", "WR1": "wrong recovery 1", "WR2": "wrong recovery 2"}
# what one training step generates (R2 is only made for the pages), and the columns of the pages
STEP_IMAGES = ("M", "M2", "R", "WR1", "WR2")
TRAINING_STEP_COLUMNS = (REAL, *(NAMES[k] for k in STEP_IMAGES))
VIEW_IMAGES = ("M", "M2", "R", "R2", "WR1", "WR2")
VIEW_COLUMNS = (REAL, *(NAMES[k] for k in VIEW_IMAGES))
