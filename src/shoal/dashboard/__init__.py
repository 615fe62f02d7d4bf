"""``shoal dashboard``: a local web page of the federation, seen as one admin sees it.

The page talks only to this process (``app``), which relays to the shoal server with the
admin's own startup kit (``relay``): the server decides what the admin may see and do. Who may
talk to this process is decided by ``guard`` (a one-time token, a session cookie, CSRF checks).
Nothing here is imported by any other CLI command (decisions/0032).
"""
