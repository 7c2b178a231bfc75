//! The dev federation: a PKI and a configuration a newcomer can serve at once.
