"""The HTTP routes, one module per resource; :mod:`service.app` includes them all."""
