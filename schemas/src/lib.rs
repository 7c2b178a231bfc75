//! Payload types of every snodo service, with their JSON Schemas and XSDs: they arrive with the first services.
