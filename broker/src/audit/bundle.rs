//! The audit bundle: a self-contained, streamable export of (part of) a hub's journal, and its
//! offline verification.
//!
//! A bundle is NDJSON: one JSON object per line, each with a `type`, in this order.
//!
//! 1. `header` — `format` (`snodo-audit-bundle/1`), `hub` (its name), `complete`, `size` (the
//!    size of the latest checkpoint, which the bundle proves against), `exported_at`,
//!    `exported_by`, `source` (the hub's URL or data directory), `filters`, `ca` (the
//!    federation CA, PEM) and `hub_certificates` (PEM).
//! 2. The journal, in one of two layouts:
//!    - **complete** (no filter: every entry from index 0): `entry` records in index order;
//!      after each acceptance, the `envelope` it accepted; after the entry that brings the
//!      journal to a checkpoint's size, that `checkpoint`. The verifier rebuilds the Merkle
//!      tree as it reads and compares its root with every checkpoint, which proves every
//!      entry's inclusion and the consistency of every checkpoint with the ones before.
//!    - **filtered**: first the `checkpoint`s, oldest first, each after the first followed by
//!      the `consistency` proof from the one before it; then the matching `entry` records in
//!      index order, each with its inclusion `proof` under the last checkpoint, and after each
//!      acceptance its `envelope`.
//!
//!    An acceptance whose body the hub pruned after its retention period has a `pruned`
//!    marker instead of its envelope; the journal's own `pruned` entry for it must follow in a
//!    complete bundle, and is carried in the marker (with its inclusion proof) in a filtered
//!    one.
//! 3. `end` — the counts of entries, envelopes, checkpoints and pruned bodies, and the SHA-256 (hex) of every
//!    byte before the end line: a guard against damage and truncation of the file. It is not
//!    evidence (anyone can recompute it); the signatures and proofs are.
//!
//! Records:
//!
//! ```text
//! {"type":"entry","index":7,"bytes":"<base64 of the canonical entry>","proof":["<base64>",…]}
//! {"type":"envelope","index":7,"id":"<uuid>","media_type":"application/xml","bytes":"<base64>"}
//! {"type":"checkpoint","signed":{<SignedCheckpoint as the hub serves it>}}
//! {"type":"consistency","from":100,"to":164,"hashes":["<base64>",…]}
//! {"type":"pruned","index":9,"entry":{"index":4242,"bytes":"<base64>","proof":["<base64>",…]}}
//! {"type":"end","entries":3,"envelopes":1,"checkpoints":2,"pruned":0,"sha256":"<hex>"}
//! ```
//!
//! Memory stays bounded on both sides: one line at a time, the tree's right edge, and a
//! bounded queue of signature checks.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use snodo_envelopes::Identity;
use snodo_envelopes::header::format_time;
use time::OffsetDateTime;
use uuid::Uuid;

use super::AuditError;
use super::verify::{self, Checker, Failure, Fault, Mode, Place, Report, Trust, colon_hex};
use crate::journal::checkpoint::SignedCheckpoint;
use crate::journal::merkle::Hash;

/// The format this snodo writes and reads.
pub const FORMAT: &str = "snodo-audit-bundle/1";

/// The longest line read: a 256 MiB envelope in base64, and some.
pub const MAX_LINE: usize = 360 * 1024 * 1024;

/// The first line of a bundle: what it is, whose, and the trust material it was made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleHeader {
    /// [`FORMAT`].
    pub format: String,
    /// The hub whose journal it is (the `<name>` of its checkpoints' `snodo.hub/<name>`).
    pub hub: String,
    /// True for every entry from 0 (the tree is rebuilt); false for a filtered export (each
    /// entry carries an inclusion proof).
    pub complete: bool,
    /// The size of the latest checkpoint in the bundle: the journal it proves against.
    pub size: u64,
    /// When it was exported, RFC 3339.
    pub exported_at: String,
    /// Who exported it (the client certificate's identity), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_by: Option<String>,
    /// Where it was exported from: the hub's URL, or its data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The filters of the export, as query parameters (empty for a complete export).
    #[serde(default)]
    pub filters: BTreeMap<String, String>,
    /// The federation CA's certificates, PEM. Verification uses it only when the auditor
    /// pins no CA, and then says so.
    pub ca: String,
    /// The hub's certificate(s), PEM: that of the latest checkpoint.
    pub hub_certificates: Vec<String>,
}

