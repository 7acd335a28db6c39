//! The typed daemon client (to come).
