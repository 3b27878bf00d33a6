//! Making releases and checking them: `package`, `verify`, and what a release is made of
//! (archive, gzip, manifest, checksums, versions, the `dist/` folder).

pub mod archive;
pub mod checksum;
pub mod dist;
pub mod gzip;
pub mod manifest;
pub mod package;
pub mod payload_files;
pub mod provenance;
pub mod rebuild;
pub mod release_version;
pub mod sbom;
pub mod signature;
pub mod verify;
