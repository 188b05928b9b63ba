"""Evaluate existing LLM judges and reward models against gold preferences: read their verdicts
(:mod:`prefpred.judges.io`), score them (:mod:`prefpred.judges.evaluate`), turn them into
calibrated probabilities (:mod:`prefpred.judges.calibrate`) and report (``prefpred
evaluate-judge``)."""
