"""The names of the images a password step makes: one name per image for every page, log and report."""

REAL = "real"
NAMES = {"M": "anonymized", "M2": "second anonymization", "R": "recovered",
         "R2": "recovered from the second anonymization", "WR1": "wrong recovery 1", "WR2": "wrong recovery 2"}
# what one training step generates (R2 is only made for the pages), and the columns of the pages
STEP_IMAGES = ("M", "M2", "R", "WR1", "WR2")
TRAINING_STEP_COLUMNS = (REAL, *(NAMES[k] for k in STEP_IMAGES))
VIEW_IMAGES = ("M", "M2", "R", "R2", "WR1", "WR2")
VIEW_COLUMNS = (REAL, *(NAMES[k] for k in VIEW_IMAGES))
# What each column of the result pages shows (I the input, p the anonymizing password, p2 another
# one, ~p p's inverse, w1, w2 wrong passwords; the passwords themselves are never shown).
COLUMN_LEGEND = {
    REAL: "the input face I",
    NAMES["M"]: "G(I, p): I anonymized with a password p",
    NAMES["M2"]: "G(I, p2): I anonymized with another password p2",
    NAMES["R"]: "G(anonymized, ~p): recovered with the right password (p's inverse); should look like I",
    NAMES["R2"]: "G(second anonymization, ~p2): recovered with p2's inverse; should look like I",
    NAMES["WR1"]: "G(anonymized, w1): 'recovered' with a wrong password; should be yet another face",
    NAMES["WR2"]: "G(anonymized, w2): with a second wrong password; should differ from wrong recovery 1",
}
