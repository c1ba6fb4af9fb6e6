//! `keel snapshot save | status | restore`: etcdctl's `snapshot save` and etcdutl's
//! `snapshot status` and `snapshot restore`, for keel's snapshot files
//! ([`crate::snapshot_file`]).
//!
//! A restore writes a new data directory for one member of a **new** cluster: the keyspace
//! (history and revision) and the leases of the snapshot, none of the source's membership.
//! Restore every member of the new cluster from the same file with its own `--name` and
//! `--initial-advertise-peer-urls` and the same `--initial-cluster` and
//! `--initial-cluster-token`, then start each with those flags and
//! `--initial-cluster-state new`. Deviation from etcdutl: keel reads the membership from those
//! start flags (etcdutl writes it into the restored directory, so etcd starts without them).

use crate::pb::etcdserverpb::{maintenance_client::MaintenanceClient, SnapshotRequest};
use crate::server::DB_DIR;
use crate::snapshot_file;
use clap::Subcommand;
use keel_membership::{BootstrapConfig, BootstrapFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `keel snapshot ...`.
#[derive(Clone, Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a member's snapshot (Maintenance Snapshot RPC) into FILE; the file is checked
    /// end to end (SHA-256) before it replaces FILE.
    Save {
        /// Where to write the snapshot.
        file: PathBuf,
        /// The member to take the snapshot from (the first of a comma-separated list).
        #[arg(long, default_value = "127.0.0.1:2379")]
        endpoints: String,
        /// Longest the whole download may take, in seconds.
        #[arg(long, default_value_t = 300)]
        command_timeout_secs: u64,
    },
    /// Print what FILE holds: HashKV hash, revision, total keys, file size.
    Status {
        /// The snapshot file.
        file: PathBuf,
        /// Output format: simple, table or json.
        #[arg(long, short = 'w', default_value = "simple")]
        write_out: String,
    },
    /// Restore FILE into a new data directory for a member of a new cluster.
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// This member's name.
        #[arg(long, default_value = "default")]
        name: String,
        /// The data directory to create (default: `<name>.etcd`); must not hold data.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The new cluster's members, `name=peer-url,...`.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token (use a new one: it derives the new cluster's id).
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
    },
}

/// Run `command`; the text to print on success.
///
/// # Errors
/// A message naming what failed: an unreachable member, a corrupt or truncated file, a data
/// directory that holds data, malformed cluster flags.
pub fn run(command: SnapshotCommand) -> Result<String, String> {
    match command {
        SnapshotCommand::Save {
            file,
            endpoints,
            command_timeout_secs,
        } => {
            let endpoint = endpoints.split(',').next().unwrap_or_default().to_owned();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let timeout = Duration::from_secs(command_timeout_secs);
            runtime.block_on(async {
                tokio::time::timeout(timeout, save(&endpoint, &file))
                    .await
                    .map_err(|_| format!("snapshot save: timed out after {timeout:?}"))?
            })?;
            Ok(format!("Snapshot saved at {}", file.display()))
        }
        SnapshotCommand::Status { file, write_out } => status(&file, &write_out),
        SnapshotCommand::Restore {
            file,
            name,
            data_dir,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
        } => {
            let data_dir = data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd")));
            let flags = BootstrapFlags {
                name,
                initial_cluster,
                initial_cluster_token,
                initial_advertise_peer_urls,
                ..BootstrapFlags::default()
            };
            restore(&file, &flags, &data_dir)
        }
    }
}

/// Download the snapshot into `<file>.part`, check it, and rename it to `file`.
async fn save(endpoint: &str, file: &Path) -> Result<(), String> {
    let url = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    };
    let mut client = MaintenanceClient::connect(url.clone())
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?
        .max_decoding_message_size(usize::MAX);
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|e| format!("snapshot from {url}: {}", e.message()))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(piece) = stream
        .message()
        .await
        .map_err(|e| format!("snapshot from {url}: {}", e.message()))?
    {
        bytes.extend_from_slice(&piece.blob);
    }
    snapshot_file::decode(&bytes).map_err(|e| e.to_string())?;
    let part = file.with_extension("part");
    std::fs::write(&part, &bytes).map_err(|e| format!("write {}: {e}", part.display()))?;
    std::fs::rename(&part, file).map_err(|e| format!("rename {}: {e}", part.display()))
}

/// Read and check a snapshot file: its chunks.
fn read(file: &Path) -> Result<(Vec<Vec<u8>>, usize), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
    let chunks = snapshot_file::decode(&bytes).map_err(|e| e.to_string())?;
    Ok((chunks, bytes.len()))
}

fn status(file: &Path, write_out: &str) -> Result<String, String> {
    let (chunks, size) = read(file)?;
    let s = keel::snapshot_summary(chunks).map_err(|e| format!("snapshot: {e}"))?;
    let revision = s.revision.get();
    match write_out {
        "simple" => Ok(format!(
            "{:x}, {revision}, {}, {size} B",
            s.hash, s.total_keys
        )),
        "json" => Ok(serde_json::json!({
            "hash": s.hash,
            "revision": revision,
            "totalKey": s.total_keys,
            "totalSize": size,
        })
        .to_string()),
        "table" => {
            let row = [
                format!("{:x}", s.hash),
                revision.to_string(),
                s.total_keys.to_string(),
                format!("{size} B"),
            ];
            Ok(table(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &row,
            ))
        }
        other => Err(format!(
            "unknown output format {other:?} (simple, table or json)"
        )),
    }
}

/// A one-row table in etcdctl's style.
fn table(head: &[&str; 4], row: &[String; 4]) -> String {
    let widths: Vec<usize> = (0..4)
        .map(|i| head[i].len().max(row[i].len()) + 2)
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(*w)))
        .collect::<String>()
        + "+";
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("|{c:^w$}"))
            .collect::<String>()
            + "|"
    };
    [
        rule.clone(),
        line(head.to_vec()),
        rule.clone(),
        line(row.iter().map(String::as_str).collect()),
        rule,
    ]
    .join("\n")
}

fn restore(file: &Path, flags: &BootstrapFlags, data_dir: &Path) -> Result<String, String> {
    let bootstrap = BootstrapConfig::from_flags(flags).map_err(|e| e.to_string())?;
    let id = bootstrap.local_member_id().map_err(|e| e.to_string())?;
    let cluster = bootstrap.new_cluster().map_err(|e| e.to_string())?;
    // Checked before anything is written: a corrupt or truncated file leaves no directory.
    let (chunks, _) = read(file)?;
    let created = !data_dir.exists();
    let result = keel::NodeBuilder::new(id)
        .data_dir(data_dir.join(DB_DIR))
        .restore_snapshot(chunks);
    match result {
        Ok(summary) => Ok(format!(
            "restored snapshot at revision {} ({} keys) into {} as member {id} of new cluster {}",
            summary.revision.get(),
            summary.total_keys,
            data_dir.display(),
            cluster.id(),
        )),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir_all(data_dir);
            }
            Err(format!("restore: {e}"))
        }
    }
}
