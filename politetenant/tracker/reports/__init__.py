"""Reports: raw tallies read from storage, shaped into the API's JSON and CSV with the
minimum-segment rule applied in one place (``thresholds``). Imports ``privacy`` (reading personal
rows is audited), ``http`` and below.
"""
