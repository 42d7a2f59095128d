"""Metrics: pure functions on tensors, and the metric objects (``genlab.metrics.base.Metric``) that
``conf/callbacks/evaluator.yaml`` lists, one module per family:

- ``reconstruction``: PCA, squared errors, Reconstruction (with the PCA baseline), Novelty (AUROC);
- ``codes``: linear-probe and k-NN accuracy (Probes), active units (CodeUsage);
- ``factors``: R² read-outs and MIG against known generating factors (Factors);
- ``likelihood``: every bound on −log p(x) a model reports, by its own name and unit (Likelihood);
- ``sample_quality`` (functions) and ``sampling`` (SampleQuality, ModeCoverage, SampleClasses);
- ``translation``: cycle errors and translation accuracy (Translation);
- ``classifier``: the dataset classifier and the one cache every trained classifier goes through.
"""
