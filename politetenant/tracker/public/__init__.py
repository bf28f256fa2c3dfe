"""The public routes, the only ones on the Internet-facing host: ``/o/`` open beacon, ``/t/`` read-time
beacon, ``/c/`` click redirect. Each reads like its steps: verify the token, judge the request,
enqueue the event, answer. Imports ``http`` and the rooms below it.
"""
