//! Making releases and checking them: `package`, `verify`, `kubernetes`, `push-image`, and what a
//! release is made of (archive, gzip, manifest, checksums, SHA256SUMS, versions, OCI image, the
//! payloads as they ship, the `dist/` folder).

pub mod archive;
pub mod checksum;
pub mod dist;
pub mod gzip;
pub mod image;
pub mod kubernetes;
pub mod manifest;
pub mod package;
pub mod payload;
pub mod payload_files;
pub mod provenance;
pub mod push_image;
pub mod rebuild;
pub mod release_version;
pub mod sbom;
pub mod signature;
pub mod sums;
pub mod verify;
