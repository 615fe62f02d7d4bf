"""The runtime of job processes: the fork server that launches them confined
(``launcher``) and the controller's entry point a server-side job process runs
(``controller``)."""
