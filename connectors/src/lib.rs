//! Connectors: one module per citizen service, a client of the hub and reference back offices. They arrive with the hub client.
