//! Making releases and checking them: `package`, `verify`, `kubernetes`, `push-image`, and what a
//! release is made of (archive, gzip, manifest, checksums, versions, OCI image, the `dist/` folder).

pub mod archive;
pub mod checksum;
pub mod dist;
pub mod gzip;
pub mod image;
pub mod kubernetes;
pub mod manifest;
pub mod package;
pub mod payload_files;
pub mod provenance;
pub mod push_image;
pub mod rebuild;
pub mod release_version;
pub mod sbom;
pub mod signature;
pub mod verify;
