"""The HTTP API (``docs/api.md``): the read models and the operator's actions over HTTP.

``create_app(settings)`` in ``api.app`` builds it; ``routes/`` holds one router per
resource; ``auth`` the tokens and roles, ``audit`` who read or changed what, ``operator``
the actions published as events, ``problems`` the errors. It reads the read models and
the log and writes only operator events, its tokens and its audit. ``static/`` is the
dashboard it serves (``docs/dashboard.md``); ``serve`` is ``aisle serve``, which runs it
with the projections and the engine.
"""
