"""HTTP routes, one module per resource; all business logic lives in ``service``'s helpers,
``storage`` and ``pipeline``."""