impl BundleHeader {
    /// A header for hub `hub`'s journal, proven against the checkpoint of size `size`,
    /// exported now.
    #[must_use]
    pub fn new(hub: &str, complete: bool, size: u64, ca_pem: String) -> Self {
        BundleHeader {
            format: FORMAT.to_owned(),
            hub: hub.to_owned(),
            complete,
            size,
            exported_at: format_time(OffsetDateTime::now_utc()),
            exported_by: None,
            source: None,
            filters: BTreeMap::new(),
            ca: ca_pem,
            hub_certificates: Vec::new(),
        }
    }
}

/// One line of a bundle, as written.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header(BundleHeader),
    Entry {
        index: u64,
        bytes: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<Vec<String>>,
    },
    Envelope {
        index: u64,
        id: Uuid,
        media_type: String,
        bytes: String,
    },
    Checkpoint {
        /// Read as a value first, so that a bad checkpoint is named as one.
        signed: serde_json::Value,
    },
    Consistency {
        from: u64,
        to: u64,
        hashes: Vec<String>,
    },
    Pruned {
        index: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entry: Option<PrunedEntry>,
    },
    End {
        entries: u64,
        envelopes: u64,
        checkpoints: u64,
        #[serde(default)]
        pruned: u64,
        sha256: String,
    },
}

/// The journal's record of a pruning, carried by a filtered bundle.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrunedEntry {
    index: u64,
    bytes: String,
    proof: Vec<String>,
}

/// How many records a bundle holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BundleCounts {
    /// Entries.
    pub entries: u64,
    /// Raw envelopes.
    pub envelopes: u64,
    /// Checkpoints.
    pub checkpoints: u64,
    /// Acceptances whose body was pruned (a marker instead of the envelope).
    pub pruned: u64,
}

