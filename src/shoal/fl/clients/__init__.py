"""Built-in client programs a job can run with ``{"module": "shoal.fl.clients.<name>"}``.

They are part of shoal, so they run even on sites whose policy forbids a job's custom code.
"""
