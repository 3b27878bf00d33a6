//! PostgreSQL: `backup`, `restore` (with its guard), `archive` (continuous archiving and
//! point-in-time restore through pgBackRest), and the tools they drive.

pub mod archive;
pub mod backup;
pub mod pgbackrest;
pub mod postgres;
pub mod predeploy;
pub mod restore;
pub mod restore_guard;
