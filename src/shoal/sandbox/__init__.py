"""Confinement of job code: what a job's processes may reach on the host that runs them.

A job brings its own code (a custom workflow on the server, a training script at a site), and
that code runs as the host's user. These modules keep it from what the host keeps from it: the
kit's keys, the store, other jobs, the policy files (docs/security.md says what each layer
guarantees). ``landlock`` and ``privileges`` speak to the kernel, ``confinement`` decides what
a job may reach and applies it in the job's process, and ``files`` is how the host itself
handles files a job could have written.
"""
