"""Generative backends (scene, views ``hybrid``/``multiview``) on GPU workers.

Design notes:

* Weights live in model directories under ``SKUFORGE_MODELS__ROOT``, each with its
  ``skuforge-model.yaml`` (``model_dirs``). Nothing is fetched at request time: loading uses
  ``local_files_only=True`` and a missing file is a ``ModelUnavailableError``.
* Every model carries a licence tag (``licences``); a commercial tenant is refused a model
  whose licence forbids commercial use when the plan is built, before anything runs.
* The modules here that only read manifests (``licences``, ``model_dirs``, ``composite``,
  ``guard``) never import torch: the API process plans with them. ``device``, ``cache`` and
  ``runners`` import torch and diffusers lazily, inside functions, on the worker only.
"""
