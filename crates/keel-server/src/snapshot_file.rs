//! The byte format of a snapshot as the Maintenance Snapshot RPC streams it and `etcdctl
//! snapshot save` stores it: keel's state export (checksummed chunks) in a container that
//! carries etcd's end-of-stream integrity check.
//!
//! ```text
//! "KEELSNAP" | version: u8 = 1 | { len: u32 BE (> 0) | chunk: len bytes }* | 0u32
//!          | zero padding up to a multiple of 512 bytes | SHA-256 of every byte before it
//! ```
//!
//! Why the padding and the trailing digest: etcd's snapshot stream is a bolt database (a
//! multiple of its 512-byte-aligned pages) followed by its SHA-256, and etcdctl refuses a
//! download whose length is not `512·k + 32` ("sha256 checksum not found"). Keeping that shape
//! lets etcdctl save keel snapshots unchanged, and the digest protects the file end to end.
//! Deviation from etcd: the content is keel's export, not a bolt file (etcdutl cannot read it).

use sha2::{Digest, Sha256};

/// The file's magic bytes.
pub const MAGIC: &[u8; 8] = b"KEELSNAP";
/// The format version written.
pub const VERSION: u8 = 1;
/// Alignment of the content before the digest (etcd's page-aligned bolt file).
pub const ALIGN_BYTES: usize = 512;
/// Length of the trailing digest.
pub const DIGEST_BYTES: usize = 32;

/// Why a snapshot file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// The length is not `512·k + 32`: truncated or not a snapshot.
    #[error("snapshot: sha256 checksum not found [bytes: {len_bytes}]")]
    NoChecksum {
        /// The file's length.
        len_bytes: usize,
    },
    /// The digest does not match the content.
    #[error("snapshot: sha256 checksum mismatch (file corrupted)")]
    ChecksumMismatch,
    /// A chunk of the export does not fit the format's 32-bit length field.
    #[error("snapshot: chunk of {len_bytes} bytes exceeds the format's 4 GiB chunk limit")]
    ChunkTooLarge {
        /// The chunk's length.
        len_bytes: usize,
    },
    /// The content is not a keel snapshot of a version this build reads.
    #[error("snapshot: {detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
}

/// Builds the stream piece by piece (header, chunks, trailer) while hashing it.
///
/// # Examples
/// ```
/// use keel_server::snapshot_file::{decode, SnapshotEncoder};
/// let mut enc = SnapshotEncoder::new();
/// let mut file = enc.header();
/// file.extend(enc.chunk(b"first")?);
/// file.extend(enc.chunk(b"second")?);
/// file.extend(enc.finish());
/// assert_eq!(file.len() % 512, 32);
/// assert_eq!(decode(&file)?, vec![b"first".to_vec(), b"second".to_vec()]);
/// # Ok::<(), keel_server::snapshot_file::SnapshotFileError>(())
/// ```
#[derive(Debug, Default)]
pub struct SnapshotEncoder {
    hasher: Sha256,
    written_bytes: usize,
}

impl SnapshotEncoder {
    /// A new stream.
    pub fn new() -> Self {
        SnapshotEncoder::default()
    }

    fn emit(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        self.hasher.update(&bytes);
        self.written_bytes += bytes.len();
        bytes
    }

    /// The magic and version.
    pub fn header(&mut self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(VERSION);
        self.emit(out)
    }

    /// One chunk of the export, framed. An empty chunk is skipped (0 ends the chunks).
    ///
    /// # Errors
    /// [`SnapshotFileError::ChunkTooLarge`] when the chunk does not fit a 32-bit length (the
    /// stream written so far is unchanged).
    pub fn chunk(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SnapshotFileError> {
        if chunk.is_empty() {
            return Ok(Vec::new());
        }
        let len = u32::try_from(chunk.len()).map_err(|_| SnapshotFileError::ChunkTooLarge {
            len_bytes: chunk.len(),
        })?;
        let mut out = Vec::with_capacity(chunk.len() + 4);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(chunk);
        Ok(self.emit(out))
    }

    /// The end marker, the padding and the digest.
    pub fn finish(mut self) -> Vec<u8> {
        let mut out = 0u32.to_be_bytes().to_vec();
        let unaligned = (self.written_bytes + out.len()) % ALIGN_BYTES;
        if unaligned != 0 {
            out.resize(out.len() + ALIGN_BYTES - unaligned, 0);
        }
        let mut out = self.emit(out);
        out.extend_from_slice(&self.hasher.finalize());
        out
    }
}

fn malformed(detail: impl Into<String>) -> SnapshotFileError {
    SnapshotFileError::Malformed {
        detail: detail.into(),
    }
}

/// Check a whole snapshot file and return its export chunks.
///
/// # Errors
/// [`SnapshotFileError`]: wrong length (truncated), digest mismatch, bad magic or version,
/// bad framing or non-zero padding.
pub fn decode(file: &[u8]) -> Result<Vec<Vec<u8>>, SnapshotFileError> {
    let len_bytes = file.len();
    if len_bytes < DIGEST_BYTES + ALIGN_BYTES || len_bytes % ALIGN_BYTES != DIGEST_BYTES {
        return Err(SnapshotFileError::NoChecksum { len_bytes });
    }
    let (content, digest) = file.split_at(len_bytes - DIGEST_BYTES);
    if Sha256::digest(content).as_slice() != digest {
        return Err(SnapshotFileError::ChecksumMismatch);
    }
    let rest = content
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| malformed("not a keel snapshot (bad magic)"))?;
    let (version, mut rest) = rest
        .split_first()
        .ok_or_else(|| malformed("missing version"))?;
    if *version != VERSION {
        return Err(malformed(format!("unsupported format version {version}")));
    }
    let mut chunks = Vec::new();
    loop {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed("truncated chunk length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if len == 0 {
            if after.iter().any(|b| *b != 0) {
                return Err(malformed("non-zero padding"));
            }
            return Ok(chunks);
        }
        if after.len() < len {
            return Err(malformed("truncated chunk"));
        }
        let (chunk, after) = after.split_at(len);
        chunks.push(chunk.to_vec());
        rest = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut enc = SnapshotEncoder::new();
        let mut out = enc.header();
        for c in chunks {
            out.extend(enc.chunk(c).expect("test chunks are small"));
        }
        out.extend(enc.finish());
        out
    }

    proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        #[test]
        fn round_trip_and_etcd_shape(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 1..700), 0..6)) {
            let file = encode(&chunks);
            prop_assert_eq!(file.len() % ALIGN_BYTES, DIGEST_BYTES);
            prop_assert_eq!(decode(&file).unwrap(), chunks);
        }

        #[test]
        fn any_flipped_byte_or_truncation_is_refused(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..4),
            at in any::<prop::sample::Index>(),
            cut in 1usize..600,
        ) {
            let file = encode(&chunks);
            let mut bad = file.clone();
            let i = at.index(bad.len());
            bad[i] ^= 0x01;
            prop_assert!(decode(&bad).is_err());
            let cut = cut.min(file.len());
            prop_assert!(decode(&file[..file.len() - cut]).is_err());
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            decode(&[0; 10]).unwrap_err().to_string(),
            "snapshot: sha256 checksum not found [bytes: 10]"
        );
        let mut file = encode(&[b"x".to_vec()]);
        let n = file.len();
        file[n - 1] ^= 0xff;
        assert_eq!(decode(&file), Err(SnapshotFileError::ChecksumMismatch));
    }
}
