"""The operator at run time: thin kopf handlers and the operator's own kopf settings, the reconcile
they call (render -> apply -> status), deletion (legal hold, Retain, Delete), when to look again,
and Prometheus metrics. Imports every room below it.
"""
