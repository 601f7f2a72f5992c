"""Larger building blocks that metric-based learners share: closed-form classifier heads fitted on
support embeddings (:mod:`.heads`) and same/different pairs for verification training (:mod:`.pairs`)."""
