"""``kubectl polite``: rotate-keys, legal-hold on|off, status. The plug-in only asks (an annotation, a
merge patch of the user's own field) and reads; the operator acts. Imports ``model`` and ``kube``.
"""
