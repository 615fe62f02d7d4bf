"""What crosses a process boundary: statuses, routes, messages, model framing, archives."""
