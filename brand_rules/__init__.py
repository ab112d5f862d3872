"""Brand rules and marketplace presets (schema, checks, YAML presets).

Imports nothing else from skuforge. The rule schema and checks arrive with the validator
(the ``validate`` stage); packshot slots already name the preset they are made for.
"""
