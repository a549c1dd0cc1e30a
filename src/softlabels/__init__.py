"""softlabels: learning with soft (probabilistic) labels.

Building blocks: :mod:`softlabels.labels` (label operations), :mod:`softlabels.store`
(compact label stores), :mod:`softlabels.losses`, :mod:`softlabels.metrics`,
:mod:`softlabels.data`, :mod:`softlabels.models` and :mod:`softlabels.engine`.
"""

__version__ = "0.1.0"
