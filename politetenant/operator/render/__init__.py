"""Tenant spec -> every child object: Jinja2 templates (``templates/``) with values computed in Python,
region placement, pod hardening, NetworkPolicies and the wiring of env, volumes and Secrets. Pure
and deterministic, so an unchanged tenant renders byte-identical objects. Imports ``model`` only.
"""
