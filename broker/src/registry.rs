//! The registry: entities, services and their actions, access rights and topic subscriptions, built from the configuration.
