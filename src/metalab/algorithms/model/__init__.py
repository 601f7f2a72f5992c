"""Model-based (black-box) meta-learners: a network reads the task's examples and predicts directly.

One algorithm per module (registered name in brackets):

- ``mann.py``: Memory-Augmented Neural Network, Santoro et al. 2016 (``mann``)
- ``metanet.py``: Meta Networks, Munkhdalai & Yu 2017 (``metanet``)
- ``snail.py``: SNAIL, Mishra et al. 2018 (``snail``)
- ``hypernet.py``: a hypernetwork that generates the classifier head (``hypernet``)
- ``blackbox.py``: an LSTM that reads the support sequence, then the query (``blackbox``)
- ``cnp_classifier.py``: conditional neural process for classification, Garnelo et al. 2018a (``cnp-classifier``)
- ``cnp.py``: conditional neural process for regression, Garnelo et al. 2018a (``cnp``)
- ``np.py``: latent-variable neural process for regression, Garnelo et al. 2018b (``np``)

``base.py`` holds what the classifiers share (:class:`~metalab.algorithms.model.base.EpisodicClassifier`),
``components/`` the larger building blocks (LRUA memory, episodes as sequences, neural-process parts).
"""