/// Writes a bundle line by line: the header first, then the records in the order the
/// format prescribes, then [`BundleWriter::finish`] writes the end record.
pub struct BundleWriter<W: Write> {
    out: W,
    /// SHA-256 of every byte written so far.
    sha: openssl::sha::Sha256,
    counts: BundleCounts,
    /// The line being written (reused).
    buf: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for BundleWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWriter")
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle with its header.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(out: W, header: &BundleHeader) -> std::io::Result<Self> {
        let mut w = BundleWriter {
            out,
            sha: openssl::sha::Sha256::new(),
            counts: BundleCounts::default(),
            buf: Vec::with_capacity(4096),
        };
        w.line(&Line::Header(header.clone()))?;
        Ok(w)
    }

    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, line).map_err(std::io::Error::other)?;
        self.buf.push(b'\n');
        self.sha.update(&self.buf);
        self.out.write_all(&self.buf)
    }

    /// Writes an entry's canonical bytes, with its inclusion proof in a filtered bundle.
    ///
    /// # Errors
    /// When writing fails.
    pub fn entry(
        &mut self,
        index: u64,
        bytes: &[u8],
        proof: Option<&[Hash]>,
    ) -> std::io::Result<()> {
        self.counts.entries += 1;
        self.line(&Line::Entry {
            index,
            bytes: STANDARD.encode(bytes),
            proof: proof.map(|p| p.iter().map(|h| STANDARD.encode(h)).collect()),
        })
    }

    /// Writes the exact signed bytes of the envelope accepted by the entry at `index`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn envelope(
        &mut self,
        index: u64,
        id: Uuid,
        media_type: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        self.counts.envelopes += 1;
        self.line(&Line::Envelope {
            index,
            id,
            media_type: media_type.to_owned(),
            bytes: STANDARD.encode(bytes),
        })
    }

    /// Marks the envelope accepted by the entry at `index` as pruned after the retention
    /// period (the hub no longer has its body). A filtered bundle also carries the journal's
    /// entry recording the pruning (`at`, its bytes, its inclusion proof under the latest
    /// checkpoint); a complete bundle holds that entry in its place.
    ///
    /// # Errors
    /// When writing fails.
    pub fn pruned(
        &mut self,
        index: u64,
        recorded: Option<(u64, &[u8], &[Hash])>,
    ) -> std::io::Result<()> {
        self.counts.pruned += 1;
        self.line(&Line::Pruned {
            index,
            entry: recorded.map(|(at, bytes, proof)| PrunedEntry {
                index: at,
                bytes: STANDARD.encode(bytes),
                proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
            }),
        })
    }

    /// Writes a signed checkpoint.
    ///
    /// # Errors
    /// When writing fails, or the checkpoint cannot be serialized.
    pub fn checkpoint(&mut self, signed: &SignedCheckpoint) -> std::io::Result<()> {
        self.counts.checkpoints += 1;
        let signed = serde_json::to_value(signed).map_err(std::io::Error::other)?;
        self.line(&Line::Checkpoint { signed })
    }

    /// Writes the consistency proof between the checkpoints of sizes `from` and `to`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn consistency(&mut self, from: u64, to: u64, hashes: &[Hash]) -> std::io::Result<()> {
        self.line(&Line::Consistency {
            from,
            to,
            hashes: hashes.iter().map(|h| STANDARD.encode(h)).collect(),
        })
    }

    /// What was written so far.
    #[must_use]
    pub fn counts(&self) -> BundleCounts {
        self.counts
    }

    /// Writes the end record and flushes; gives back the writer and the counts.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(mut self) -> std::io::Result<(W, BundleCounts)> {
        let sha256 = hex::encode(self.sha.clone().finish());
        let c = self.counts;
        self.line(&Line::End {
            entries: c.entries,
            envelopes: c.envelopes,
            checkpoints: c.checkpoints,
            pruned: c.pruned,
            sha256,
        })?;
        self.out.flush()?;
        Ok((self.out, c))
    }
}

/// Verifies the bundle at `path` offline. With `ca`, the CA is pinned (and must be the one
/// the bundle embeds); without, the bundle's own CA is used and the report says so.
///
/// # Errors
/// [`AuditError::Failed`] naming the first bad entry (or checkpoint, proof, line) and why;
/// [`AuditError::Io`] or [`AuditError::Trust`] when the file or the trust material cannot be
/// read.
pub fn verify_file(
    path: &Path,
    ca: Option<&Path>,
    crl: Option<&Path>,
) -> Result<Report, AuditError> {
    let file = std::fs::File::open(path).map_err(|e| AuditError::io(path, e))?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let pinned = ca.map(verify::load_pem_certs).transpose()?;
    let crl = crl
        .map(|p| {
            let pem = std::fs::read(p).map_err(|e| AuditError::io(p, e))?;
            openssl::x509::X509Crl::from_pem(&pem)
                .map_err(|e| AuditError::Trust(format!("{}: {e}", p.display())))
        })
        .transpose()?;
    verify_reader(
        reader,
        format!("bundle {}", path.display()),
        pinned,
        crl.as_ref(),
    )
}

