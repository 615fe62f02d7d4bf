"""Privacy: what a site's result is made private with (clipping, noise, filters), the
accountant of what a job spent, central DP on the server, and secure aggregation's cryptography
and its site side."""
