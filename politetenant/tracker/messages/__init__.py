"""Registering a message: the API's wire models, the tracking mode, HTML rewriting (beacons and
tracked links), readability, and the sealed rows and tokens stored. Imports ``http`` and below.
"""
