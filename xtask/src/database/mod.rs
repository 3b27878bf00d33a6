//! PostgreSQL: `backup`, `restore` (with its guard), and the client tools they drive.

pub mod backup;
pub mod postgres;
pub mod predeploy;
pub mod restore;
pub mod restore_guard;
