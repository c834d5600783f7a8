"""The read-only status page on the [metrics] listener: an overview, one page per set, a search, a stylesheet.

``routes.py`` is its route table (a new page is one function and one line there), ``render.py`` the Jinja2
templates (autoescaped: every name, anomaly and reason is text, never markup), ``auth.py`` who may read it."""