/// Verifies a bundle file that may hold the journals of several hub nodes, one after the
/// other (`snodo audit export --node a --node b`): one report per node, in file order.
///
/// # Errors
/// As [`verify_file`], for the first node whose part fails; [`AuditError::Failed`] also when
/// two parts claim the same hub.
pub fn verify_file_nodes(
    path: &Path,
    ca: Option<&Path>,
    crl: Option<&Path>,
) -> Result<Vec<Report>, AuditError> {
    let file = std::fs::File::open(path).map_err(|e| AuditError::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let pinned = ca.map(verify::load_pem_certs).transpose()?;
    let crl = crl
        .map(|p| {
            let pem = std::fs::read(p).map_err(|e| AuditError::io(p, e))?;
            openssl::x509::X509Crl::from_pem(&pem)
                .map_err(|e| AuditError::Trust(format!("{}: {e}", p.display())))
        })
        .transpose()?;
    let mut reports: Vec<Report> = Vec::new();
    // Lines of the parts before this one: failures name lines of the file, not of the part.
    let mut offset = 0;
    loop {
        let part = reports.len() + 1;
        let source = if part == 1 {
            format!("bundle {}", path.display())
        } else {
            format!("bundle {} (part {part})", path.display())
        };
        let mut section = Section::new(&mut reader);
        let result = verify_reader(&mut section, source, pinned.clone(), crl.as_ref());
        let lines = section.lines;
        let report = result.map_err(|e| match e {
            AuditError::Failed(mut f) if offset > 0 => {
                f.line = f.line.map(|l| l + offset);
                f.place = match f.place {
                    Place::Line { line, after } => Place::Line {
                        line: line + offset,
                        after,
                    },
                    Place::Header => Place::Line {
                        line: offset + 1,
                        after: None,
                    },
                    other => other,
                };
                AuditError::Failed(f)
            }
            other => other,
        })?;
        offset += lines;
        if let Some(hub) = &report.hub
            && reports.iter().any(|r| r.hub.as_ref() == Some(hub))
        {
            return Err(AuditError::Usage(format!(
                "{}: part {part} is a second journal of hub `{hub}`",
                path.display()
            )));
        }
        reports.push(report);
        match reader.fill_buf() {
            Ok([]) => return Ok(reports),
            Ok(_) => {}
            Err(e) => return Err(AuditError::io(path, e)),
        }
    }
}

/// One node's part of a bundle file: its lines up to and including its end record.
struct Section<'r, R> {
    inner: &'r mut R,
    line: Vec<u8>,
    pos: usize,
    done: bool,
    /// Lines read so far.
    lines: u64,
}

impl<'r, R: BufRead> Section<'r, R> {
    fn new(inner: &'r mut R) -> Self {
        Section {
            inner,
            line: Vec::new(),
            pos: 0,
            done: false,
            lines: 0,
        }
    }
}

