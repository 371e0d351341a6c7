"""metalearn: the library behind the meta-learning study's notebooks.

Pipeline: ``paths`` (every path, from one root), ``params`` (checking injected parameters),
``run`` (the DVC stage runner), ``store`` (results that outlive a re-execution), ``hardware``.
Data: ``datasets`` (Omniglot, MiniImageNet, episodes), ``tasks`` (sinusoid task families).
Models: ``models``. Core: ``core`` (MAML / FOMAML / ANIL inner loop, Reptile update),
``batched`` (a meta-batch's tasks in one set of operator calls), ``training`` (resumable runs),
``distributed`` (data-parallel meta-training over ranks), ``evaluation`` (learning curves, confidence intervals),
``theory`` (closed forms the core is checked against). Runs: ``fewshot`` (image runs),
``sine`` (M-sine's multi-task baselines and tuned fine-tuning), ``regimes`` (training without an inner loop), ``rl`` and ``cheetah`` (meta-RL). Analyses:
``reuse`` (feature reuse), ``similarity`` (CCA / CKA). Presentation: ``accuracy`` and ``seeds``
(image runs and runs over seeds as the reports show them), ``report``, ``results``, ``papers``,
``claims`` (verdicts on the papers' claims: a tested rule over the results), ``site`` (the reports
as a static site that opens offline).
Bench: ``benchmark``. What computes never imports what presents (tests/test_pipeline.py).
"""
__version__ = "0.1.0"
