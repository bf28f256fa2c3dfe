"""The dashboard under ``/ui/``: server-rendered HTML pages for analysts and privacy officers.

It owns the session cookie (sign-in with an API token, CSRF, sign-out), the page shell and its one
stylesheet, and pages that show the same reports and privacy operations as the API, computed by the
same code in ``reports`` and ``privacy`` with the same thresholds; it adds no figures of its own.
No JavaScript, nothing from another origin.
"""