impl<R: BufRead> std::io::Read for Section<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Section<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos >= self.line.len() && !self.done {
            self.line.clear();
            self.pos = 0;
            // Longer lines are refused by the verifier; read a little more than it allows.
            let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 2;
            std::io::Read::take(&mut *self.inner, limit).read_until(b'\n', &mut self.line)?;
            self.lines += u64::from(!self.line.is_empty());
            self.done = self.line.is_empty() || self.line.starts_with(br#"{"type":"end""#);
        }
        Ok(&self.line[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Verifies a bundle read from `reader`; `source` names it in the report. `pinned` is the CA
/// the auditor trusts, if any; `crl` the revocation list.
///
/// # Errors
/// As [`verify_file`].
pub fn verify_reader<R: BufRead>(
    mut reader: R,
    source: String,
    pinned: Option<Vec<X509>>,
    crl: Option<&openssl::x509::X509Crl>,
) -> Result<Report, AuditError> {
    let mut sha = openssl::sha::Sha256::new();
    let mut buf = Vec::new();
    let at_header = |fault: Fault| Failure {
        place: Place::Header,
        line: Some(1),
        fault: Box::new(fault),
        position: 1,
    };
    match read_line(&mut reader, &mut buf) {
        Ok(true) => {}
        Ok(false) => return Err(at_header(Fault::Malformed("the file is empty".into())).into()),
        Err(fault) => return Err(at_header(fault).into()),
    }
    sha.update(&buf);
    let header = match serde_json::from_slice::<Line>(&buf) {
        Ok(Line::Header(h)) => h,
        Ok(_) => {
            return Err(at_header(Fault::Sequence(
                "the bundle does not start with its header".into(),
            ))
            .into());
        }
        Err(e) => return Err(at_header(Fault::Malformed(e.to_string())).into()),
    };
    if header.format != FORMAT {
        return Err(at_header(Fault::Format {
            found: header.format,
            expected: FORMAT,
        })
        .into());
    }
    let embedded = X509::stack_from_pem(header.ca.as_bytes())
        .map_err(|e| at_header(Fault::CaUnusable(e.to_string())))?;
    if embedded.is_empty() {
        return Err(at_header(Fault::CaUnusable("it holds no PEM certificate".into())).into());
    }
    let trust = match pinned {
        Some(pinned) => {
            let trust = Trust::new(pinned, crl, true)?;
            let der: Vec<Vec<u8>> = embedded.iter().filter_map(|c| c.to_der().ok()).collect();
            if !trust.same_ca(&der) {
                let prints = |cs: &[X509]| {
                    cs.iter()
                        .filter_map(|c| verify::fingerprint(c).ok())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(at_header(Fault::CaMismatch {
                    embedded: prints(&embedded),
                    pinned: trust
                        .ca()
                        .iter()
                        .map(|c| c.sha256.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
                .into());
            }
            trust
        }
        None => Trust::new(embedded, crl, false)?,
    };
    for pem in &header.hub_certificates {
        check_hub_certificate(&trust, &header.hub, pem)
            .map_err(|e| at_header(Fault::HubCertificate(e)))?;
    }
    let mode = if header.complete {
        Mode::Complete
    } else {
        Mode::Filtered
    };
    verify::run(&trust, source, "bundle", |c| {
        c.set_mode(mode);
        c.set_hub(header.hub.clone());
        let mut exported = format!("exported     {}", header.exported_at);
        if let Some(by) = &header.exported_by {
            exported.push_str(&format!(" by {by}"));
        }
        if let Some(from) = &header.source {
            exported.push_str(&format!(" from {from}"));
        }
        if !header.filters.is_empty() {
            let filters: Vec<String> = header
                .filters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            exported.push_str(&format!(" with filters {}", filters.join("&")));
        }
        c.note(exported);
        records(c, &mut reader, &mut sha, &mut buf, header.size)
    })
    .map_err(AuditError::from)
}

/// A hub certificate of the header must chain to the CA (as of its own start of validity:
/// it may have expired since) and name the hub.
fn check_hub_certificate(trust: &Trust, hub: &str, pem: &str) -> Result<(), String> {
    let cert = X509::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let der = cert.to_der().map_err(|e| e.to_string())?;
    let epoch = openssl::asn1::Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch.diff(cert.not_before()).map_err(|e| e.to_string())?;
    let start = OffsetDateTime::from_unix_timestamp(i64::from(d.days) * 86_400 + i64::from(d.secs))
        .map_err(|e| e.to_string())?;
    let verified = trust
        .store()
        .verify_cert(&der, &[], start)
        .map_err(|e| e.to_string())?;
    match &verified.identity {
        Identity::Hub(h) if h == hub => Ok(()),
        other => Err(format!("it names {other}, not hub `{hub}`")),
    }
}

/// Feeds every record after the header to the checker.
fn records<R: BufRead>(
    c: &mut Checker<'_>,
    reader: &mut R,
    sha: &mut openssl::sha::Sha256,
    buf: &mut Vec<u8>,
    size: u64,
) -> Result<(), Failure> {
    let mut line_no = 1u64;
    loop {
        line_no += 1;
        c.at(line_no, Some(line_no));
        if c.should_stop() {
            return Ok(());
        }
        let line_place = |c: &Checker<'_>| Place::Line {
            line: line_no,
            after: c.last_index(),
        };
        match read_line(reader, buf) {
            Ok(true) => {}
            Ok(false) => return Err(c.fail(Place::End, Fault::Truncated)),
            Err(fault) => return Err(c.fail(line_place(c), fault)),
        }
        let line: Line = match serde_json::from_slice(buf) {
            Ok(l) => l,
            Err(e) => return Err(c.fail(line_place(c), Fault::Malformed(e.to_string()))),
        };
        if !matches!(line, Line::End { .. }) {
            sha.update(buf);
        }
        match line {
            Line::Header(_) => {
                return Err(c.fail(line_place(c), Fault::Sequence("a second header".into())));
            }
            Line::Entry {
                index,
                bytes,
                proof,
            } => {
                let place = Place::Entry(index);
                let bytes = decode(&bytes).map_err(|reason| {
                    c.fail(
                        place.clone(),
                        Fault::Encoding {
                            field: "its bytes".into(),
                            reason,
                        },
                    )
                })?;
                let proof = proof
                    .map(|p| decode_hashes(&p, "its inclusion proof"))
                    .transpose()
                    .map_err(|f| c.fail(place, f))?;
                c.entry(index, &bytes, proof.as_deref())?;
            }
            Line::Envelope {
                index,
                id,
                media_type,
                bytes,
            } => {
                let bytes = decode(&bytes).map_err(|reason| {
                    c.fail(
                        Place::Envelope(index),
                        Fault::Encoding {
                            field: "its bytes".into(),
                            reason,
                        },
                    )
                })?;
                c.envelope(index, Some(id), bytes, Some(media_type), None)?;
            }
            Line::Checkpoint { signed } => {
                let size = signed
                    .get("checkpoint")
                    .and_then(|t| t.as_str())
                    .and_then(|t| t.lines().nth(1))
                    .and_then(|s| s.parse().ok());
                let signed: SignedCheckpoint = serde_json::from_value(signed).map_err(|e| {
                    c.fail(Place::Checkpoint(size), Fault::Malformed(e.to_string()))
                })?;
                c.checkpoint(signed)?;
            }
            Line::Consistency { from, to, hashes } => {
                let hashes = decode_hashes(&hashes, "its hashes")
                    .map_err(|f| c.fail(Place::Consistency { from, to }, f))?;
                c.consistency(from, to, &hashes)?;
            }
            Line::Pruned { index, entry } => match entry {
                None => c.pruned(index, None)?,
                Some(e) => {
                    let bytes = decode(&e.bytes).map_err(|reason| {
                        c.fail(
                            Place::Envelope(index),
                            Fault::Encoding {
                                field: "the pruning entry's bytes".into(),
                                reason,
                            },
                        )
                    })?;
                    let proof = decode_hashes(&e.proof, "the pruning entry's proof")
                        .map_err(|f| c.fail(Place::Envelope(index), f))?;
                    c.pruned(index, Some((e.index, &bytes, &proof)))?;
                }
            },
            Line::End {
                entries,
                envelopes,
                checkpoints,
                pruned,
                sha256,
            } => {
                return end(
                    c,
                    reader,
                    buf,
                    sha,
                    size,
                    [entries, envelopes, checkpoints, pruned],
                    &sha256,
                );
            }
        }
    }
}

/// Checks the end record and that nothing follows it.
fn end<R: BufRead>(
    c: &mut Checker<'_>,
    reader: &mut R,
    buf: &mut Vec<u8>,
    sha: &openssl::sha::Sha256,
    size: u64,
    said: [u64; 4],
    sha256: &str,
) -> Result<(), Failure> {
    c.finish()?;
    let (entries, envelopes, checkpoints, pruned) = c.counts();
    for ((what, said), found) in ["entries", "envelopes", "checkpoints", "pruned"]
        .into_iter()
        .zip(said)
        .zip([entries, envelopes, checkpoints, pruned])
    {
        if said != found {
            return Err(c.fail(Place::End, Fault::Count { what, said, found }));
        }
    }
    let found = hex::encode(sha.clone().finish());
    if found != sha256 {
        return Err(c.fail(
            Place::End,
            Fault::Checksum {
                said: sha256.to_owned(),
                found,
            },
        ));
    }
    match read_line(reader, buf) {
        Ok(false) => {}
        Ok(true) | Err(_) => return Err(c.fail(Place::End, Fault::TrailingData)),
    }
    if c.latest_size() != Some(size) {
        return Err(c.fail(
            Place::Header,
            Fault::Sequence(format!(
                "the header says the bundle proves the journal of size {size}, but its latest checkpoint has size {}",
                c.latest_size().map_or_else(|| "none".to_owned(), |s| s.to_string())
            )),
        ));
    }
    c.note(format!(
        "file         SHA-256 {} as its end record says (a guard against damage, not evidence)",
        colon_hex(&hex::decode(&found).unwrap_or_default())
    ));
    Ok(())
}

fn decode(b64: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(b64).map_err(|e| format!("not base64: {e}"))
}

fn decode_hashes(hashes: &[String], field: &str) -> Result<Vec<Hash>, Fault> {
    hashes
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let bytes = decode(h).map_err(|reason| Fault::Encoding {
                field: format!("{field}[{i}]"),
                reason,
            })?;
            Hash::try_from(bytes.as_slice()).map_err(|_| Fault::Encoding {
                field: format!("{field}[{i}]"),
                reason: format!("{} bytes, not the 32 of a SHA-256 hash", bytes.len()),
            })
        })
        .collect()
}

/// Reads one line (with its `\n`, hashed as written) into `buf`, refusing lines over [`MAX_LINE`]. False at
/// the end of the input.
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> Result<bool, Fault> {
    buf.clear();
    let mut any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fault::Unreadable(e.to_string())),
        };
        if available.is_empty() {
            return Ok(any);
        }
        any = true;
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if buf.len() + chunk.len() > MAX_LINE + 1 {
            return Err(Fault::Malformed(format!(
                "a line longer than {MAX_LINE} bytes"
            )));
        }
        buf.extend_from_slice(chunk);
        let n = chunk.len();
        reader.consume(n);
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_one_tagged_json_object_per_line() {
        let mut w = BundleWriter::new(Vec::new(), &BundleHeader::new("hub", true, 1, "PEM".into()))
            .unwrap();
        w.entry(0, b"{}", None).unwrap();
        w.envelope(0, Uuid::nil(), "application/xml", b"<x/>")
            .unwrap();
        w.consistency(1, 2, &[[0; 32]]).unwrap();
        let (bytes, counts) = w.finish().unwrap();
        assert_eq!(
            counts,
            BundleCounts {
                entries: 1,
                envelopes: 1,
                checkpoints: 0,
                pruned: 0
            }
        );
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with(r#"{"type":"header","format":"snodo-audit-bundle/1","hub":"hub","complete":true,"size":1,"#));
        assert_eq!(lines[1], r#"{"type":"entry","index":0,"bytes":"e30="}"#);
        assert_eq!(
            lines[2],
            r#"{"type":"envelope","index":0,"id":"00000000-0000-0000-0000-000000000000","media_type":"application/xml","bytes":"PHgvPg=="}"#
        );
        assert_eq!(
            lines[3],
            r#"{"type":"consistency","from":1,"to":2,"hashes":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}"#
        );
        let mut sha = openssl::sha::Sha256::new();
        for l in &lines[..4] {
            sha.update(l.as_bytes());
            sha.update(b"\n");
        }
        assert_eq!(
            lines[4],
            format!(
                r#"{{"type":"end","entries":1,"envelopes":1,"checkpoints":0,"pruned":0,"sha256":"{}"}}"#,
                hex::encode(sha.finish())
            )
        );
        for l in &lines {
            serde_json::from_str::<Line>(l).unwrap();
        }
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        for bad in [
            r#"{"type":"entry","index":0,"bytes":"e30=","extra":1}"#,
            r#"{"type":"entry","index":0}"#,
            r#"{"type":"note","text":"hi"}"#,
            r#"{"index":0,"bytes":"e30="}"#,
            r#"{"type":"end","entries":0,"envelopes":0,"checkpoints":0,"sha256":"","more":0}"#,
        ] {
            assert!(serde_json::from_str::<Line>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_are_read_whole_and_bounded() {
        let mut r = std::io::Cursor::new(b"one\ntwo".to_vec());
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf).unwrap());
        assert_eq!(buf, b"one\n");
        assert!(read_line(&mut r, &mut buf).unwrap());
        assert_eq!(buf, b"two");
        assert!(!read_line(&mut r, &mut buf).unwrap());
    }
}
