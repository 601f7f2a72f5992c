"""Larger building blocks that model-based learners share: the LRUA external memory of MANN
(:mod:`.memory`) and episodes as sequences for the sequence learners (:mod:`.sequence`)."""
