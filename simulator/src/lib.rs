//! The simulator: the Piedmont federation in motion. It arrives once the hub and the connectors run.
