"""Neural architecture search with meta-learning: the DARTS search space, DARTS, warm-started DARTS, MetaNAS.

``operations`` (the candidate operations and the mixed operation), ``space`` (the cells, the one-shot network
and the derived network), ``genotype`` (the discrete architecture, its JSON form, the discretisation),
``darts`` (the first- and second-order architecture gradient), ``tasks`` (supervised tasks to search on),
``search`` (a search run: the bilevel alternation, warm start, retraining), ``plots`` (cell graphs, alpha over
time) and ``cli`` (``metalab nas ...``). MetaNAS, a meta-learner, is ``metalab.algorithms.gradient.metanas``.
"""
