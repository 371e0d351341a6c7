"""metalearn: the library behind the meta-learning study's notebooks.

Modules: ``paths`` (every path, from one root), ``params`` (checking injected
parameters), ``run`` (the DVC stage runner), ``tasks`` (task distributions),
``models`` (body/head networks), ``core`` (MAML / FOMAML / ANIL inner loop,
Reptile update), ``training`` (resumable runs), ``evaluation`` (learning curves,
confidence intervals), ``theory`` (closed forms the core is checked against),
``results`` and ``papers`` (the results table and the papers' numbers).
"""
__version__ = "0.1.0"
