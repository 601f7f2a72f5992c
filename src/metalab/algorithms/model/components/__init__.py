"""Larger building blocks that model-based learners share: the LRUA external memory of MANN
(:mod:`.memory`), episodes as sequences for the sequence learners (:mod:`.sequence`) and the parts
both neural processes are made of (:mod:`.processes`)."""
