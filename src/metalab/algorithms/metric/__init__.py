"""Metric-based (non-parametric) meta-learners: embed the support and the queries, compare them.

One algorithm per module (registered name in brackets):

- ``protonet.py``: Prototypical Networks, Snell et al. 2017 (``protonet``)
- ``matching.py``: Matching Networks, Vinyals et al. 2016 (``matching``)
- ``relation.py``: Relation Network, Sung et al. 2018 (``relation``)
- ``siamese.py``: Siamese network, Koch et al. 2015 (``siamese``)
- ``gnn.py``: few-shot graph neural network, Garcia & Bruna 2018 (``gnn``)
- ``metaoptnet.py``: MetaOptNet, SVM head, Lee et al. 2019 (``metaoptnet``)
- ``r2d2.py``: R2-D2, ridge-regression head, Bertinetto et al. 2019 (``r2d2``)
- ``baseline.py``: Baseline / RFS, Chen et al. 2019, Tian et al. 2020 (``baseline``)
- ``baselinepp.py``: Baseline++, cosine classifier, Chen et al. 2019 (``baselinepp``)

``base.py`` holds what they share (:class:`~metalab.algorithms.metric.base.EpisodicMetricLearner`),
``components/`` the larger building blocks (closed-form heads, verification pairs).
"""
